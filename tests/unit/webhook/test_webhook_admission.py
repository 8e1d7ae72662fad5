"""The two endpoints over an in-memory API: gate decisions, legacy translation, VGpuConfig and GpuQuota."""

from __future__ import annotations

import datetime

import pytest
from webhook_fixtures import (
    DRIVER,
    FakeApi,
    claim,
    container,
    fleet,
    pod,
    quota,
    review,
    slice_spec,
    template,
)

from dra_hami.kube.client import ApiError
from dra_hami.webhook import labels as L
from dra_hami.webhook.admission import Admission, AdmissionOptions
from dra_hami.webhook.review import apply_patch

GATE = {"name": f"{DRIVER}/allocation"}
NOW = datetime.datetime(2026, 12, 3, 9, 0, 0, tzinfo=datetime.UTC)
HOMELAB = {"nvidia.com/gpu": 1, "nvidia.com/gpumem-percentage": 20, "nvidia.com/gpucores": 25}


def admission(api: FakeApi, policy: bool = False, legacy: bool = False) -> Admission:
    return Admission(api, AdmissionOptions(DRIVER, policy, legacy), clock=lambda: NOW, sleep=lambda _: None)


def mutated(response, original: dict) -> dict:
    assert response.allowed, response.message
    return apply_patch(original, response.patch or [])


def template_pod(name: str = "tpl") -> dict:
    p = pod(container("w", None, resources={"claims": [{"name": "gpu"}]}))
    p["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": name}]
    return p


# ------------------------------------------------------------------------------------------------ gate


def test_policy_mode_gates_a_pod_whose_template_uses_our_class() -> None:
    api = FakeApi()
    api.templates[("ns", "tpl")] = template("tpl", slice_spec("4Gi", "30"))
    p = template_pod()
    out = mutated(admission(api, policy=True).mutate_pod(review(p)), p)
    assert out["spec"]["schedulingGates"] == [GATE]


def test_policy_mode_gates_a_named_claim_and_firstavailable_of_our_class() -> None:
    api = FakeApi()
    spec = {
        "devices": {
            "requests": [
                {
                    "name": "g",
                    "firstAvailable": [
                        {"name": "a", "deviceClassName": "other.example.com"},
                        {"name": "b", "deviceClassName": DRIVER},
                    ],
                }
            ]
        }
    }
    api.add_claim(claim("shared", spec))
    p = pod(container("w"), resourceClaims=[{"name": "g", "resourceClaimName": "shared"}])
    assert mutated(admission(api, policy=True).mutate_pod(review(p)), p)["spec"]["schedulingGates"] == [GATE]


@pytest.mark.parametrize(
    ("policy", "pod_labels", "ns_labels", "cls"),
    [
        (False, None, {}, DRIVER),  # policy mode off
        (True, {L.POLICY_MODE_LABEL: "disabled"}, {}, DRIVER),  # pod opts out
        (True, None, {L.POLICY_MODE_LABEL: "disabled"}, DRIVER),  # namespace opts out
        (True, None, {}, "nic.example.com"),  # another driver's class
    ],
)
def test_no_gate(policy: bool, pod_labels, ns_labels: dict, cls: str) -> None:
    api = FakeApi()
    api.namespaces["ns"] = ns_labels
    api.templates[("ns", "tpl")] = template("tpl", slice_spec("1Gi", cls=cls))
    p = template_pod()
    if pod_labels:
        p["metadata"]["labels"] = pod_labels
    response = admission(api, policy=policy).mutate_pod(review(p))
    assert response.allowed and response.patch is None


def test_gate_is_not_added_twice() -> None:
    api = FakeApi()
    api.templates[("ns", "tpl")] = template("tpl", slice_spec("1Gi"))
    p = template_pod()
    p["spec"]["schedulingGates"] = [GATE]
    assert admission(api, policy=True).mutate_pod(review(p)).patch is None


def test_template_created_just_after_the_pod_is_found_by_a_retry() -> None:
    api = FakeApi()
    api.templates[("ns", "tpl")] = template("tpl", slice_spec("1Gi"))
    api.appear_after["tpl"] = 2  # the first two GETs miss it
    p = template_pod()
    out = mutated(admission(api, policy=True).mutate_pod(review(p)), p)
    assert out["spec"]["schedulingGates"] == [GATE]
    assert api.template_gets["tpl"] == 3


