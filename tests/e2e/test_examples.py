"""Every manifest of examples/ applied on the real cluster, in scheduler mode, with the session's t4x2 plugin.

(policy-binpack/spread run in test_chart.py with the chart's controller; deviceclass.yaml is the session's
``device_class`` fixture.) Each example's pods must reach Running, and what the example promises is checked
where it shows: the allocation the API server stored (device, consumed capacity, attributes) and the
environment the CDI spec put into the container (busybox ``env``, read from the kubelet's pod-log directory).
The fake t4x2 node has two Tesla T4s (15360Mi each) on NUMA node 0, which every example fits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from cluster import DRIVER, ApiError, Cluster, HamiPlugin, wait_for
from examples_support import RESOURCE_API, establish_crd, example_objects, our_allocated_claims
from test_admission import Webhook

from dra_hami.quantity import to_int

pytestmark = pytest.mark.e2e

QUOTA_API = "/apis/dra-hami.project-hami.io/v1alpha1"
ENV_COMMAND = "env | sort; echo READY; exec sleep 3600"
Gpus = dict[str, dict[str, Any]]  # the node's published devices by name


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def gpus(cluster: Cluster, hami_plugin: HamiPlugin, device_class: dict) -> Gpus:
    """The session plugin's two T4s, once no claim of an earlier test holds any of their capacity."""
    assert hami_plugin.profile == "t4x2", hami_plugin.profile
    wait_for(
        lambda: not our_allocated_claims(cluster, DRIVER),
        90,
        "earlier claims of the driver to be released",
        details=lambda: "\n".join(c["metadata"]["name"] for c in our_allocated_claims(cluster, DRIVER)),
    )
    devices = {d["name"]: d for s in hami_plugin.slices() for d in s["spec"]["devices"]}
    assert len(devices) == 2 and {attr(d, "productName") for d in devices.values()} == {"Tesla T4"}, devices
    return devices


@pytest.fixture(scope="module")
def legacy_webhook(cluster: Cluster, hami_plugin: HamiPlugin, device_class: dict):
    """test_admission's webhook (quota and legacy translation), without policy mode: the examples assume none."""
    establish_crd(cluster, "gpuquota.yaml", f"{QUOTA_API}/gpuquotas")
    with Webhook(cluster, policy_mode=False).serving() as hook:
        yield hook


# ----------------------------------------------------------------------------------------------- helpers


def attr(device: dict[str, Any], name: str) -> Any:
    (value,) = device["attributes"][name].values()
    return value


def apply(cluster: Cluster, objects: list[dict[str, Any]], namespace: str) -> dict[str, dict[str, Any]]:
    """Create the example's objects in the test's namespace (a Namespace object lends it its labels), then its pods
    one by one, each Running before the next, so the scheduler's first fit is the same on every run."""
    pods = {}
    for obj in objects:
        obj["metadata"].pop("namespace", None)
        if obj["kind"] == "Namespace":
            cluster.kube.patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": obj["metadata"]["labels"]}})
        elif obj["kind"] == "GpuQuota":
            cluster.kube.request("POST", f"{QUOTA_API}/namespaces/{namespace}/gpuquotas", obj)
        elif obj["kind"] != "Pod":
            cluster.kube.create(obj, namespace)
    for obj in objects:
        if obj["kind"] == "Pod":
            name = obj["metadata"]["name"]
            cluster.kube.create(obj, namespace)
            pods[name] = cluster.wait_pod_phase(name, ["Running"], namespace, timeout=120)
    return pods


def claim_of(cluster: Cluster, pod: dict[str, Any], namespace: str, entry: str) -> dict[str, Any]:
    """The ResourceClaim behind the pod's ``resourceClaims`` entry (a template's generated claim or a named one)."""
    (ref,) = [r for r in pod["spec"]["resourceClaims"] if r["name"] == entry]
    name = ref.get("resourceClaimName") or next(
        s["resourceClaimName"] for s in pod["status"]["resourceClaimStatuses"] if s["name"] == entry
    )
    return cluster.kube.get(f"{RESOURCE_API}/namespaces/{namespace}/resourceclaims/{name}")


