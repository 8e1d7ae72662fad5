"""GpuQuota in policy mode on the real cluster: `dra-hami controller` refuses allocations that would take a
namespace over its quota (the pod keeps its gate with a QuotaExceeded condition and event), and lets the pod
through once the quota is raised or another pod's claim is released.

No webhook runs here: claims are created freely, so the controller is the only thing enforcing the quota.
The session's plugin keeps its own profile (two GPUs of 16Gi is plenty for 2Gi claims).
"""

from __future__ import annotations

from typing import Any

import pytest
from cluster import REPO_ROOT, Cluster, HamiPlugin, load_manifests, wait_for
from e2e_objects import CLAIMS_API, GATE, claim_template
from test_policy_mode import CONDITION, Controller, gated_pod

pytestmark = pytest.mark.e2e

QUOTAS_API = "/apis/dra-hami.project-hami.io/v1alpha1"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def install_gpuquota_crd(cluster: Cluster) -> None:
    (crd,) = load_manifests(REPO_ROOT / "crds" / "gpuquota.yaml")
    if cluster.kube.get_or_none(f"{CRDS}/{crd['metadata']['name']}") is None:
        cluster.kube.request("POST", CRDS, crd)

    def served() -> bool:
        obj = cluster.kube.get(f"{CRDS}/{crd['metadata']['name']}")
        conditions = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions", [])}
        return (
            conditions.get("Established") == "True" and cluster.kube.get_or_none(f"{QUOTAS_API}/gpuquotas") is not None
        )

    wait_for(served, 60, "the GpuQuota CRD to be established and served")


@pytest.fixture
def quota_controller(cluster: Cluster, hami_plugin: HamiPlugin, device_class: dict):
    install_gpuquota_crd(cluster)  # before the controller starts: its first list already sees quotas
    c = Controller(cluster, "e2e-quota-controller", ["--no-leader-elect"]).start()
    yield c
    c.stop()


def _condition(cluster: Cluster, pod_name: str, namespace: str) -> dict[str, Any] | None:
    pod = cluster.pod(pod_name, namespace) or {}
    return next((c for c in pod.get("status", {}).get("conditions", []) if c["type"] == CONDITION), None)


def _refused(cluster: Cluster, controller: Controller, pod_name: str, namespace: str) -> dict[str, Any]:
    def quota_exceeded() -> dict[str, Any] | None:
        found = _condition(cluster, pod_name, namespace)
        return found if found and found["reason"] == "QuotaExceeded" else None

    found = wait_for(
        quota_exceeded, 60, f"the QuotaExceeded condition on pod {pod_name}", details=controller.component.tail
    )
    assert found["status"] == "False"
    pod = cluster.pod(pod_name, namespace)
    assert pod["spec"]["schedulingGates"] == [{"name": GATE}]
    assert not pod["spec"].get("nodeName")
    name = pod["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
    claim = cluster.kube.get(f"{CLAIMS_API}/namespaces/{namespace}/resourceclaims/{name}")
    assert not claim.get("status", {}).get("allocation")  # nothing allocated past the quota
    return found


def test_allocations_over_the_quota_wait_until_it_is_raised_or_freed(
    cluster: Cluster, quota_controller: Controller, namespace: str
) -> None:
    kube = cluster.kube
    quota_path = f"{QUOTAS_API}/namespaces/{namespace}/gpuquotas"
    kube.request("POST", quota_path, {
        "apiVersion": "dra-hami.project-hami.io/v1alpha1", "kind": "GpuQuota",
        "metadata": {"name": "budget"}, "spec": {"hard": {"memory": "3Gi", "gpus": 2}},
    })  # fmt: skip
    kube.create(claim_template("small", "2Gi", 10), namespace)

    # within the quota: placed and running
    kube.create(gated_pod("first", "small"), namespace)
    cluster.wait_pod_phase("first", ["Running"], namespace, timeout=120)

    # 2Gi held + 2Gi more > 3Gi: keeps its gate, says used, requested and limit (condition and event)
    kube.create(gated_pod("second", "small"), namespace)
    found = _refused(cluster, quota_controller, "second", namespace)
    assert "memory: used 2Gi + requested 2Gi = 4Gi exceeds the limit 3Gi" in found["message"], found["message"]
    assert f"GpuQuota {namespace}/budget" in found["message"]
    events = kube.get(f"/api/v1/namespaces/{namespace}/events").get("items", [])
    ours = [e for e in events if e.get("source", {}).get("component") == "dra-hami-controller"]
    assert [(e["reason"], e["involvedObject"]["name"]) for e in ours] == [("QuotaExceeded", "second")], events
    assert "used 2Gi + requested 2Gi = 4Gi exceeds the limit 3Gi" in ours[0]["message"]

    # raising the quota lets it through (the quota's watch event wakes the pod, no resync needed)
    kube.patch(f"{quota_path}/budget", {"spec": {"hard": {"memory": "4Gi"}}})
    cluster.wait_pod_phase("second", ["Running"], namespace, timeout=60)
    assert not cluster.pod("second", namespace)["spec"].get("schedulingGates")

    # full again: a third pod waits; deleting the first pod releases its claim and the third one runs
    kube.create(gated_pod("third", "small"), namespace)
    found = _refused(cluster, quota_controller, "third", namespace)
    assert "memory: used 4Gi + requested 2Gi = 6Gi exceeds the limit 4Gi" in found["message"], found["message"]
    cluster.delete_pod("first", namespace)
    cluster.wait_pod_phase("third", ["Running"], namespace, timeout=120)
    assert quota_controller.component.grep(": allocated ", f"{namespace}/third")
