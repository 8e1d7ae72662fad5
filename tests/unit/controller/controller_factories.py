"""Hand-made API objects for the controller's unit tests (the JSON the API server would send)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from dra_hami import wire
from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.controller.core import Settings
from dra_hami.controller.view import CLAIMS, CLASSES, NODES, PODS, SLICES, View
from dra_hami.discovery import load_discovery
from dra_hami.publisher.slices import build_pool, device_class

DRIVER = wire.DEFAULT_DRIVER_NAME
GATE = f"{DRIVER}/allocation"
NS = "team"
GiB = 1 << 30

_versions = itertools.count(100)


def rv() -> str:
    return str(next(_versions))


def share_ids():
    counter = itertools.count(1)
    return lambda: f"00000000-0000-4000-8000-{next(counter):012d}"


def settings(**kwargs: Any) -> Settings:
    return Settings(
        driver=DRIVER, share_ids=share_ids(), clock=lambda: datetime(2026, 12, 3, 9, 0, tzinfo=UTC), **kwargs
    )


def node(name: str, cpu: str = "16", memory: str = "64Gi") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}},
    }


def slices(node_name: str, profile: str = "a100x4") -> list[dict[str, Any]]:
    """What our kubelet plugin publishes for ``profile`` (a100x4: four 40Gi GPUs)."""
    out = build_pool(load_discovery(profile).discover(), PublisherConfig(node_name=node_name), generation=1)
    for s in out:
        s["metadata"]["resourceVersion"] = rv()
    return out


def claim(
    name: str,
    memory: str | None = "4Gi",
    cores: int | None = None,
    owner: dict[str, Any] | None = None,
    count: int = 1,
) -> dict[str, Any]:
    requests: dict[str, Any] = {}
    if memory is not None:
        requests["memory"] = memory
    if cores is not None:
        requests["cores"] = str(cores)
    exactly: dict[str, Any] = {"deviceClassName": DRIVER, "count": count}
    if requests:
        exactly["capacity"] = {"requests": requests}
    meta: dict[str, Any] = {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": rv()}
    if owner is not None:
        meta["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}
        ]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": meta,
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}},
    }


def pod(
    name: str,
    claims: dict[str, str] | None = None,
    templates: dict[str, str | None] | None = None,
    gated: bool = True,
    annotations: dict[str, str] | None = None,
    node_name: str | None = None,
) -> dict[str, Any]:
    """``claims``: pod claim name -> ResourceClaim name; ``templates``: pod claim name -> generated claim name
    (None: not generated yet)."""
    resource_claims = [{"name": k, "resourceClaimName": v} for k, v in (claims or {}).items()]
    statuses = []
    for entry, generated in (templates or {}).items():
        resource_claims.append({"name": entry, "resourceClaimTemplateName": "tmpl"})
        if generated is not None:
            statuses.append({"name": entry, "resourceClaimName": generated})
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}],
        "resourceClaims": resource_claims,
    }
    if gated:
        spec["schedulingGates"] = [{"name": GATE}]
    if node_name:
        spec["nodeName"] = node_name
    status: dict[str, Any] = {"phase": "Pending"}
    if statuses:
        status["resourceClaimStatuses"] = statuses
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "resourceVersion": rv(),
            "annotations": dict(annotations or {}),
        },
        "spec": spec,
        "status": status,
    }


def view(
    nodes: Sequence[str] = ("n1",),
    pods: Sequence[dict[str, Any]] = (),
    claims: Sequence[dict[str, Any]] = (),
    profile: str = "a100x4",
) -> View:
    v = View()
    v.replace(NODES, [node(n) for n in nodes])
    v.replace(SLICES, [s for n in nodes for s in slices(n, profile)])
    v.replace(CLASSES, [device_class(DRIVER)])
    v.replace(CLAIMS, [copy.deepcopy(c) for c in claims])
    v.replace(PODS, [copy.deepcopy(p) for p in pods])
    return v


def allocated(claim_obj: dict[str, Any], allocation: dict[str, Any], scheduler: bool = False) -> dict[str, Any]:
    out = copy.deepcopy(claim_obj)
    out["metadata"]["resourceVersion"] = rv()
    out.setdefault("status", {})["allocation"] = copy.deepcopy(allocation)
    if scheduler:
        out["metadata"]["finalizers"] = ["resource.kubernetes.io/delete-protection"]
    return out


def allocation_on(node_name: str, device: str, memory: str = "4Gi", cores: str = "0", share: int = 99) -> dict:
    return {
        "devices": {
            "results": [
                {
                    "request": "gpu",
                    "driver": DRIVER,
                    "pool": node_name,
                    "device": device,
                    "shareID": f"00000000-0000-4000-8000-{share:012d}",
                    "consumedCapacity": {"memory": memory, "cores": cores, "shares": "1"},
                }
            ]
        },
        "nodeSelector": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}]
        },
        "allocationTimestamp": "2026-12-03T08:00:00Z",
    }
