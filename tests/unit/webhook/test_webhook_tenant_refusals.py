"""Issue 18: what a tenant can no longer get past admission.

- pods that set libvgpu's control variables (containers, initContainers, ephemeral containers);
- a claim through another DeviceClass that selects our GPUs skips no GpuQuota (item 9);
- a claim's VGpuConfig that overrides a field its DeviceClass pins (item 2).
"""

from __future__ import annotations

import datetime

import pytest
from webhook_fixtures import DRIVER, FakeApi, claim, container, fleet, pod, quota, review, slice_spec, template

from dra_hami.quota.classes import our_classes
from dra_hami.webhook.admission import Admission, AdmissionOptions
from dra_hami.webhook.pod_env import control_env_problems

NOW = datetime.datetime(2026, 12, 3, 9, 0, 0, tzinfo=datetime.UTC)


def admission(api: FakeApi) -> Admission:
    return Admission(api, AdmissionOptions(DRIVER, policy_mode=True), clock=lambda: NOW, sleep=lambda _: None)


def env(**values: str) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in values.items()]


# ------------------------------------------------------------------------------------------ pod env


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CUDA_DISABLE_CONTROL", "1"),
        ("CUDA_DEVICE_MEMORY_LIMIT", "100g"),
        ("CUDA_DEVICE_MEMORY_LIMIT_0", "100g"),
        ("CUDA_DEVICE_SM_LIMIT_1", "100"),
        ("VGPU_DEVICE_LIMIT_zz", "GPU-1,18446744073709551615,0"),
        ("VGPU_CLAIMS_DIR", "/tmp/mine"),
        ("GPU_CORE_UTILIZATION_POLICY", "disable"),
        ("LD_PRELOAD", "/tmp/my/libvgpu.so"),
        ("LD_PRELOAD", "/usr/local/vgpu/other.so"),
    ],
)
def test_a_pod_that_sets_a_control_variable_is_refused_naming_container_and_variable(name: str, value: str) -> None:
    p = pod(container("trainer", None, env=[{"name": "OK", "value": "1"}, {"name": name, "value": value}]))
    p["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimName": "c"}]
    response = admission(FakeApi()).validate_pod(review(p))
    assert not response.allowed and response.code == 403
    assert f"container 'trainer' sets {name};" in response.message
    assert "a container gets these variables only from its GPU claims" in response.message
    # the refusal is the validating registration's (it sees what every mutator added); mutation passes it on
    assert admission(FakeApi()).mutate_pod(review(p)).allowed


