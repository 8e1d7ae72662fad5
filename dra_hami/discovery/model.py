"""What discovery knows about one physical GPU, and the interface every backend implements."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from dra_hami import wire


class DiscoveryError(RuntimeError):
    """GPUs could not be discovered (NVML missing, a broken fake profile, a GPU that stopped answering)."""


@dataclass(frozen=True)
class GpuInfo:
    """One physical GPU. ``None`` means the backend could not tell; the publisher then omits the attribute.

    Identity is the minor number (``/dev/nvidia<minor>``): it is fixed by the driver for the life of the
    node, unlike the NVML index, which follows enumeration order and can shift when a GPU disappears.
    """

    uuid: str
    minor: int
    index: int
    name: str  # NVML product name, e.g. "Tesla T4"
    memory_bytes: int
    pci_bus_id: str  # normalised: "0000:3b:00.0"
    brand: str | None = None
    architecture: str | None = None
    cuda_compute_capability: str | None = None  # "7.5"
    driver_version: str | None = None  # "550.54.15"
    cuda_driver_version: str | None = None  # "12.9"
    numa_node: int | None = None
    pcie_root: str | None = None  # "pci0000:3a"
    nvlink_group: int | None = None  # GPUs with the same number reach each other over NVLink
    sm_count: int | None = None

    @property
    def device_name(self) -> str:
        return wire.device_name(self.minor)


class Discovery(Protocol):
    def discover(self) -> list[GpuInfo]:
        """Every GPU of the node, sorted by PCI bus id; raises DiscoveryError."""
        ...


def sort_gpus(gpus: list[GpuInfo]) -> list[GpuInfo]:
    """PCI order, the order CUDA uses with CUDA_DEVICE_ORDER=PCI_BUS_ID."""
    return sorted(gpus, key=lambda gpu: pci_sort_key(gpu.pci_bus_id))


def pci_sort_key(bus_id: str) -> tuple[int, ...]:
    """Numeric, so a domain wider than four digits still sorts after the short ones."""
    return tuple(int(part, 16) for part in re.split(r"[:.]", bus_id))


def check_unique(gpus: list[GpuInfo], source: str) -> None:
    """Two GPUs with one minor, UUID or bus id would publish one device name twice."""
    for field in ("minor", "uuid", "pci_bus_id"):
        seen: set[object] = set()
        for gpu in gpus:
            value = getattr(gpu, field)
            if value in seen:
                raise DiscoveryError(f"{source}: two GPUs have {field} {value!r}")
            seen.add(value)
