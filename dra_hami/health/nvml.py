"""GPU health from NVML: critical XID events (event set API) and a periodic probe for lost GPUs and recovery.

An XID makes the GPU unhealthy at once. It is healthy again when, for ``recovery_seconds`` after the last
critical XID, the probe passes: the GPU answers by UUID, reports its memory, and has no retired page or
remapped row waiting for a reset. A GPU that fell off the bus fails the probe (GPU_IS_LOST) until it is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from dra_hami.discovery.nvml import call_optional, init_nvml
from dra_hami.health.tracker import REASON_LOST, REASON_XID, HealthTracker

log = logging.getLogger(__name__)

# Application errors (bad kernels, page faults of the app, ...) say nothing about the GPU: the NVIDIA device
# plugin ignores the same list by default.
DEFAULT_IGNORED_XIDS = frozenset({13, 31, 43, 45, 68, 109})


def parse_xids(text: str) -> frozenset[int]:
    """'13,31, 43' -> {13, 31, 43}; raises ValueError naming the bad entry."""
    out = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) <= 0:
            raise ValueError(f"{part!r} is not an XID (a positive integer); give a comma-separated list like 13,31,43")
        out.add(int(part))
    return frozenset(out)


class NvmlHealthMonitor:
    def __init__(
        self,
        tracker: HealthTracker,
        nvml: ModuleType | Any | None = None,
        ignored_xids: frozenset[int] = DEFAULT_IGNORED_XIDS,
        recovery_seconds: float = 60.0,
        probe_interval: float = 10.0,
        wait_ms: int = 2000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._nvml = init_nvml(nvml, "device health: ")
        self._tracker = tracker
        self._ignored = ignored_xids
        self._recovery = recovery_seconds
        self._probe_interval = probe_interval
        self._wait_ms = wait_ms
        self._clock = clock
        self._last_xid: dict[str, float] = {}  # uuid -> monotonic time of the last critical XID
        self._event_set: Any = None
        self._no_events = False
        self._registered: set[str] = set()

    # -- events ---------------------------------------------------------------------------------------

    def register(self) -> None:
        """(Re-)register every known GPU for critical XID events; a GPU that cannot be registered is only probed."""
        nvml = self._nvml
        if self._event_set is None and not self._no_events:
            try:
                self._event_set = nvml.nvmlEventSetCreate()
            except nvml.NVMLError as err:
                self._no_events = True
                log.warning("NVML event sets unavailable (%s): device health relies on the periodic probe", err)
        if self._event_set is None:
            return
        for gpu in self._tracker.gpus:
            if gpu.uuid in self._registered:
                continue
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(gpu.uuid)
                nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, self._event_set)
                self._registered.add(gpu.uuid)
            except nvml.NVMLError as err:
                if getattr(err, "value", None) == nvml.NVML_ERROR_GPU_IS_LOST:
                    self._tracker.mark_unhealthy(gpu.uuid, REASON_LOST, f"GPU {gpu.uuid} is lost (NVML: {err})")
                else:
                    log.warning("GPU %s: no XID events (%s); health relies on the periodic probe", gpu.uuid, err)

    def wait_once(self) -> None:
        """Wait up to wait_ms for one event and apply it."""
        nvml = self._nvml
        if self._event_set is None:
            time.sleep(self._wait_ms / 1000)
            return
        try:
            data = nvml.nvmlEventSetWait_v2(self._event_set, self._wait_ms)
        except nvml.NVMLError as err:
            code = getattr(err, "value", None)
            if code == nvml.NVML_ERROR_TIMEOUT:
                return
            if code == nvml.NVML_ERROR_GPU_IS_LOST:
                log.warning("NVML event wait: a GPU is lost; probing all of them")
                self.probe()
                return
            log.warning("NVML event wait failed: %s", err)
            time.sleep(min(1.0, self._wait_ms / 1000))
            return
        self.on_event(data)

    def on_event(self, data: Any) -> None:
        nvml = self._nvml
        if not data.eventType & nvml.nvmlEventTypeXidCriticalError:
            return
        xid = int(data.eventData)
        try:
            uuid = _text(nvml.nvmlDeviceGetUUID(data.device))
        except nvml.NVMLError as err:
            log.warning("XID %d on a GPU whose UUID NVML cannot tell (%s); probing all GPUs", xid, err)
            self.probe()
            return
        if xid in self._ignored:
            log.info("GPU %s: XID %d (an application error, on the ignore list)", uuid, xid)
            return
        self._last_xid[uuid] = self._clock()
        self._tracker.mark_unhealthy(uuid, REASON_XID, f"critical XID {xid} on GPU {uuid}", xid)

    # -- probe ----------------------------------------------------------------------------------------

    def probe(self) -> None:
        """Check every GPU: lost ones become unhealthy; unhealthy ones that pass (and are quiet) recover."""
        now = self._clock()
        for gpu in self._tracker.gpus:
            failure = self._probe_failure(gpu.uuid)
            problem = self._tracker.problem(gpu.uuid)
            if failure is not None:
                lost, message = failure
                if lost:
                    self._tracker.mark_unhealthy(gpu.uuid, REASON_LOST, message)
                elif problem is not None and problem.reason == REASON_XID:
                    log.info("GPU %s still unhealthy: %s", gpu.uuid, message)
                continue
            if problem is None:
                continue
            quiet_since = self._last_xid.get(gpu.uuid)
            if problem.reason == REASON_XID and quiet_since is not None and now - quiet_since < self._recovery:
                continue
            self._last_xid.pop(gpu.uuid, None)
            self._registered.discard(gpu.uuid)  # a reset GPU needs registering again
            self._tracker.mark_healthy(gpu.uuid)

    def _probe_failure(self, uuid: str) -> tuple[bool, str] | None:
        """None when the GPU is fine; else (lost, why)."""
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
            nvml.nvmlDeviceGetMemoryInfo(handle)
        except nvml.NVMLError as err:
            code = getattr(err, "value", None)
            lost = code in (nvml.NVML_ERROR_GPU_IS_LOST, nvml.NVML_ERROR_NOT_FOUND)  # gone; others may be transient
            return lost, f"GPU {uuid} does not answer NVML ({err})"
        pending = self._optional("nvmlDeviceGetRetiredPagesPendingStatus", handle)
        if pending:
            return False, f"GPU {uuid} has retired pages waiting for a reset"
        rows = self._optional("nvmlDeviceGetRemappedRows", handle)
        if rows is not None and len(rows) >= 4 and (rows[2] or rows[3]):
            return False, f"GPU {uuid} has remapped rows pending or a row-remapping failure (reset it)"
        return None

    def _optional(self, function: str, *args: Any) -> Any:
        # any NVML error (not supported on this GPU, or not readable now) is not a health signal
        return call_optional(self._nvml, function, *args, any_error=True)

    # -- loop -----------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        next_probe = 0.0
        while not stop.is_set():
            try:
                if self._clock() >= next_probe:
                    self._tracker.refresh_inventory()
                    self.register()
                    self.probe()
                    next_probe = self._clock() + self._probe_interval
                self.wait_once()
            except Exception:  # health monitoring must outlive any single failure
                log.exception("device health loop failed; retrying")
                stop.wait(1.0)

    def close(self) -> None:
        if self._event_set is not None:
            try:
                self._nvml.nvmlEventSetFree(self._event_set)
            except self._nvml.NVMLError as err:
                log.debug("nvmlEventSetFree: %s", err)
            self._event_set = None


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