def results(claim: dict[str, Any]) -> list[dict[str, Any]]:
    found = claim["status"]["allocation"]["devices"]["results"]
    assert all(r["driver"] == DRIVER for r in found), found
    return found


def consumed(result: dict[str, Any]) -> tuple[int, int]:
    """(memory bytes, cores) the result holds of its device."""
    capacity = result.get("consumedCapacity") or {}
    return to_int(capacity.get("memory", "0"), "memory"), to_int(capacity.get("cores", "0"), "cores")


def container_env(cluster: Cluster, pod: str, container: str, namespace: str) -> dict[str, str]:
    log = cluster.wait_pod_log(pod, r"^READY$", container, namespace, timeout=60)
    return dict(line.split("=", 1) for line in log.splitlines() if "=" in line)


def assert_limits(env: dict[str, str], index: int, memory_mib: int, cores: int) -> None:
    """The caps libvgpu enforces, as HAMi-core's indexed variables: memory in MiB ("<n>m") and SM percent."""
    got = (env.get(f"CUDA_DEVICE_MEMORY_LIMIT_{index}"), env.get(f"CUDA_DEVICE_SM_LIMIT_{index}"))
    assert got == (f"{memory_mib}m", str(cores)), (index, got, env)


GI = 1 << 30
MI = 1 << 20


# ----------------------------------------------------------------------------------------------- examples


def check_single_slice(cluster: Cluster, namespace: str, pods: dict, gpus: Gpus) -> None:
    (result,) = results(claim_of(cluster, pods["inference"], namespace, "gpu"))
    assert result["device"] in gpus and consumed(result) == (4 * GI, 30), result
    assert_limits(container_env(cluster, "inference", "app", namespace), 0, 4096, 30)


def check_homelab_workers(cluster: Cluster, namespace: str, pods: dict, gpus: Gpus) -> None:
    (small,) = results(claim_of(cluster, pods["embeddings"], namespace, "gpu"))
    (large,) = results(claim_of(cluster, pods["transcoder"], namespace, "gpu"))
    assert (small["pool"], small["device"]) == (large["pool"], large["device"]), (small, large)  # one card
    assert small["shareID"] != large["shareID"], (small, large)
    assert consumed(small) == (3072 * MI, 25) and consumed(large) == (4608 * MI, 40), (small, large)
    assert_limits(container_env(cluster, "embeddings", "worker", namespace), 0, 3072, 25)
    assert_limits(container_env(cluster, "transcoder", "worker", namespace), 0, 4608, 40)


def check_whole_gpu(cluster: Cluster, namespace: str, pods: dict, gpus: Gpus) -> None:
    (result,) = results(claim_of(cluster, pods["training"], namespace, "gpu"))
    card = to_int(gpus[result["device"]]["capacity"]["memory"]["value"], "memory")
    assert card == 15360 * MI and consumed(result) == (card, 0), result  # all memory, no compute reservation
    assert_limits(container_env(cluster, "training", "trainer", namespace), 0, 15360, 0)  # SM 0: no cap


def check_two_gpus_one_numa(cluster: Cluster, namespace: str, pods: dict, gpus: Gpus) -> None:
    found = results(claim_of(cluster, pods["tensor-parallel"], namespace, "gpus"))
    assert len(found) == 2 and len({r["device"] for r in found}) == 2, found
    assert len({r["pool"] for r in found}) == 1, found
    assert len({attr(gpus[r["device"]], "uuid") for r in found}) == 2
    assert len({attr(gpus[r["device"]], "numaNode") for r in found}) == 1
    assert all(consumed(r) == (8 * GI, 50) for r in found), found
    env = container_env(cluster, "tensor-parallel", "app", namespace)
    assert_limits(env, 0, 8192, 50)
    assert_limits(env, 1, 8192, 50)


