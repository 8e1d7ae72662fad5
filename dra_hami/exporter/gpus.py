"""Physical per-GPU usage: from NVML on a GPU node, or derived from the claims' regions for fake GPUs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from dra_hami.discovery.model import GpuInfo
from dra_hami.discovery.nvml import init_nvml
from dra_hami.exporter.guard import GpuProcess

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuUsage:
    memory_used: int | None = None  # bytes in use on the card, all processes (None: could not read)
    memory_total: int | None = None
    utilization: int | None = None  # percent of time a kernel ran (NVML's GPU utilization)


class GpuStats(Protocol):
    def usage(self, gpu: GpuInfo, claims_used: int, claims_util: int) -> GpuUsage:
        """``claims_used`` / ``claims_util``: the sums over the claims' regions of this GPU (for fakes)."""
        ...


class FakeGpuStats:
    """Fake GPUs have no driver: the card holds what the claims charged, and is as busy as they are."""

    def usage(self, gpu: GpuInfo, claims_used: int, claims_util: int) -> GpuUsage:
        return GpuUsage(min(claims_used, gpu.memory_bytes), gpu.memory_bytes, min(claims_util, 100))


class NvmlGpuStats:
    """Two NVML queries per GPU per scrape (microseconds each); handles are cached by UUID."""

    def __init__(self, nvml: ModuleType | Any | None = None):
        self._nvml = init_nvml(nvml)
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._failing: set[str] = set()

    def usage(self, gpu: GpuInfo, claims_used: int, claims_util: int) -> GpuUsage:
        nvml = self._nvml
        try:
            with self._lock:
                handle = self._handles.get(gpu.uuid)
                if handle is None:
                    handle = self._handles[gpu.uuid] = nvml.nvmlDeviceGetHandleByUUID(gpu.uuid)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            used, total = int(memory.used), int(memory.total)
        except nvml.NVMLError as err:
            self._failed(gpu, err)
            with self._lock:
                self._handles.pop(gpu.uuid, None)  # a reset GPU gets a new handle
            return GpuUsage()
        utilization = None
        try:
            utilization = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except nvml.NVMLError as err:
            if getattr(err, "value", None) != getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", object()):
                self._failed(gpu, err)
                return GpuUsage(used, total, None)
        if gpu.uuid in self._failing:
            self._failing.discard(gpu.uuid)
            log.info("NVML answers for GPU %s again", gpu.uuid)
        return GpuUsage(used, total, utilization)

    def _failed(self, gpu: GpuInfo, err: Exception) -> None:
        if gpu.uuid not in self._failing:  # once per episode, not once per scrape
            self._failing.add(gpu.uuid)
            log.warning("NVML: cannot read the usage of GPU %s (%s): %s", gpu.device_name, gpu.uuid, err)


class NvmlProcesses:
    """The node guard's view of the driver: per-process memory from the compute and graphics process lists."""

    def __init__(self, nvml: ModuleType | Any | None = None):
        self._nvml = init_nvml(nvml, user="node guard: ")
        self._handles: dict[str, Any] = {}
        self._failing: set[str] = set()

    def processes(self, uuids: Iterable[str]) -> list[GpuProcess]:
        nvml = self._nvml
        out: list[GpuProcess] = []
        for uuid in uuids:
            try:
                handle = self._handles.get(uuid)
                if handle is None:
                    handle = self._handles[uuid] = nvml.nvmlDeviceGetHandleByUUID(uuid)
                used: dict[int, int] = {}
                for lister in (nvml.nvmlDeviceGetComputeRunningProcesses, nvml.nvmlDeviceGetGraphicsRunningProcesses):
                    for info in lister(handle):
                        # A process in both lists is one process; None: the driver does not say (MIG, WDDM).
                        used[int(info.pid)] = max(used.get(int(info.pid), 0), int(info.usedGpuMemory or 0))
            except nvml.NVMLError as err:
                self._handles.pop(uuid, None)
                if uuid not in self._failing:
                    self._failing.add(uuid)
                    log.warning("node guard: cannot list the processes of GPU %s: %s", uuid, err)
                continue
            if uuid in self._failing:
                self._failing.discard(uuid)
                log.info("node guard: NVML lists the processes of GPU %s again", uuid)
            out.extend(GpuProcess(pid, uuid, amount) for pid, amount in sorted(used.items()))
        return out
