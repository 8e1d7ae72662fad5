"""HAMi's metric names and label sets, so dashboards and alerts built for HAMi keep working.

Two name sets, chosen with ``--hami-metrics``: ``current`` (HAMi v2.10's ``hami_*`` names) and ``legacy``
(the names older HAMi emitted, which v2.10 keeps behind ``--legacy-metrics``). The node series (HAMi's
vGPU monitor) and the allocation series (HAMi's scheduler) are both served here, per node. Every series
carries HAMi's constant ``zone="vGPU"`` label.

Label sets are HAMi's exactly, so they cannot tell two claims apart: a series whose consumer is not known
is left out (never exported under empty pod labels, where two claims would collide or add up), and when
two claims of one container land on one GPU under the same labels, that key is left out and counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

CURRENT = "current"
LEGACY = "legacy"
CHOICES = {"both": (CURRENT, LEGACY), CURRENT: (CURRENT,), LEGACY: (LEGACY,), "none": ()}
ZONE = "vGPU"

# Row kinds and the fields each carries (label values are taken from these by name).
HOST = "host"  # per GPU, usage: node index uuid type | memory_used util
CONTAINER = "container"  # per container per GPU, usage: namespace pod container vindex uuid | used limit util
DEVICE = "device"  # per GPU, allocation: node uuid index type cores | total core_total memory shares ratio
ALLOCATED = "allocated"  # per container per GPU, allocation: namespace node pod cindex uuid | memory cores


@dataclass(frozen=True)
class Family:
    name: str
    names: str  # CURRENT or LEGACY
    kind: str
    value: str  # the row field it reports
    labels: tuple[tuple[str, str], ...]  # (HAMi label, row field), in HAMi's order; zone comes last
    help: str


def _f(name: str, names: str, kind: str, value: str, labels: str, help: str) -> Family:
    pairs = tuple(tuple(pair.split("=")) if "=" in pair else (pair, pair) for pair in labels.split())
    return Family(name, names, kind, value, pairs, help)  # type: ignore[arg-type]


_HOST_NEW = "node device_index=index device_uuid=uuid device_type=type"
_HOST_OLD = "nodeid=node deviceidx=index deviceuuid=uuid devicetype=type"
_CTR_NEW = "namespace pod container vdevice_index=vindex device_uuid=uuid"
_CTR_OLD = "podnamespace=namespace podname=pod ctrname=container vdeviceid=vindex deviceuuid=uuid"
_DEV_NEW = "node device_uuid=uuid device_index=index device_type=type"
_DEV_OLD = "nodeid=node deviceuuid=uuid deviceidx=index devicetype=type"
_DEV_CORES_NEW = "node device_uuid=uuid device_index=index device_cores=cores device_type=type"
_DEV_CORES_OLD = "nodeid=node deviceuuid=uuid deviceidx=index devicecores=cores devicetype=type"
_ALLOC_NEW = "namespace node pod container_index=cindex device_uuid=uuid"
_ALLOC_OLD = "podnamespace=namespace nodename=node podname=pod containeridx=cindex deviceuuid=uuid"

_RATIO_NEW = "node device_uuid=uuid device_index=index"
_RATIO_OLD = "nodeid=node deviceuuid=uuid deviceidx=index"
_USED = "GPU memory the container's claim holds (its processes, libvgpu's count)."
_LIMIT = "GPU memory limit of the container's claim (the card's memory when unlimited)."
_UTIL = "Share of the GPU's time the container's claim used, 0-100 (measured for capped claims)."
_CMEM = "GPU memory allocated to the container (its claim's allocation result)."
_CCORES = "GPU cores allocated to the container, percent."
_RATIO = "Allocated share of the GPU's memory, 0-1."

# fmt: off
FAMILIES: tuple[Family, ...] = (
    _f("hami_host_gpu_memory_used_bytes", CURRENT, HOST, "memory_used", _HOST_NEW, "GPU memory in use (NVML)."),
    _f("hami_host_gpu_utilization_ratio", CURRENT, HOST, "util", _HOST_NEW, "GPU core utilization, 0-100 (NVML)."),
    _f("HostGPUMemoryUsage", LEGACY, HOST, "memory_used", _HOST_OLD, "GPU memory in use (NVML)."),
    _f("HostCoreUtilization", LEGACY, HOST, "util", _HOST_OLD, "GPU core utilization, 0-100 (NVML)."),
    _f("hami_vgpu_memory_used_bytes", CURRENT, CONTAINER, "used", _CTR_NEW, _USED),
    _f("hami_vgpu_memory_limit_bytes", CURRENT, CONTAINER, "limit", _CTR_NEW, _LIMIT),
    _f("hami_container_device_memory_bytes", CURRENT, CONTAINER, "used", _CTR_NEW, _USED),
    _f("hami_container_device_utilization_ratio", CURRENT, CONTAINER, "util", _CTR_NEW, _UTIL),
    _f("vGPU_device_memory_usage_in_bytes", LEGACY, CONTAINER, "used", _CTR_OLD, _USED),
    _f("vGPU_device_memory_limit_in_bytes", LEGACY, CONTAINER, "limit", _CTR_OLD, _LIMIT),
    _f("Device_utilization_desc_of_container", LEGACY, CONTAINER, "util", _CTR_OLD, _UTIL),
    _f("hami_gpu_memory_limit_bytes", CURRENT, DEVICE, "total", _DEV_NEW, "GPU memory of the card."),
    _f("hami_gpu_core_limit_ratio", CURRENT, DEVICE, "core_total", _DEV_NEW, "Cores of the card (100)."),
    _f("hami_gpu_memory_allocated_bytes", CURRENT, DEVICE, "memory", _DEV_CORES_NEW, "GPU memory allocated."),
    _f("hami_gpu_shared_count", CURRENT, DEVICE, "shares", _DEV_NEW, "Allocations sharing the GPU."),
    _f("hami_gpu_core_allocated_ratio", CURRENT, DEVICE, "cores", _DEV_NEW, "GPU cores allocated, percent."),
    _f("hami_node_gpu_memory_allocated_ratio", CURRENT, DEVICE, "ratio", _RATIO_NEW, _RATIO),
    _f("GPUDeviceMemoryLimit", LEGACY, DEVICE, "total", _DEV_OLD, "GPU memory of the card."),
    _f("GPUDeviceCoreLimit", LEGACY, DEVICE, "core_total", _DEV_OLD, "Cores of the card (100)."),
    _f("GPUDeviceMemoryAllocated", LEGACY, DEVICE, "memory", _DEV_CORES_OLD, "GPU memory allocated."),
    _f("GPUDeviceSharedNum", LEGACY, DEVICE, "shares", _DEV_OLD, "Allocations sharing the GPU."),
    _f("GPUDeviceCoreAllocated", LEGACY, DEVICE, "cores", _DEV_OLD, "GPU cores allocated, percent."),
    _f("nodeGPUMemoryPercentage", LEGACY, DEVICE, "ratio", _RATIO_OLD, _RATIO),
    _f("hami_vgpu_memory_allocated_bytes", CURRENT, ALLOCATED, "memory", _ALLOC_NEW, _CMEM),
    _f("hami_vgpu_core_allocated_ratio", CURRENT, ALLOCATED, "cores", _ALLOC_NEW, _CCORES),
    _f("vGPUMemoryAllocated", LEGACY, ALLOCATED, "memory", _ALLOC_OLD, _CMEM),
    _f("vGPUCoreAllocated", LEGACY, ALLOCATED, "cores", _ALLOC_OLD, _CCORES),
)
# fmt: on

# Rows whose HAMi labels name a container: a key seen for two claims is ambiguous.
_KEYED = {CONTAINER: ("namespace", "pod", "container", "vindex", "uuid"),
          ALLOCATED: ("namespace", "node", "pod", "cindex", "uuid")}  # fmt: skip


def label_names(family: Family) -> list[str]:
    return [label for label, _ in family.labels] + ["zone"]


class HamiSeries:
    """Rows of one scrape -> HAMi's families. A row field that is None leaves that family's sample out."""

    def __init__(self, names: Iterable[str]):
        self._families = [f for f in FAMILIES if f.names in set(names)]
        self._rows: dict[str, list[dict[str, Any]]] = {HOST: [], CONTAINER: [], DEVICE: [], ALLOCATED: []}
        self._owners: dict[tuple, set[str]] = {}
        self.ambiguous: Counter[str] = Counter()  # by row kind

    def add(self, kind: str, owners: Iterable[str] = (), **fields: Any) -> None:
        """``owners``: the claim UIDs behind a container row (two or more: the key is ambiguous)."""
        if kind in _KEYED:
            key = (kind, *(fields[k] for k in _KEYED[kind]))
            self._owners.setdefault(key, set()).update(owners)
            fields["_key"] = key
        self._rows[kind].append(fields)

    def families(self) -> list[Metric]:
        out: list[Metric] = []
        dropped: set[tuple] = {key for key, owners in self._owners.items() if len(owners) > 1}
        self.ambiguous = Counter(key[0] for key in dropped)
        for family in self._families:
            metric = GaugeMetricFamily(family.name, family.help + " (HAMi-compatible)", labels=label_names(family))
            seen: set[tuple] = set()
            for row in self._rows[family.kind]:
                key = row.get("_key")
                if key in dropped:
                    continue
                value = row[family.value]
                if value is None:
                    continue
                values = [str(row[field]) for _, field in family.labels]
                if key is not None:  # one claim, several rows for one key (several results): first wins
                    if key in seen:
                        continue
                    seen.add(key)
                metric.add_metric([*values, ZONE], float(value))
            out.append(metric)
        return out
