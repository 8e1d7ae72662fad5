"""examples/*.yaml made runnable on the e2e cluster, shared by test_examples.py and test_chart.py.

The examples are written for a real GPU cluster (CUDA image, the default driver name, a pod network). Here
pods run busybox from containerd (no registry), on the host network, and the driver may be a test driver
of its own; everything that decides placement (requests, selectors, constraints, annotations) stays as written.
"""

from __future__ import annotations

import json
from typing import Any

from cluster import REPO_ROOT, Cluster, load_manifests, wait_for
from e2e_images import BUSYBOX_IMAGE

EXAMPLE_DRIVER = "hami-core-gpu.project-hami.io"  # the driver (and DeviceClass) name the examples are written for
RESOURCE_API = "/apis/resource.k8s.io/v1"


def example_objects(
    name: str, driver: str = EXAMPLE_DRIVER, gate: str | None = None, command: str = "exec sleep 3600"
) -> list[dict[str, Any]]:
    """examples/<name> made runnable here: ``driver``'s class (and attribute domain), busybox running ``command``,
    host network, and the scheduling ``gate`` the policy-mode webhook would add (none when None)."""
    path = REPO_ROOT / "examples" / name
    for obj in load_manifests(path):
        for request in _requests(obj):
            assert request["exactly"]["deviceClassName"] == EXAMPLE_DRIVER, f"{path}: {request}"
    # The driver name is also the domain of the attributes CEL selectors and constraints name.
    objects = json.loads(json.dumps(load_manifests(path)).replace(EXAMPLE_DRIVER, driver))
    for obj in objects:
        if obj["kind"] == "Pod":
            spec = obj["spec"]
            spec.update(hostNetwork=True, automountServiceAccountToken=False, terminationGracePeriodSeconds=1)
            if gate is not None:
                spec["schedulingGates"] = [{"name": gate}]
            for c in spec["containers"]:
                c.update(image=BUSYBOX_IMAGE, imagePullPolicy="Never", command=["sh", "-c", command])
    return objects


def _requests(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "ResourceClaimTemplate":
        return obj["spec"]["spec"]["devices"]["requests"]
    if obj["kind"] == "ResourceClaim":
        return obj["spec"]["devices"]["requests"]
    return []


def our_allocated_claims(cluster: Cluster, driver: str) -> list[dict[str, Any]]:
    """Every claim in the cluster with a device of ``driver`` allocated."""
    items = cluster.kube.get(f"{RESOURCE_API}/resourceclaims").get("items", [])
    return [c for c in items
            if any(r["driver"] == driver for r in (c.get("status", {}).get("allocation") or {})
                   .get("devices", {}).get("results", []))]  # fmt: skip


def establish_crd(cluster: Cluster, path: str, served: str) -> None:
    """Create the CRD of ``crds/<path>`` unless it is there, and wait until ``served`` (a list path) answers."""
    (crd,) = load_manifests(REPO_ROOT / "crds" / path)
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    if cluster.kube.get_or_none(f"{crds}/{crd['metadata']['name']}") is None:
        cluster.kube.request("POST", crds, crd)

    def established() -> bool:
        obj = cluster.kube.get(f"{crds}/{crd['metadata']['name']}")
        conditions = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions", [])}
        return conditions.get("Established") == "True" and cluster.kube.get_or_none(served) is not None

    wait_for(established, 60, f"the CRD of crds/{path} to be established and served")
