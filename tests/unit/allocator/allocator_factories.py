"""Builders for the JSON objects the allocator reads, shaped as the API server returns them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from dra_hami.wire import device_class_selector

DRIVER = "hami-core-gpu.project-hami.io"
GiB = 1 << 30
MiB = 1 << 20
FIXED_TIME = datetime(2026, 11, 22, 5, 8, 35, tzinfo=UTC)


def gpu(
    name: str,
    memory: str = "15Gi",
    *,
    shares: int = 10,
    attributes: dict[str, Any] | None = None,
    shared: bool = True,
    taints: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A device of our wire contract: memory min 1Mi step 1Mi default = max, cores 0..100, shares [1]."""
    attrs = {"type": {"string": "hami-gpu"}, "productName": {"string": "Tesla-T4"}}
    attrs.update(attributes or {})
    device: dict[str, Any] = {"name": name, "attributes": attrs}
    if shared:
        device["allowMultipleAllocations"] = True
        device["capacity"] = {
            "cores": {
                "value": "100",
                "requestPolicy": {"default": "0", "validRange": {"min": "0", "max": "100", "step": "1"}},
            },
            "memory": {
                "value": memory,
                "requestPolicy": {"default": memory, "validRange": {"min": "1Mi", "max": memory, "step": "1Mi"}},
            },
            "shares": {"value": str(shares), "requestPolicy": {"default": "1", "validValues": ["1"]}},
        }
    else:
        device["capacity"] = {"memory": {"value": memory}}
    if taints:
        device["taints"] = taints
    return device


def resource_slice(
    node: str, devices: list[dict[str, Any]], *, generation: int = 1, count: int = 1, name: str | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": name or f"{node}-{DRIVER}"},
        "spec": {
            "driver": DRIVER,
            "nodeName": node,
            "pool": {"name": node, "generation": generation, "resourceSliceCount": count},
            "devices": devices,
        },
    }


def device_class(
    name: str = DRIVER, selectors: list[str] | None = None, config: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    exprs = selectors if selectors is not None else [device_class_selector(DRIVER)]
    spec: dict[str, Any] = {"selectors": [{"cel": {"expression": e}} for e in exprs]}
    if config:
        spec["config"] = config
    return {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": name}, "spec": spec}


def exactly(
    memory: str | None = None,
    cores: str | None = None,
    *,
    count: int | None = None,
    mode: str | None = None,
    device_class_name: str = DRIVER,
    selectors: list[str] | None = None,
    admin: bool = False,
    tolerations: list[dict[str, Any]] | None = None,
    capacity: dict[str, str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"deviceClassName": device_class_name}
    requests = dict(capacity or {})
    if memory is not None:
        requests["memory"] = memory
    if cores is not None:
        requests["cores"] = cores
    if requests:
        body["capacity"] = {"requests": requests}
    if count is not None:
        body["count"] = count
    if mode is not None:
        body["allocationMode"] = mode
    if selectors:
        body["selectors"] = [{"cel": {"expression": e}} for e in selectors]
    if admin:
        body["adminAccess"] = True
    if tolerations:
        body["tolerations"] = tolerations
    return body


def request(name: str = "gpu", **kwargs: Any) -> dict[str, Any]:
    return {"name": name, "exactly": exactly(**kwargs)}


def first_available(name: str, *subrequests: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "firstAvailable": [{"name": sub, **body} for sub, body in subrequests]}


_uids = itertools.count(1)


def claim(
    name: str,
    *requests: dict[str, Any],
    namespace: str = "default",
    constraints: list[dict[str, Any]] | None = None,
    config: list[dict[str, Any]] | None = None,
    allocation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    devices: dict[str, Any] = {"requests": list(requests) or [request()]}
    if constraints:
        devices["constraints"] = constraints
    if config:
        devices["config"] = config
    obj: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{next(_uids)}"},
        "spec": {"devices": devices},
        "status": {},
    }
    if allocation is not None:
        obj["status"]["allocation"] = allocation
    return obj


def node(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, Any]] | None = None,
    cpu: str = "64",
    memory: str = "256Gi",
    pods: str = "110",
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": taints} if taints else {},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods}},
    }


def pod(
    name: str = "p",
    *,
    namespace: str = "default",
    cpu: str | None = None,
    memory: str | None = None,
    node_name: str | None = None,
    node_selector: dict[str, str] | None = None,
    affinity_terms: list[dict[str, Any]] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "x", "resources": {"requests": requests}}]}
    if node_name:
        spec["nodeName"] = node_name
    if node_selector:
        spec["nodeSelector"] = node_selector
    if affinity_terms is not None:
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": affinity_terms}}
        }
    if tolerations:
        spec["tolerations"] = tolerations
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"pod-uid-{name}"}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": {"phase": "Pending"}}


class ShareIds:
    """Deterministic lowercase UUIDs for tests."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"00000000-0000-4000-8000-{self.n:012d}"


def fixed_clock() -> datetime:
    return FIXED_TIME


def state_of(
    slices: list[dict[str, Any]],
    *,
    classes: list[dict[str, Any]] | None = None,
    claims: list[dict[str, Any]] | None = None,
    nodes: list[dict[str, Any]] | None = None,
    pods: list[dict[str, Any]] | None = None,
):
    from dra_hami.allocator import ClusterState

    node_objs = nodes if nodes is not None else [node(s["spec"]["nodeName"]) for s in slices]
    return ClusterState.from_objects(
        slices=slices,
        device_classes=classes if classes is not None else [device_class()],
        claims=claims or [],
        nodes=node_objs,
        pods=pods or [],
    )


def place(state, pod_obj: dict[str, Any], claims: list[dict[str, Any]], policy=None, share_ids=None):
    """Allocate and commit, as the simulator does; returns the Placement (fails the test if unplaceable)."""
    from dra_hami.allocator import Placement, allocate_pod

    outcome = allocate_pod(state, pod_obj, claims, policy, share_ids=share_ids or ShareIds(), clock=fixed_clock)
    assert isinstance(outcome, Placement), getattr(outcome, "message", outcome)
    state.commit(outcome)
    return outcome


def devices_of(placement) -> list[str]:
    return [r["device"] for c in placement.claims for r in c.allocation["devices"]["results"]]