def check_shared_claim(cluster: Cluster, namespace: str, pods: dict, gpus: Gpus) -> None:
    pod = pods["video-pipeline"]
    claim = claim_of(cluster, pod, namespace, "gpu")
    assert claim["metadata"]["name"] == "pipeline-gpu"
    assert [r["uid"] for r in claim["status"]["reservedFor"]] == [pod["metadata"]["uid"]]
    (result,) = results(claim)
    assert consumed(result) == (6 * GI, 50), result
    decoder = container_env(cluster, "video-pipeline", "decoder", namespace)
    detector = container_env(cluster, "video-pipeline", "detector", namespace)
    for env in (decoder, detector):
        assert_limits(env, 0, 6144, 50)
    # One budget: both containers account in the same shared region, the claim's.
    region = decoder.get("CUDA_DEVICE_MEMORY_SHARED_CACHE", "")
    assert claim["metadata"]["uid"] in region and detector.get("CUDA_DEVICE_MEMORY_SHARED_CACHE") == region


def check_product_selector(cluster: Cluster, namespace: str, pods: dict, gpus: Gpus) -> None:
    (result,) = results(claim_of(cluster, pods["t4-only"], namespace, "gpu"))
    assert attr(gpus[result["device"]], "productName") == "Tesla T4" and consumed(result) == (GI, 10), result
    assert_limits(container_env(cluster, "t4-only", "app", namespace), 0, 1024, 10)
    # The selector is really applied: the same example asking for a product this node lacks stays unschedulable.
    other = example_objects("product-selector.yaml", command=ENV_COMMAND)
    for obj in other:
        if obj["kind"] == "ResourceClaimTemplate":
            (cel,) = obj["spec"]["spec"]["devices"]["requests"][0]["exactly"]["selectors"]
            assert "== 'Tesla T4'" in cel["cel"]["expression"], cel
            cel["cel"]["expression"] = cel["cel"]["expression"].replace("Tesla T4", "NVIDIA A100-SXM4-40GB")
            obj["metadata"]["name"] = "a100-slice"
        else:
            obj["metadata"]["name"] = "a100-only"
            obj["spec"]["resourceClaims"][0]["resourceClaimTemplateName"] = "a100-slice"
        cluster.kube.create(obj, namespace)

    def unschedulable() -> bool:
        conditions = (cluster.pod("a100-only", namespace) or {}).get("status", {}).get("conditions", [])
        return any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conditions)

    wait_for(unschedulable, 60, "the A100-only pod to be reported unschedulable",
             details=lambda: cluster.describe_pod("a100-only", namespace))  # fmt: skip


def check_vgpu_config(cluster: Cluster, namespace: str, pods: dict, gpus: Gpus) -> None:
    (result,) = results(claim_of(cluster, pods["latency-critical"], namespace, "gpu"))
    assert consumed(result) == (2 * GI, 20), result
    env = container_env(cluster, "latency-critical", "app", namespace)
    assert_limits(env, 0, 2048, 20)
    tuned = {k: env.get(k) for k in ("GPU_CORE_UTILIZATION_POLICY", "CUDA_TASK_PRIORITY", "VGPU_OOM_POLICY",
                                     "LIBCUDA_LOG_LEVEL")}  # fmt: skip
    # coreLimitPolicy force, priority high (0), oomPolicy kill, logLevel warn (2)
    assert tuned == {"GPU_CORE_UTILIZATION_POLICY": "force", "CUDA_TASK_PRIORITY": "0", "VGPU_OOM_POLICY": "kill",
                     "LIBCUDA_LOG_LEVEL": "2"}, env  # fmt: skip


CHECKS: dict[str, Callable[[Cluster, str, dict, Gpus], None]] = {
    "single-slice.yaml": check_single_slice,
    "homelab-workers.yaml": check_homelab_workers,
    "whole-gpu.yaml": check_whole_gpu,
    "two-gpus-one-numa.yaml": check_two_gpus_one_numa,
    "shared-claim.yaml": check_shared_claim,
    "product-selector.yaml": check_product_selector,
    "vgpu-config.yaml": check_vgpu_config,
}