def test_init_and_ephemeral_containers_and_valuefrom_and_envfrom_prefix_count() -> None:
    p = pod(
        container(
            "main", None, env=[{"name": "VGPU_OOM_POLICY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
        ),
        initContainers=[container("setup", None, env=env(CUDA_DISABLE_CONTROL="1"))],
        ephemeralContainers=[container("debug", None, envFrom=[{"prefix": "VGPU_", "configMapRef": {"name": "m"}}])],
    )
    assert control_env_problems(p) == [
        "initContainer 'setup' sets CUDA_DISABLE_CONTROL",
        "container 'main' sets VGPU_OOM_POLICY",
        "ephemeralContainer 'debug' sets envFrom prefix VGPU_",
    ]


def test_ordinary_variables_and_other_preloads_pass() -> None:
    p = pod(container("main", None, env=env(CUDA_VISIBLE_DEVICES="0", LD_PRELOAD="/usr/lib/libjemalloc.so",
                                             NCCL_DEBUG="INFO", VGPUX="1")))  # fmt: skip
    assert control_env_problems(p) == []
    assert admission(FakeApi()).validate_pod(review(p)).allowed


# ----------------------------------------------------------------------------------- quota by class


def device_class(name: str, *selectors: str, config: list | None = None) -> dict:
    spec: dict = {"selectors": [{"cel": {"expression": s}} for s in selectors]}
    if config is not None:
        spec["config"] = config
    return {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": name}, "spec": spec}


def test_classes_that_can_select_our_gpus_are_ours() -> None:
    classes = [
        device_class("by-driver", f"device.driver == '{DRIVER}'"),
        device_class("by-attribute", f"device.attributes['{DRIVER}'].productName == 'Tesla T4'"),
        device_class("by-evaluation", "device.driver.startsWith('hami-core')"),
        device_class("everything"),
        device_class("nics", "device.driver == 'nic.example.com'"),
        device_class("broken", "device.driver =="),
    ]
    got = our_classes(DRIVER, classes, fleet("t4x2"))
    assert got == {DRIVER, "by-driver", "by-attribute", "by-evaluation", "everything", "broken"}
    # With nothing published the evaluated one cannot be known; those that name the driver still count.
    assert our_classes(DRIVER, classes, []) == {DRIVER, "by-driver", "by-attribute", "everything", "broken"}


def test_a_claim_through_another_class_that_selects_our_gpus_is_charged_and_refused() -> None:
    api = FakeApi(fleet("t4x2"))
    api.device_classes = [device_class("cheap-gpus", f"device.driver == '{DRIVER}'")]
    api.add_quota(quota(gpus=1))
    hook = admission(api)
    assert hook.validate_claim(review(claim("a", slice_spec("1Gi", cls="cheap-gpus")), "ResourceClaim")).allowed
    assert api.quotas[("ns", "budget")]["status"]["used"]["gpus"] == 1
    api.add_claim(claim("a", slice_spec("1Gi", cls="cheap-gpus")))
    response = hook.validate_claim(review(claim("b", slice_spec("1Gi", cls="cheap-gpus")), "ResourceClaim"))
    assert not response.allowed and "gpus: used 1 + requested 1 = 2 exceeds the limit 1" in response.message
    other = hook.validate_claim(review(claim("n", slice_spec("1Gi", cls="nic.example.com")), "ResourceClaim"))
    assert other.allowed


def test_the_reconciler_counts_pending_claims_of_other_classes_too() -> None:
    from dra_hami.quota.reconciler import QuotaReconciler

    api = FakeApi(fleet("t4x2"))
    api.device_classes = [device_class("cheap-gpus", f"device.driver == '{DRIVER}'")]
    api.add_quota(quota(gpus=4))
    api.add_claim(claim("a", slice_spec("1Gi", "10", cls="cheap-gpus")))
    QuotaReconciler(api, DRIVER, clock=lambda: NOW).reconcile()
    assert api.quotas[("ns", "budget")]["status"]["used"] == {"memory": "1Gi", "cores": 10, "gpus": 1}


# ----------------------------------------------------------------------------------- pinned config


def vgpu(**fields) -> dict:
    return {"opaque": {"driver": DRIVER, "parameters": {"apiVersion": "gpu.hami.io/v1alpha1", "kind": "VGpuConfig",
                                                         **fields}}}  # fmt: skip


def pinned_api() -> FakeApi:
    api = FakeApi(fleet("t4x2"))
    admin = vgpu(coreLimitPolicy="default", pinned=["coreLimitPolicy", "logLevel"])
    api.device_classes = [device_class(DRIVER, f"device.driver == '{DRIVER}'", config=[admin])]
    return api


def with_config(spec: dict, *entries: dict) -> dict:
    spec["devices"]["config"] = list(entries)
    return spec


def test_a_claim_cannot_override_a_pinned_field() -> None:
    spec = with_config(
        slice_spec("1Gi", "30"), {**vgpu(coreLimitPolicy="disable", oomPolicy="kill"), "requests": ["gpu"]}
    )
    response = admission(pinned_api()).validate_claim(review(claim("c", spec), "ResourceClaim"))
    assert not response.allowed and response.code == 403
    assert response.message == (
        "ResourceClaim ns/c: VGpuConfig overrides admin-pinned DeviceClass config: "
        f"spec.devices.config[0].opaque.parameters.coreLimitPolicy: DeviceClass {DRIVER} pins coreLimitPolicy to "
        "'default'; remove the field from the claim; fix the VGpuConfig (see examples/vgpu-config.yaml) or remove "
        "the config entry"
    )


def test_templates_and_fields_pinned_without_a_value_are_checked_too() -> None:
    spec = with_config(slice_spec("1Gi"), vgpu(logLevel="debug"))
    response = admission(pinned_api()).validate_claim(review(template("t", spec), "ResourceClaimTemplate"))
    assert "spec.spec.devices.config[0].opaque.parameters.logLevel: DeviceClass" in response.message
    assert "pins logLevel to libvgpu's default" in response.message


def test_unpinned_fields_and_the_pinned_value_itself_pass() -> None:
    spec = with_config(slice_spec("1Gi"), vgpu(coreLimitPolicy="default", priority="high", oomPolicy="kill"))
    assert admission(pinned_api()).validate_claim(review(claim("c", spec), "ResourceClaim")).allowed


def test_a_claim_may_not_pin() -> None:
    spec = with_config(slice_spec("1Gi"), vgpu(coreLimitPolicy="disable", pinned=["coreLimitPolicy"]))
    response = admission(FakeApi(fleet("t4x2"))).validate_claim(review(claim("c", spec), "ResourceClaim"))
    assert not response.allowed and "parameters.pinned: only a DeviceClass's config may pin fields" in response.message