def test_template_that_never_appears_means_no_gate_and_a_warning() -> None:
    api = FakeApi()
    p = template_pod("missing")
    response = admission(api, policy=True).mutate_pod(review(p))
    assert response.allowed and response.patch is None
    (warning,) = response.warnings
    assert warning.startswith("spec.resourceClaims[gpu]: ResourceClaimTemplate missing not found; the pod is not held")
    assert api.template_gets["missing"] == 3


def test_api_error_on_lookup_fails_open_with_a_warning() -> None:
    api = FakeApi()
    api.fail["get_template"] = ApiError(0, "connection refused", "Unreachable")
    api.fail["namespace_labels"] = ApiError(0, "connection refused", "Unreachable")
    response = admission(api, policy=True).mutate_pod(review(template_pod()))
    assert response.allowed and response.patch is None
    assert any("could not be read (connection refused)" in w for w in response.warnings)


def test_other_operations_and_kinds_pass_untouched() -> None:
    api = FakeApi()
    assert admission(api, policy=True).mutate_pod(review(template_pod(), operation="UPDATE")).patch is None


# ------------------------------------------------------------------------------------------------ legacy


def test_legacy_pod_in_opted_in_namespace_gets_template_claim_and_gate() -> None:
    api = FakeApi(fleet("t4x2"))
    api.namespaces["ns"] = {L.LEGACY_LABEL: L.LEGACY_ENABLED}
    p = pod(container("worker", HOMELAB))
    out = mutated(admission(api, policy=True).mutate_pod(review(p)), p)
    ((key, created),) = api.templates.items()
    assert key[0] == "ns" and created["metadata"]["labels"] == {L.TEMPLATE_LABEL: "true"}
    exactly = created["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    assert exactly["capacity"]["requests"] == {"cores": "25", "memory": "3Gi"}
    assert out["spec"]["resourceClaims"] == [{"name": "hami-worker", "resourceClaimTemplateName": key[1]}]
    assert out["spec"]["containers"][0]["resources"] == {"claims": [{"name": "hami-worker"}]}
    assert out["spec"]["schedulingGates"] == [GATE]  # translated claims use our class: policy mode holds it


def test_legacy_translation_is_opt_in() -> None:
    api = FakeApi(fleet("t4x2"))
    p = pod(container("worker", HOMELAB))
    assert admission(api).mutate_pod(review(p)).patch is None  # no label, no cluster flag
    assert api.templates == {}
    out = mutated(admission(api, legacy=True).mutate_pod(review(p)), p)  # cluster-wide flag
    assert "resourceClaims" in out["spec"]


def test_second_replica_reuses_the_template_and_refreshes_it_only_when_stale() -> None:
    api = FakeApi(fleet("t4x2"))
    hook = admission(api, legacy=True)
    p = pod(container("worker", HOMELAB))
    hook.mutate_pod(review(p))
    hook.mutate_pod(review(p))
    assert [w[0] for w in api.writes] == ["create_template"]  # fresh last-used: nothing to write
    (name,) = [k[1] for k in api.templates]
    api.templates[("ns", name)]["metadata"]["annotations"][L.LAST_USED_ANNOTATION] = "2026-12-03T08:50:00Z"
    hook.mutate_pod(review(p))
    assert [w[0] for w in api.writes] == ["create_template", "touch_template"]
    assert api.templates[("ns", name)]["metadata"]["annotations"][L.LAST_USED_ANNOTATION] == "2026-12-03T09:00:00Z"


def test_dry_run_creates_nothing_but_answers_the_same_patch() -> None:
    api = FakeApi(fleet("t4x2"))
    p = pod(container("worker", HOMELAB))
    response = admission(api, legacy=True).mutate_pod(review(p, dry_run=True))
    assert response.patch and api.templates == {}


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"nvidia.com/gpu": 1, "nvidia.com/gpumem-percentage": 120}, "gpumem-percentage is 120"),
        ({"nvidia.com/gpu": 1, "nvidia.com/gpumem": 99999}, "the largest GPU has 15360 MiB"),
        ({"nvidia.com/gpu": "x"}, "'x' is not a Kubernetes quantity"),
    ],
)
def test_bad_legacy_input_is_refused_with_400(limits: dict, message: str) -> None:
    api = FakeApi(fleet("t4x2"))
    response = admission(api, legacy=True).mutate_pod(review(pod(container("w", limits))))
    assert not response.allowed and response.code == 400
    assert response.message.startswith("dra-hami: HAMi resources of this pod cannot be translated: ")
    assert message in response.message
    assert api.templates == {}


