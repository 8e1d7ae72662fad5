"""PCI topology NVML does not give: the NUMA node and the PCIe root complex, read from sysfs."""

from __future__ import annotations

import os
import re
from pathlib import Path

# The first path component under /sys/devices that names a host bridge: "pci0000:3a", "pci10000:00".
_ROOT = re.compile(r"^pci[0-9a-f]{4,8}:[0-9a-f]{2}$")


def numa_node(bus_id: str, sysfs_root: Path = Path("/sys")) -> int | None:
    """The kernel writes -1 when the platform has no NUMA information."""
    try:
        value = int((sysfs_root / "bus/pci/devices" / bus_id / "numa_node").read_text().strip())
    except (OSError, ValueError):
        return None
    return value if value >= 0 else None


def pcie_root(bus_id: str, sysfs_root: Path = Path("/sys")) -> str | None:
    """``/sys/bus/pci/devices/<id>`` links to ``/sys/devices/pci0000:3a/.../<id>``; the root is that first hop."""
    link = sysfs_root / "bus/pci/devices" / bus_id
    if not link.exists():
        return None
    for part in Path(os.path.realpath(link)).parts:
        if _ROOT.match(part):
            return part
    return None
