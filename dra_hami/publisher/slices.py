"""The node's pool as resource.k8s.io/v1 ResourceSlices, and our DeviceClass (pure: dicts in, dicts out)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from dra_hami import wire
from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.discovery.model import GpuInfo, sort_gpus
from dra_hami.publisher.device import build_device
from dra_hami.publisher.policy import PolicyError, check_device

API_VERSION = "resource.k8s.io/v1"
MANAGED_BY = "dra-hami"
LABELS = {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/component": "kubelet-plugin"}
MAX_NAME = 253
MAX_DEVICES_WITH_TAINTS = 64  # also when devices consume counters


def build_pool(
    gpus: Sequence[GpuInfo],
    config: PublisherConfig,
    generation: int,
    taints: Mapping[str, list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """Every slice of the node's pool at ``generation``; raises PoolError / PolicyError before anything is sent.

    A node without GPUs still publishes one empty slice, so consumers see the pool exists and is empty.
    ``taints``: device taints by device name (unhealthy GPUs).
    """
    if generation < 0:
        raise ValueError(f"generation {generation} is negative")
    taints = taints or {}
    devices = [build_device(gpu, config, taints.get(gpu.device_name)) for gpu in sort_gpus(list(gpus))]
    names = [device["name"] for device in devices]
    if len(set(names)) != len(names):
        raise PolicyError(f"two GPUs map to one device name: {sorted(names)}")
    for device in devices:
        check_device(device)
    chunks = _chunks(devices, _per_slice(devices, config)) or [[]]
    return [
        _slice(config, slice_name(config.node_name, config.driver_name, k), chunk, generation, len(chunks))
        for k, chunk in enumerate(chunks)
    ]


def slice_name(node_name: str, driver_name: str, k: int) -> str:
    """``<node>-<driver>-<k>``: fixed per node and position, so re-creating after a wipe is idempotent.

    Too long a name keeps its head and gets a hash of the full name, which stays unique and stable.
    """
    suffix = f"-{k}"
    base = f"{node_name}-{driver_name}"
    if len(base) + len(suffix) > MAX_NAME:
        digest = hashlib.sha256(base.encode()).hexdigest()[:10]
        head = base[: MAX_NAME - len(suffix) - len(digest) - 1].rstrip(".-")
        base = f"{head}-{digest}"
    return base + suffix


def device_class(driver_name: str = wire.DEFAULT_DRIVER_NAME) -> dict[str, Any]:
    """The DeviceClass users name in their claims; it selects only our hami-gpu devices."""
    return {
        "apiVersion": API_VERSION,
        "kind": "DeviceClass",
        "metadata": {"name": driver_name, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
        "spec": {"selectors": [{"cel": {"expression": wire.device_class_selector(driver_name)}}]},
    }


def pool_generation(slice_: dict[str, Any]) -> int:
    return int(((slice_.get("spec") or {}).get("pool") or {}).get("generation") or 0)


def _per_slice(devices: list[dict[str, Any]], config: PublisherConfig) -> int:
    limited = any(device.get("taints") or device.get("consumesCounters") for device in devices)
    return min(config.max_devices_per_slice, MAX_DEVICES_WITH_TAINTS) if limited else config.max_devices_per_slice


def _chunks(items: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _slice(
    config: PublisherConfig, name: str, devices: list[dict[str, Any]], generation: int, count: int
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if config.node_uid:
        # Garbage-collected with the Node, so a deleted node leaves no slices behind.
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": config.node_name, "uid": config.node_uid, "controller": True}
        ]
    return {
        "apiVersion": API_VERSION,
        "kind": "ResourceSlice",
        "metadata": metadata,
        "spec": {
            "driver": config.driver_name,
            "nodeName": config.node_name,
            "pool": {"name": config.node_name, "generation": generation, "resourceSliceCount": count},
            "devices": devices,
        },
    }