def test_mixed_pod_is_refused() -> None:
    api = FakeApi(fleet("t4x2"))
    p = template_pod()
    p["spec"]["containers"].append(container("legacy", {"nvidia.com/gpu": 1}))
    response = admission(api, legacy=True).mutate_pod(review(p))
    assert not response.allowed and "mixes HAMi resources (nvidia.com/gpu) with DRA" in response.message


def test_unknown_annotation_is_a_warning_on_an_admitted_pod() -> None:
    api = FakeApi(fleet("t4x2"))
    p = pod(container("w", {"nvidia.com/gpu": 1}), annotations={"nvidia.com/priority": "high"})
    response = admission(api, legacy=True).mutate_pod(review(p))
    assert response.allowed and response.patch
    assert any("nvidia.com/priority are not HAMi GPU-selection annotations" in w for w in response.warnings)


def test_slices_unreadable_or_template_write_failing_is_a_retryable_refusal() -> None:
    api = FakeApi(fleet("t4x2"))
    api.fail["list_slices"] = ApiError(503, "etcd busy")
    response = admission(api, legacy=True).mutate_pod(review(pod(container("w", HOMELAB))))
    assert (response.allowed, response.code) == (False, 503) and "retry" in response.message
    api = FakeApi(fleet("t4x2"))
    api.fail["create_template"] = ApiError(403, "forbidden")
    response = admission(api, legacy=True).mutate_pod(review(pod(container("w", HOMELAB))))
    assert (response.allowed, response.code) == (
        False,
        503,
    ) and "could not create ResourceClaimTemplate" in response.message


# ------------------------------------------------------------------------------------------------ claims


def config_spec(parameters) -> dict:
    spec = slice_spec("1Gi")
    spec["devices"]["config"] = [{"requests": ["gpu"], "opaque": {"driver": DRIVER, "parameters": parameters}}]
    return spec


GOOD = {"apiVersion": "gpu.hami.io/v1alpha1", "kind": "VGpuConfig", "coreLimitPolicy": "force"}


def test_valid_vgpu_config_is_admitted_in_claims_and_templates() -> None:
    api = FakeApi()
    hook = admission(api)
    assert hook.validate_claim(review(claim("c", config_spec(GOOD)), "ResourceClaim")).allowed
    assert hook.validate_claim(review(template("t", config_spec(GOOD)), "ResourceClaimTemplate")).allowed


@pytest.mark.parametrize(
    ("parameters", "field", "detail"),
    [
        ({**GOOD, "coreLimitPolicy": "sometimes"}, "coreLimitPolicy", "got 'sometimes', expected"),
        ({**GOOD, "oomPolicy2": "kill"}, "oomPolicy2", "unknown field; VGpuConfig knows"),
        ({"kind": "VGpuConfig"}, "apiVersion", "required"),
        ({**GOOD, "apiVersion": "gpu.hami.io/v2"}, "apiVersion", "got 'gpu.hami.io/v2'"),
    ],
)
def test_invalid_vgpu_config_is_refused_with_field_and_fix(parameters: dict, field: str, detail: str) -> None:
    hook = admission(FakeApi())
    response = hook.validate_claim(review(template("t", config_spec(parameters)), "ResourceClaimTemplate"))
    assert not response.allowed and response.code == 400
    assert (
        f"ResourceClaimTemplate ns/t: invalid VGpuConfig: spec.spec.devices.config[0].opaque.parameters.{field}: "
        in response.message
    )
    assert detail in response.message
    assert response.message.endswith("fix the VGpuConfig (see examples/vgpu-config.yaml) or remove the config entry")
    response = hook.validate_claim(review(claim("c", config_spec(parameters)), "ResourceClaim"))
    assert f"spec.devices.config[0].opaque.parameters.{field}" in response.message


def test_config_of_another_driver_is_not_ours_to_judge() -> None:
    spec = slice_spec("1Gi")
    spec["devices"]["config"] = [{"opaque": {"driver": "other.example.com", "parameters": {"anything": 1}}}]
    assert admission(FakeApi()).validate_claim(review(claim("c", spec), "ResourceClaim")).allowed


