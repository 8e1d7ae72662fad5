"""``dra-hami webhook`` registered with the real API server, run as the chart's default install runs it (no
policy mode): HAMi legacy pods run capped, GpuQuota refuses and releases claims the stock scheduler then
allocates, invalid VGpuConfig and control variables are refused at creation, and each registration behaves
during an outage as docs/configuration.md says. Policy mode (a second webhook process) adds only the gate.

The webhook runs as a child process on 127.0.0.1 with a serving certificate from the cluster's CA; the
webhook configurations are the ones ``dra_hami.webhook.configuration`` builds (so the API server also checks
their matchConditions CEL), pointed at that address. They are removed again after this module.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from cluster import DRIVER, REPO_ROOT, ApiError, Cluster, Component, HamiPlugin, free_port, load_manifests, wait_for
from e2e_objects import CLAIMS_API, GATE, busybox_pod, claim_template
from e2e_pki import CertSpec

from dra_hami.quantity import to_int
from dra_hami.webhook import configuration

pytestmark = pytest.mark.e2e

QUOTAS = "/apis/dra-hami.project-hami.io/v1alpha1"
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
LEGACY = {"dra-hami.project-hami.io/legacy-translation": "enabled"}
NO_POLICY = {"dra-hami.project-hami.io/policy-mode": "disabled"}


class Webhook:
    def __init__(self, cluster: Cluster, policy_mode: bool = False) -> None:
        self.cluster = cluster
        self.port = free_port()
        self.pair = cluster.pki.issue(
            CertSpec("dra-hami-webhook", "dra-hami-webhook", ip_addresses=("127.0.0.1",), server=True)
        )
        self.url = f"https://127.0.0.1:{self.port}"
        self.component = Component(
            "dra-hami-webhook",
            [
                sys.executable, "-m", "dra_hami", "webhook",
                "--tls-cert-file", str(self.pair.cert), "--tls-key-file", str(self.pair.key),
                "--bind-address", f"127.0.0.1:{self.port}", "--metrics-bind-address", "127.0.0.1:0",
                "--kubeconfig", str(cluster.admin_kubeconfig), "--quota-resync", "5",
                "--policy-mode" if policy_mode else "--no-policy-mode",
                "--log-level", "debug",
            ],
            cluster.logs / "dra-hami-webhook.log",
            env={"PYTHONPATH": f"{REPO_ROOT}:{os.environ.get('PYTHONPATH', '')}".rstrip(":"), "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip

    def healthy(self) -> bool:
        self.component.check_alive()
        ctx = ssl.create_default_context(cafile=str(self.cluster.pki.ca.cert))
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", context=ctx, timeout=2) as resp:
                return resp.read() == b"ok"
        except OSError:
            return False

    def configurations(self, url: str | None = None) -> list[tuple[str, dict]]:
        ca = self.cluster.pki.ca.cert.read_bytes()
        return [
            ("mutatingwebhookconfigurations", configuration.mutating(DRIVER, ca, url=url or self.url)),
            ("validatingwebhookconfigurations", configuration.validating(DRIVER, ca, url=url or self.url)),
        ]

    def register(self, url: str | None = None) -> None:
        kube = self.cluster.kube
        for plural, obj in self.configurations(url):
            path = f"{ADMISSION}/{plural}"
            current = kube.get_or_none(f"{path}/{obj['metadata']['name']}")
            if current is None:
                kube.request("POST", path, obj)
            else:
                obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                kube.request("PUT", f"{path}/{obj['metadata']['name']}", obj)

    def await_serving(self, namespace: str, gate: bool) -> None:
        """Until the API server's view of the registrations (an informer) calls this process: a dry-run GPU pod
        comes back gated exactly when this one runs in policy mode."""

        def answered() -> bool:
            try:
                probe = busybox_pod("probe", "true", template="probe")
                out = self.cluster.kube.request("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", probe)
            except ApiError as err:
                if "failed calling webhook" in str(err):
                    return False
                raise
            return bool(out["spec"].get("schedulingGates")) == gate

        wait_for(answered, 30, f"the API server to call the webhook on {self.url}")

    def unregister(self) -> None:
        for plural, obj in self.configurations():
            self.cluster.kube.delete(f"{ADMISSION}/{plural}/{obj['metadata']['name']}")

    @contextlib.contextmanager
    def serving(self) -> Iterator[Webhook]:
        """Runs the webhook and registers it with the API server for the duration of the block."""
        self.cluster.components[self.component.name] = self.component
        self.component.start()
        try:
            wait_for(self.healthy, 60, "dra-hami webhook /healthz over HTTPS", details=lambda: self.component.tail(30))
            self.register()
            yield self
        finally:
            self.unregister()
            self.component.stop()


@pytest.fixture(scope="module")
def gpuquota_crd(cluster: Cluster) -> None:
    (crd,) = load_manifests(REPO_ROOT / "crds" / "gpuquota.yaml")
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    if cluster.kube.get_or_none(f"{path}/{crd['metadata']['name']}") is None:
        cluster.kube.request("POST", path, crd)

    def established() -> bool:
        obj = cluster.kube.get(f"{path}/{crd['metadata']['name']}")
        conditions = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions", [])}
        return conditions.get("Established") == "True" and cluster.kube.get_or_none(f"{QUOTAS}/gpuquotas") is not None

    wait_for(established, 60, "the GpuQuota CRD to be established and served")


@pytest.fixture(scope="module")
def webhook(cluster: Cluster, hami_plugin: HamiPlugin, device_class: dict, gpuquota_crd: None):
    with Webhook(cluster).serving() as hook:
        yield hook


def labelled_namespace(cluster: Cluster, namespace: str, labels: dict[str, str]) -> None:
    cluster.kube.patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": labels}})
    time.sleep(5.5)  # the webhook caches namespace labels for 5 s


def claim_body(name: str, memory: str, cores: str = "10", config: dict | None = None, template: bool = False) -> dict:
    """A claim template (``template``) or a claim of one request ``gpu``, with a VGpuConfig when ``config``."""
    body = claim_template(name, memory, cores)
    spec = body["spec"]["spec"]
    if config is not None:
        spec["devices"]["config"] = [{"requests": ["gpu"], "opaque": {"driver": DRIVER, "parameters": config}}]
    if template:
        return body
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": name}, "spec": spec}


def test_legacy_homelab_pod_gets_a_claim_and_runs_capped(cluster: Cluster, webhook: Webhook, namespace: str) -> None:
    kube = cluster.kube
    labelled_namespace(cluster, namespace, {**LEGACY, **NO_POLICY})  # translated, not gated (no controller here)
    pod = busybox_pod(
        "legacy-worker",
        "env | sort; echo READY; sleep 3600",
        limits={"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "20", "nvidia.com/gpucores": "25"},
    )
    created = kube.create(pod, namespace)
    # what the API server stored: the legacy resources are gone, a template-backed claim is in their place
    (entry,) = created["spec"]["resourceClaims"]
    assert entry["name"] == "hami-main" and entry["resourceClaimTemplateName"].startswith("hami-legacy-")
    assert created["spec"]["containers"][0]["resources"] == {"claims": [{"name": "hami-main"}]}
    assert not created["spec"].get("schedulingGates")
    template = kube.get(
        f"{CLAIMS_API}/namespaces/{namespace}/resourceclaimtemplates/{entry['resourceClaimTemplateName']}"
    )
    exactly = template["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    assert exactly["capacity"]["requests"] == {"cores": "25", "memory": "3Gi"}  # 20% of a 15360Mi T4

    running = cluster.wait_pod_phase("legacy-worker", ["Running"], namespace, timeout=180)
    log = cluster.wait_pod_log("legacy-worker", r"^READY$", "main", namespace, timeout=60)
    env = dict(line.split("=", 1) for line in log.splitlines() if "=" in line)
    assert env.get("CUDA_DEVICE_MEMORY_LIMIT_0") == "3072m", log
    assert env.get("CUDA_DEVICE_SM_LIMIT_0") == "25", log

    # the claim belongs to the pod (Kubernetes made it from the template): it goes with the pod, no leak
    claim_name = running["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
    claim_path = f"{CLAIMS_API}/namespaces/{namespace}/resourceclaims/{claim_name}"
    claim = kube.get(claim_path)
    assert [o["uid"] for o in claim["metadata"]["ownerReferences"]] == [running["metadata"]["uid"]]
    assert claim["metadata"]["labels"]["dra-hami.project-hami.io/legacy-translated"] == "true"
    cluster.delete_pod("legacy-worker", namespace)
    wait_for(lambda: kube.get_or_none(claim_path) is None, 60, f"claim {claim_name} to go with its pod")


def test_bad_legacy_values_are_refused_at_creation(cluster: Cluster, webhook: Webhook, namespace: str) -> None:
    labelled_namespace(cluster, namespace, LEGACY)
    pod = busybox_pod("too-much", "true", limits={"nvidia.com/gpu": "1", "nvidia.com/gpumem": "99999"})
    with pytest.raises(ApiError) as refused:
        cluster.kube.create(pod, namespace)
    assert refused.value.status == 400
    assert "nvidia.com/gpumem is 99999 MiB but the largest GPU has 15360 MiB" in str(refused.value)


def test_only_policy_mode_gates_gpu_pods(cluster: Cluster, webhook: Webhook, namespace: str) -> None:
    kube = cluster.kube
    kube.create(claim_body("slice", "1Gi", template=True), namespace)
    kube.create(claim_body("probe", "1Gi", template=True), namespace)
    # the default install: the stock scheduler allocates, nothing is gated
    ungated = kube.create(busybox_pod("ungated", "echo READY", template="slice"), namespace)
    assert not ungated["spec"].get("schedulingGates")
    cluster.wait_pod_phase("ungated", ["Succeeded"], namespace, timeout=180)

    policy = Webhook(cluster, policy_mode=True)
    try:
        with policy.serving():
            policy.await_serving(namespace, gate=True)
            created = kube.create(busybox_pod("gpu", "echo READY; sleep 3600", template="slice"), namespace)
            assert created["spec"]["schedulingGates"] == [{"name": GATE}]
            plain = kube.create(busybox_pod("plain", "echo hi"), namespace)
            assert not plain["spec"].get("schedulingGates")
            cluster.wait_pod_phase("plain", ["Succeeded"], namespace, timeout=120)

            def gated() -> bool:
                conditions = {
                    c["type"]: c for c in (cluster.pod("gpu", namespace) or {}).get("status", {}).get("conditions", [])
                }
                return conditions.get("PodScheduled", {}).get("reason") == "SchedulingGated"

            wait_for(gated, 30, "the gated pod to report SchedulingGated")
            # what the allocation controller does once it placed the claims: lift the gate; the pod then runs
            kube.patch(f"/api/v1/namespaces/{namespace}/pods/gpu", {"spec": {"schedulingGates": []}})
            cluster.wait_pod_phase("gpu", ["Running"], namespace, timeout=180)
    finally:
        webhook.register()  # the module's default-install webhook again
        webhook.await_serving(namespace, gate=False)
    assert not policy.component.grep("Traceback"), policy.component.tail(60)


def test_invalid_vgpu_config_is_refused_at_creation(cluster: Cluster, webhook: Webhook, namespace: str) -> None:
    kube = cluster.kube
    good = {"apiVersion": "gpu.hami.io/v1alpha1", "kind": "VGpuConfig", "coreLimitPolicy": "force"}
    kube.create(claim_body("tuned", "1Gi", config=good, template=True), namespace)
    for body in (
        claim_body("bad-template", "1Gi", config={**good, "coreLimitPolicy": "sometimes"}, template=True),
        claim_body("bad-claim", "1Gi", config={**good, "coreLimitPolicy": "sometimes"}),
    ):
        with pytest.raises(ApiError) as refused:
            kube.create(body, namespace)
        assert refused.value.status == 400
        message = str(refused.value)
        assert "invalid VGpuConfig" in message and "coreLimitPolicy: got 'sometimes'" in message, message
        assert "fix the VGpuConfig" in message


def control_env_pod(name: str) -> dict:
    return busybox_pod(name, "true", template="tuned", env={"CUDA_DISABLE_CONTROL": "1"})


def test_a_pod_that_sets_a_control_variable_is_refused(cluster: Cluster, webhook: Webhook, namespace: str) -> None:
    cluster.kube.create(claim_body("tuned", "1Gi", template=True), namespace)
    with pytest.raises(ApiError) as refused:
        cluster.kube.create(control_env_pod("sneaky"), namespace)
    assert refused.value.status == 403
    assert "container 'main' sets CUDA_DISABLE_CONTROL" in str(refused.value), refused.value


def test_gpuquota_refuses_and_releases(cluster: Cluster, webhook: Webhook, namespace: str) -> None:
    """Without policy mode: admission refuses the claim that would go over; the claims the stock scheduler
    allocates are counted by what their allocation took."""
    kube = cluster.kube
    quota_path = f"{QUOTAS}/namespaces/{namespace}/gpuquotas"
    kube.request("POST", quota_path, {
        "apiVersion": "dra-hami.project-hami.io/v1alpha1", "kind": "GpuQuota",
        "metadata": {"name": "budget"}, "spec": {"hard": {"memory": "4Gi", "gpus": 2}},
    })  # fmt: skip

    def used() -> dict:
        return (kube.get(f"{quota_path}/budget").get("status") or {}).get("used") or {}

    wait_for(lambda: used().get("gpus") == 0, 30, "the reconciler's first status of the new GpuQuota")
    kube.create(claim_body("a", "3Gi"), namespace)
    with pytest.raises(ApiError) as refused:
        kube.create(claim_body("b", "2Gi"), namespace)
    assert refused.value.status == 403
    assert "would exceed GpuQuota" in str(refused.value)
    assert "memory: used 3Gi + requested 2Gi = 5Gi exceeds the limit 4Gi" in str(refused.value)
    wait_for(lambda: used() == {"memory": "3Gi", "cores": 10, "gpus": 1}, 30, "status.used to show claim a")

    # a pod whose template would go over: its claim is refused when Kubernetes creates it, the pod waits
    kube.create(claim_body("big", "2Gi", template=True), namespace)
    kube.create(busybox_pod("waits", "echo READY; sleep 3600", template="big", labels=NO_POLICY), namespace)
    wait_for(lambda: "would exceed GpuQuota" in cluster.events_for("waits", namespace), 60,
             "an event saying the pod's claim was refused by GpuQuota",
             details=lambda: cluster.describe_pod("waits", namespace))  # fmt: skip
    assert (cluster.pod("waits", namespace) or {}).get("status", {}).get("phase") == "Pending"

    # deleting claim a frees the quota: the reconciler updates status, the waiting pod's claim now fits
    kube.delete(f"{CLAIMS_API}/namespaces/{namespace}/resourceclaims/a")
    running = cluster.wait_pod_phase("waits", ["Running"], namespace, timeout=180)
    assert not running["spec"].get("schedulingGates")  # no policy mode: the stock scheduler allocated it
    claim_name = running["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
    allocated = kube.get(f"{CLAIMS_API}/namespaces/{namespace}/resourceclaims/{claim_name}")
    (result,) = allocated["status"]["allocation"]["devices"]["results"]
    assert to_int(result["consumedCapacity"]["memory"], "consumedCapacity.memory") == 2 * 1024**3, result
    wait_for(lambda: used().get("memory") == "2Gi" and used().get("gpus") == 1, 30, "status.used after the release")
    # the allocation is what counts now: 2Gi allocated + 3Gi asked > 4Gi
    with pytest.raises(ApiError) as refused:
        kube.create(claim_body("c", "3Gi"), namespace)
    assert "memory: used 2Gi + requested 3Gi = 5Gi exceeds the limit 4Gi" in str(refused.value)


def test_outage_behaviour_of_each_registration(cluster: Cluster, webhook: Webhook, namespace: str) -> None:
    """docs/configuration.md, "When the webhook is down": pods (mutating) and pod-env are Ignore, claims and
    claimtemplates Fail; a pod without GPUs is never even sent."""
    kube = cluster.kube
    labelled_namespace(cluster, namespace, LEGACY)
    kube.create(claim_body("tuned", "1Gi", template=True), namespace)
    dead = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    webhook.register(url=dead)
    pods = f"/api/v1/namespaces/{namespace}/pods?dryRun=All"
    claims = f"{CLAIMS_API}/namespaces/{namespace}/resourceclaims?dryRun=All"

    def dead_everywhere() -> bool:
        """The API server's view of both registrations (informers) reaches the dead address."""
        legacy = kube.request("POST", pods, busybox_pod("legacy", "true", limits={"nvidia.com/gpu": "1"}))
        if legacy["spec"].get("resourceClaims"):
            return False  # still translated by the live webhook
        try:
            kube.request("POST", claims, claim_body("probe", "1Gi"))
        except ApiError as err:
            return "failed calling webhook" in str(err)
        return False

    try:
        wait_for(dead_everywhere, 30, "the API server to call the dead webhook address")
        # pods (Ignore): a HAMi-style pod is created untranslated (it waits as Insufficient nvidia.com/gpu)
        legacy = kube.create(busybox_pod("legacy", "true", limits={"nvidia.com/gpu": "1"}), namespace)
        assert legacy["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
        assert not legacy["spec"].get("resourceClaims")
        plain = kube.create(busybox_pod("plain", "echo hi"), namespace)  # not even sent (matchConditions)
        assert plain["metadata"]["name"] == "plain"
        # pod-env (Ignore): let through by the webhook's registration; only an admission policy, if installed,
        # refuses it
        try:
            kube.request("POST", pods, control_env_pod("sneaky"))
        except ApiError as err:
            assert "ValidatingAdmissionPolicy" in str(err) and "failed calling webhook" not in str(err), err
        # claims and claimtemplates (Fail): refused, so GpuQuota and VGpuConfig cannot be bypassed
        for body in (claim_body(f"c-{uuid.uuid4().hex[:6]}", "1Gi"),
                     claim_body(f"t-{uuid.uuid4().hex[:6]}", "1Gi", template=True)):  # fmt: skip
            with pytest.raises(ApiError) as refused:
                kube.create(body, namespace)
            assert "failed calling webhook" in str(refused.value), refused.value
        cluster.wait_pod_phase("plain", ["Succeeded"], namespace, timeout=120)
    finally:
        webhook.register()
    # back in service: a claim of ours is judged by the webhook again (once the API server's view of the
    # webhook configurations, an informer, has caught up with the re-registration)

    def accepted() -> bool:
        try:
            kube.create(claim_body("after-outage", "1Gi"), namespace)
        except ApiError as err:
            if "failed calling webhook" in str(err):
                return False
            raise
        return True

    wait_for(accepted, 30, "a claim to be admitted once the webhook is registered again")
    with pytest.raises(ApiError) as refused:
        kube.create(control_env_pod("sneaky"), namespace)
    assert "CUDA_DISABLE_CONTROL" in str(refused.value)


def test_webhook_log_has_no_tracebacks(webhook: Webhook) -> None:
    assert not webhook.component.grep("Traceback"), webhook.component.tail(60)