@pytest.mark.parametrize("example", list(CHECKS))
def test_example_runs_as_promised(cluster: Cluster, namespace: str, gpus: Gpus, example: str) -> None:
    pods = apply(cluster, example_objects(example, command=ENV_COMMAND), namespace)
    CHECKS[example](cluster, namespace, pods, gpus)
    for name in pods:
        cluster.delete_pod(name, namespace)


def test_gpuquota_example_limits_the_namespace(cluster: Cluster, namespace: str, legacy_webhook: Webhook) -> None:
    """examples/gpuquota.yaml in the test's namespace: status.used follows the claims, a claim over it is refused."""
    apply(cluster, example_objects("gpuquota.yaml"), namespace)
    path = f"{QUOTA_API}/namespaces/{namespace}/gpuquotas/team-budget"
    assert cluster.kube.get(path)["spec"]["hard"] == {"memory": "24Gi", "cores": 150, "gpus": 4}

    def used() -> dict[str, Any]:
        legacy_webhook.component.check_alive()
        return (cluster.kube.get(path).get("status") or {}).get("used") or {}

    def claim(name: str, memory: str, cores: str) -> dict[str, Any]:
        request = {"deviceClassName": DRIVER, "capacity": {"requests": {"memory": memory, "cores": cores}}}
        return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": name},
                "spec": {"devices": {"requests": [{"name": "gpu", "exactly": request}]}}}  # fmt: skip

    wait_for(lambda: used().get("gpus") == 0, 30, "the webhook's first status of the example's GpuQuota")
    cluster.kube.create(claim("first", "16Gi", "100"), namespace)
    wait_for(lambda: used() == {"memory": "16Gi", "cores": 100, "gpus": 1}, 30, "status.used to count the claim",
             details=lambda: str(used()))  # fmt: skip
    with pytest.raises(ApiError) as refused:
        cluster.kube.create(claim("second", "10Gi", "10"), namespace)
    assert refused.value.status == 403, refused.value
    assert "memory: used 16Gi + requested 10Gi = 26Gi exceeds the limit 24Gi" in str(refused.value)
    cluster.kube.create(claim("third", "8Gi", "50"), namespace)  # exactly at the memory and cores limits
    wait_for(lambda: used() == {"memory": "24Gi", "cores": 150, "gpus": 2}, 30, "status.used at the limits",
             details=lambda: str(used()))  # fmt: skip


def test_legacy_hami_pod_example_is_translated_and_runs_capped(cluster: Cluster, namespace: str, gpus: Gpus,
                                                                legacy_webhook: Webhook) -> None:  # fmt: skip
    """examples/legacy-hami-pod.yaml unchanged but for the image: the namespace label turns on translation."""
    objects = example_objects("legacy-hami-pod.yaml", command=ENV_COMMAND)
    (ns_obj,) = [o for o in objects if o["kind"] == "Namespace"]
    apply(cluster, [ns_obj], namespace)
    time.sleep(5.5)  # the webhook caches namespace labels for 5 s
    pods = apply(cluster, [o for o in objects if o["kind"] == "Pod"], namespace)
    pod = pods["legacy-worker"]
    (entry,) = pod["spec"]["resourceClaims"]
    assert entry["resourceClaimTemplateName"].startswith("hami-legacy-"), entry
    assert "nvidia.com/gpu" not in str(pod["spec"]["containers"][0]["resources"])
    template = cluster.kube.get(
        f"{RESOURCE_API}/namespaces/{namespace}/resourceclaimtemplates/{entry['resourceClaimTemplateName']}"
    )
    exactly = template["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    assert exactly["capacity"]["requests"] == {"memory": "3Gi", "cores": "25"}, exactly  # 20% of 15360Mi
    expressions = [s["cel"]["expression"] for s in exactly.get("selectors", [])]
    assert any("productName.matches" in e and "T4" in e for e in expressions), expressions  # use-gputype: T4
    (result,) = results(claim_of(cluster, pod, namespace, entry["name"]))
    assert attr(gpus[result["device"]], "productName") == "Tesla T4" and consumed(result) == (3 * GI, 25), result
    assert_limits(container_env(cluster, "legacy-worker", "worker", namespace), 0, 3072, 25)
    cluster.delete_pod("legacy-worker", namespace)