def test_quota_admits_until_the_limit_and_charges_status() -> None:
    api = FakeApi(fleet("t4x2"))
    api.add_quota(quota(memory="8Gi", cores=100, gpus=2))
    hook = admission(api)
    assert hook.validate_claim(review(claim("a", slice_spec("4Gi", "30")), "ResourceClaim")).allowed
    status = api.quotas[("ns", "budget")]["status"]
    assert status == {"used": {"memory": "4Gi", "cores": 30, "gpus": 1}, "chargedAt": "2026-12-03T09:00:00Z"}
    api.add_claim(claim("a", slice_spec("4Gi", "30")))
    assert hook.validate_claim(review(claim("b", slice_spec("4Gi", "30")), "ResourceClaim")).allowed
    api.add_claim(claim("b", slice_spec("4Gi", "30")))
    response = hook.validate_claim(review(claim("c", slice_spec("1Gi", "10")), "ResourceClaim"))
    assert not response.allowed and response.code == 403
    assert response.message == (
        "ResourceClaim ns/c would exceed GpuQuota ns/budget: memory: used 8Gi + requested 1Gi = 9Gi exceeds the "
        "limit 8Gi; gpus: used 2 + requested 1 = 3 exceeds the limit 2. Ask for less, delete claims (or pods "
        "whose claims come from templates) in namespace ns, or "
        "raise spec.hard in GpuQuota ns/budget"
    )


def test_quota_counts_the_recorded_charge_of_a_claim_not_stored_yet() -> None:
    api = FakeApi(fleet("t4x2"))
    api.add_quota(quota(gpus=1, used={"memory": "1Gi", "cores": 0, "gpus": 1}))  # charged, claim in flight
    response = admission(api).validate_claim(review(claim("b", slice_spec("1Gi")), "ResourceClaim"))
    assert "gpus: used 1 + requested 1 = 2 exceeds the limit 1" in response.message


def test_quota_conflict_is_decided_again() -> None:
    api = FakeApi(fleet("t4x2"))
    api.add_quota(quota(gpus=4))
    api.conflicts = 2
    assert admission(api).validate_claim(review(claim("a", slice_spec("1Gi")), "ResourceClaim")).allowed
    assert api.quotas[("ns", "budget")]["status"]["used"]["gpus"] == 1


def test_quota_dry_run_decides_but_charges_nothing() -> None:
    api = FakeApi(fleet("t4x2"))
    api.add_quota(quota(gpus=4))
    assert admission(api).validate_claim(review(claim("a", slice_spec("1Gi")), "ResourceClaim", dry_run=True)).allowed
    assert "status" not in api.quotas[("ns", "budget")]


def test_template_is_refused_only_when_one_claim_alone_exceeds_the_limit() -> None:
    api = FakeApi(fleet("t4x2"))
    api.add_quota(quota(memory="8Gi"))
    api.add_claim(claim("a", slice_spec("6Gi")))
    hook = admission(api)
    assert hook.validate_claim(review(template("t", slice_spec("4Gi")), "ResourceClaimTemplate")).allowed
    response = hook.validate_claim(review(template("t", slice_spec("12Gi")), "ResourceClaimTemplate"))
    assert (
        "every claim of ResourceClaimTemplate ns/t would exceed GpuQuota ns/budget: memory: used 0 + "
        "requested 12Gi" in response.message
    )


def test_claims_without_our_devices_and_namespaces_without_quota_pass() -> None:
    api = FakeApi(fleet("t4x2"))
    assert admission(api).validate_claim(review(claim("a", slice_spec("99Gi")), "ResourceClaim")).allowed
    api.add_quota(quota(gpus=0))
    other = slice_spec(cls="nic.example.com")
    assert admission(api).validate_claim(review(claim("n", other), "ResourceClaim")).allowed


def test_quota_api_failure_is_a_retryable_refusal() -> None:
    api = FakeApi(fleet("t4x2"))
    api.fail["list_quotas"] = ApiError(0, "connection refused", "Unreachable")
    response = admission(api).validate_claim(review(claim("a", slice_spec("1Gi")), "ResourceClaim"))
    assert (response.allowed, response.code) == (False, 503)
    assert "could not check GpuQuota in namespace ns: connection refused; retry" in response.message


