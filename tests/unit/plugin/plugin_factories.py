"""Factories for claims as the API server returns them."""

from __future__ import annotations

import uuid
from typing import Any

DRIVER = "hami-core-gpu.project-hami.io"
NODE = "node-a"
GiB = 1 << 30


def result(
    device: str = "hami-gpu-0",
    request: str = "gpu",
    memory: str | None = "4Gi",
    cores: str | None = "30",
    share_id: str | None = "auto",
    **extra: Any,
) -> dict[str, Any]:
    consumed = {}
    if memory is not None:
        consumed["memory"] = memory
    if cores is not None:
        consumed["cores"] = cores
    consumed["shares"] = "1"
    out = {"request": request, "driver": DRIVER, "pool": NODE, "device": device, "consumedCapacity": consumed}
    if share_id:
        out["shareID"] = str(uuid.uuid4()) if share_id == "auto" else share_id
    out.update(extra)
    return out


def claim(
    results: list[dict[str, Any]] | None = None,
    config: list[dict[str, Any]] | None = None,
    reserved: bool = True,
    uid: str | None = None,
    name: str = "c1",
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if results is not None:
        status["allocation"] = {"devices": {"results": results, "config": config or []}}
    if reserved:
        status["reservedFor"] = [{"resource": "pods", "name": "p", "uid": "pod-uid"}]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "default", "uid": uid or str(uuid.uuid4())},
        "spec": {"devices": {"requests": [{"name": "gpu"}]}},
        "status": status,
    }


def vgpu_config(requests: list[str] | None = None, source: str = "FromClaim", **fields: Any) -> dict[str, Any]:
    params = {"apiVersion": "gpu.hami.io/v1alpha1", "kind": "VGpuConfig", **fields}
    entry: dict[str, Any] = {"source": source, "opaque": {"driver": DRIVER, "parameters": params}}
    if requests:
        entry["requests"] = requests
    return entry
