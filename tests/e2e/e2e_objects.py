"""The Kubernetes objects the e2e scenarios create, built in one place: busybox pods, one-request
ResourceClaimTemplates, and the wait for a pod's allocated ResourceClaim.

Every pod fits this harness's single node, which has no registry: the image is one imported into containerd
(``imagePullPolicy: Never``). By default the pod uses the host network (the cluster's network namespace, where the
processes the tests start listen on loopback); ``hostNetwork=False`` gives it the pod network. No pod talks to
the API server unless asked, so no service account token is mounted, and a 1 s grace period keeps pod deletion
quick. A GPU claim is always named
``gpu``, in the pod and in the container, as is the one request of a template.
"""

from __future__ import annotations

from typing import Any

from cluster import DRIVER, Cluster, wait_for
from e2e_images import BUSYBOX_IMAGE

CLAIMS_API = "/apis/resource.k8s.io/v1"
GATE = f"{DRIVER}/allocation"  # the scheduling gate the webhook adds in policy mode
SLEEPER = "echo READY; exec sleep 3600"  # a pod that says it started, then keeps its claim


def busybox_pod(
    name: str,
    command: str = SLEEPER,
    *,
    template: str | None = None,
    claim: str | None = None,
    image: str = BUSYBOX_IMAGE,
    env: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    restart: str = "Never",
    gate: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    **spec_extra: Any,
) -> dict[str, Any]:
    """A pod whose container ``main`` runs ``sh -c command``; with a claim ``gpu`` from ``template`` (a
    ResourceClaimTemplate) or ``claim`` (a ResourceClaim) when given, and the scheduling ``gate`` when given.
    ``spec_extra`` goes into the spec last (it may override the fields above)."""
    if template and claim:
        raise ValueError("a pod gets its claim from a template or names a claim, not both")
    container: dict[str, Any] = {"name": "main", "image": image, "imagePullPolicy": "Never",
                                 "command": ["sh", "-c", command]}  # fmt: skip
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    resources: dict[str, Any] = {}
    if limits:
        resources["limits"] = limits
    if template or claim:
        resources["claims"] = [{"name": "gpu"}]
    if resources:
        container["resources"] = resources
    spec: dict[str, Any] = {
        "hostNetwork": True,
        "automountServiceAccountToken": False,
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 1,
        "containers": [container],
    }
    if template:
        spec["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": template}]
    elif claim:
        spec["resourceClaims"] = [{"name": "gpu", "resourceClaimName": claim}]
    if gate:
        spec["schedulingGates"] = [{"name": gate}]
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {**spec, **spec_extra}}


def claim_template(
    name: str, memory: str | None = None, cores: int | str | None = None, device_class: str = DRIVER
) -> dict[str, Any]:
    """A ResourceClaimTemplate of one request ``gpu`` for a device of ``device_class``, asking for the capacity
    given (none: a whole device, or whatever the driver gives by default)."""
    exactly: dict[str, Any] = {"deviceClassName": device_class}
    requests = {k: str(v) for k, v in (("memory", memory), ("cores", cores)) if v is not None}
    if requests:
        exactly["capacity"] = {"requests": requests}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name},
        "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}}},
    }


def allocated_claim(cluster: Cluster, pod_name: str, namespace: str, timeout: float = 60) -> dict[str, Any]:
    """The pod's (only) ResourceClaim, once allocated: the one generated from its template or the one it names."""

    def get() -> dict[str, Any] | None:
        pod = cluster.pod(pod_name, namespace) or {}
        statuses = pod.get("status", {}).get("resourceClaimStatuses") or []
        spec_claims = pod.get("spec", {}).get("resourceClaims") or []
        if statuses:
            name = statuses[0].get("resourceClaimName")
        else:
            name = spec_claims[0].get("resourceClaimName") if spec_claims else None
        if not name:
            return None
        claim = cluster.kube.get_or_none(f"{CLAIMS_API}/namespaces/{namespace}/resourceclaims/{name}")
        return claim if claim and claim.get("status", {}).get("allocation") else None

    return wait_for(get, timeout, f"the allocated claim of pod {namespace}/{pod_name}")
