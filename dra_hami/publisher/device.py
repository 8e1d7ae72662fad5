"""One GPU as a resource.k8s.io/v1 Device, exactly per docs/design/wire-contract.md (pure)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from dra_hami import wire
from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.discovery.model import GpuInfo
from dra_hami.publisher.policy import MAX_STRING, is_semver
from dra_hami.quantity import format_bytes

_VERSION = re.compile(r"^\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?((?:\.\d+)*)\s*$")


class PoolError(ValueError):
    """The configuration cannot be applied to this node's GPUs; the message names the field."""


def build_device(gpu: GpuInfo, config: PublisherConfig, taints: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    device = {
        "name": wire.device_name(gpu.minor),
        "allowMultipleAllocations": True,
        "attributes": attributes(gpu),
        "capacity": capacity(gpu, config),
    }
    if taints:  # an unhealthy GPU (dra_hami.health): new claims avoid it
        device["taints"] = taints
    return device


def attributes(gpu: GpuInfo) -> dict[str, dict[str, Any]]:
    """Unknown values are left out: an absent attribute fails a CEL selector, a wrong one matches wrongly."""
    values: dict[str, dict[str, Any] | None] = {
        "type": _string(wire.DEVICE_TYPE),
        "uuid": _string(gpu.uuid),
        "minor": {"int": gpu.minor},
        "index": {"int": gpu.index},
        "productName": _string(gpu.name),
        "brand": _string(gpu.brand),
        "architecture": _string(gpu.architecture),
        "cudaComputeCapability": _version(gpu.cuda_compute_capability),
        "driverVersion": _version(gpu.driver_version),
        "cudaDriverVersion": _version(gpu.cuda_driver_version),
        "pcieBusID": _string(gpu.pci_bus_id),
        "numaNode": None if gpu.numa_node is None else {"int": gpu.numa_node},
        # GPUs of one NVLink/NVSwitch domain share a group number: the topology policy aligns on it.
        "nvlinkGroup": None if gpu.nvlink_group is None else {"int": gpu.nvlink_group},
        wire.ATTR_PCIE_ROOT: _string(gpu.pcie_root),
        wire.ATTR_PCI_BUS_ID: _string(gpu.pci_bus_id),
    }
    return {key: value for key, value in values.items() if value is not None}


def capacity(gpu: GpuInfo, config: PublisherConfig) -> dict[str, dict[str, Any]]:
    memory = format_bytes(memory_capacity(gpu, config))
    step = format_bytes(wire.MEMORY_STEP)
    cores = str(wire.CORES_TOTAL)
    return {
        wire.CAPACITY_MEMORY: {
            "value": memory,
            # A claim that names no memory gets the whole card, like a HAMi pod asking for a whole GPU.
            "requestPolicy": {"default": memory, "validRange": {"min": step, "max": memory, "step": step}},
        },
        wire.CAPACITY_CORES: {
            "value": cores,
            # 0: no reservation and no SM cap (best effort), as with HAMi's device plugin.
            "requestPolicy": {"default": "0", "validRange": {"min": "0", "max": cores, "step": "1"}},
        },
        wire.CAPACITY_SHARES: {
            "value": str(config.split_count),
            "requestPolicy": {"default": "1", "validValues": ["1"]},
        },
    }


def memory_capacity(gpu: GpuInfo, config: PublisherConfig) -> int:
    """floor((total - reserved) * scaling / 1Mi) * 1Mi: max and default must sit on the 1Mi grid."""
    usable = gpu.memory_bytes - config.reserved_memory
    if usable <= 0:
        raise PoolError(
            f"reserved_memory ({config.reserved_memory} bytes) leaves nothing of GPU {gpu.uuid}'s "
            f"{gpu.memory_bytes} bytes"
        )
    # Decimal of the printed float, so 1.1 means 11/10 and not 1.100000000000000088...
    scaled = int(Decimal(usable) * Decimal(str(config.memory_scaling)))
    value = scaled // wire.MEMORY_STEP * wire.MEMORY_STEP
    if value < 2 * wire.MEMORY_STEP:  # the API wants min + step <= value
        raise PoolError(
            f"reserved_memory / memory_scaling leave GPU {gpu.uuid} less than 2Mi to advertise ({scaled} bytes)"
        )
    return value


def to_semver(text: str | None) -> str | None:
    """NVML versions as semver: '7.5' -> '7.5.0', '535.104.05' -> '535.104.5'; None when it cannot be."""
    if text is None:
        return None
    match = _VERSION.match(text)
    if not match:
        return None
    major, minor, patch, extra = match.groups()
    version = f"{int(major)}.{int(minor or 0)}.{int(patch or 0)}"
    if extra:  # a fourth component survives as build metadata, which ordering ignores
        version += "+" + ".".join(str(int(part)) for part in extra.strip(".").split("."))
    return version if is_semver(version) else None


def _string(value: str | None) -> dict[str, str] | None:
    return None if value is None or value == "" else {"string": value[:MAX_STRING]}


def _version(value: str | None) -> dict[str, str] | None:
    version = to_semver(value)
    return None if version is None else {"version": version}