def test_broken_quota_object_refuses_claims_naming_the_quota() -> None:
    api = FakeApi(fleet("t4x2"))
    api.add_quota(quota(memory=-5))  # an integer passes the CRD's quantity pattern (it only checks strings)
    response = admission(api).validate_claim(review(claim("a", slice_spec("1Gi")), "ResourceClaim"))
    assert not response.allowed
    assert response.message == (
        "dra-hami: GpuQuota ns/budget: spec.hard.memory: -5 must not be negative; fix the GpuQuota before creating "
        "claims in ns"
    )


# ----------------------------------------------------------------------------- features without policy mode


def test_without_policy_mode_translation_runs_and_nothing_is_gated() -> None:
    """The chart's default install (issue 14): the webhook translates and validates, the stock scheduler
    allocates, so no pod ever gets the gate."""
    api = FakeApi(fleet("t4x2"))
    api.namespaces["ns"] = {L.LEGACY_LABEL: L.LEGACY_ENABLED}
    api.templates[("ns", "tpl")] = template("tpl", slice_spec("4Gi", "30"))
    legacy = pod(container("worker", HOMELAB))
    out = mutated(admission(api).mutate_pod(review(legacy)), legacy)
    assert out["spec"]["resourceClaims"][0]["name"] == "hami-worker" and "schedulingGates" not in out["spec"]
    native = template_pod()
    assert admission(api).mutate_pod(review(native)).patch is None


def test_each_feature_switch_turns_off_only_its_feature() -> None:
    api = FakeApi(fleet("t4x2"))
    api.namespaces["ns"] = {L.LEGACY_LABEL: L.LEGACY_ENABLED}
    api.add_quota(quota(memory="1Gi"))

    def hook(**off: bool) -> Admission:
        return Admission(api, AdmissionOptions(DRIVER, **off), clock=lambda: NOW, sleep=lambda _: None)

    legacy = pod(container("worker", HOMELAB))
    assert hook(translation=False).mutate_pod(review(legacy)).patch is None  # the namespace label no longer counts
    assert hook(translation=False, legacy_translation=True).mutate_pod(review(legacy)).patch is None
    assert api.templates == {}

    bad_config = claim("c", config_spec({**GOOD, "coreLimitPolicy": "sometimes"}))
    assert not hook().validate_claim(review(bad_config, "ResourceClaim")).allowed
    assert hook(config_validation=False, quota=False).validate_claim(review(bad_config, "ResourceClaim")).allowed

    big = claim("big", slice_spec("2Gi", "10"))
    refused = hook().validate_claim(review(big, "ResourceClaim"))
    assert not refused.allowed and "would exceed GpuQuota ns/budget" in refused.message
    assert hook(quota=False).validate_claim(review(big, "ResourceClaim")).allowed
    assert "status" not in api.quotas[("ns", "budget")]  # nothing charged with the quota off

    env_pod = template_pod()
    env_pod["spec"]["containers"][0]["env"] = [{"name": "CUDA_DISABLE_CONTROL", "value": "1"}]
    assert hook().validate_pod(review(env_pod)).code == 403
    assert hook(control_env=False).validate_pod(review(env_pod)).allowed


def test_quota_counts_what_the_stock_scheduler_allocated() -> None:
    """Without policy mode the stock scheduler allocates; admission cannot veto that, but the next claim is
    judged against what the allocation really took (its consumedCapacity), not what the claim asked for."""
    api = FakeApi(fleet("t4x2"))
    api.add_quota(quota(memory="8Gi"))
    allocation = {"devices": {"results": [{
        "request": "gpu", "driver": DRIVER, "pool": "node-0-t4x2", "device": "gpu-0", "shareID": "s1",
        "consumedCapacity": {"memory": "6Gi", "cores": "30", "shares": "1"},
    }]}}  # fmt: skip
    api.add_claim(claim("a", slice_spec("4Gi", "30"), allocation=allocation))  # rounded up by the class's policy
    response = admission(api).validate_claim(review(claim("b", slice_spec("3Gi", "10")), "ResourceClaim"))
    assert not response.allowed
    assert "memory: used 6Gi + requested 3Gi = 9Gi exceeds the limit 8Gi" in response.message
    assert admission(api).validate_claim(review(claim("c", slice_spec("2Gi", "10")), "ResourceClaim")).allowed
