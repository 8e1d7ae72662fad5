"""The health of every GPU of the node: one place that monitors write and the slice publisher and the
kubelet's health stream read. Unhealthy is per GPU UUID, with the reason; everything else is healthy."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dra_hami.discovery.model import Discovery, DiscoveryError, GpuInfo

log = logging.getLogger(__name__)

REASON_XID = "xid"
REASON_LOST = "gpu-lost"


@dataclass(frozen=True)
class Problem:
    reason: str  # REASON_XID | REASON_LOST | another short word (fake events)
    message: str
    since: float  # Unix time the GPU became unhealthy (kept while the problem lasts)
    xid: int | None = None


@dataclass(frozen=True)
class DeviceHealth:
    device: str  # hami-gpu-<minor>
    uuid: str
    problem: Problem | None

    @property
    def healthy(self) -> bool:
        return self.problem is None


class HealthTracker:
    """Thread-safe; ``wait`` lets a stream block until the next change (or a heartbeat timeout)."""

    def __init__(self, discovery: Discovery, clock: Callable[[], float] = time.time):
        self._discovery = discovery
        self._clock = clock
        self._cond = threading.Condition()
        self._gpus: list[GpuInfo] = []
        self._problems: dict[str, Problem] = {}  # by UUID
        self._version = 0
        self._closed = False
        self._listeners: list[Callable[[], None]] = []
        self.refresh_inventory()

    # -- inventory ------------------------------------------------------------------------------------

    def refresh_inventory(self) -> list[GpuInfo]:
        """Re-discover; on failure keep the last inventory (a lost GPU can make NVML discovery fail)."""
        try:
            gpus = self._discovery.discover()
        except DiscoveryError as err:
            log.warning("GPU discovery failed, health keeps the last inventory: %s", err)
            with self._cond:
                return list(self._gpus)
        with self._cond:
            if [(g.uuid, g.device_name) for g in gpus] != [(g.uuid, g.device_name) for g in self._gpus]:
                self._gpus = gpus
                self._changed()
            return list(gpus)

    @property
    def gpus(self) -> list[GpuInfo]:
        with self._cond:
            return list(self._gpus)

    def device_of(self, uuid_or_name: str) -> GpuInfo | None:
        key = uuid_or_name.strip()
        with self._cond:
            for gpu in self._gpus:
                if key in (gpu.device_name, gpu.uuid) or key.lower() == gpu.uuid.lower():
                    return gpu
        return None

    # -- state changes --------------------------------------------------------------------------------

    def mark_unhealthy(self, uuid: str, reason: str, message: str, xid: int | None = None) -> bool:
        """Returns True when this changed what is reported (a repeat of the same problem changes nothing)."""
        with self._cond:
            have = self._problems.get(uuid)
            if have is not None and (have.reason, have.xid, have.message) == (reason, xid, message):
                return False
            since = have.since if have is not None else self._clock()
            self._problems[uuid] = Problem(reason, message, since, xid)
            self._changed()
        log.warning("GPU %s is unhealthy: %s", uuid, message)
        return True

    def mark_healthy(self, uuid: str) -> bool:
        with self._cond:
            if self._problems.pop(uuid, None) is None:
                return False
            self._changed()
        log.info("GPU %s is healthy again", uuid)
        return True

    def problem(self, uuid: str) -> Problem | None:
        with self._cond:
            return self._problems.get(uuid)

    def on_change(self, listener: Callable[[], None]) -> None:
        """``listener`` runs (outside the lock) after every change, e.g. to wake the slice publisher."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        self._version += 1
        self._cond.notify_all()
        listeners = list(self._listeners)
        # Called with the lock held; listeners must only signal (set an Event), never block.
        for listener in listeners:
            try:
                listener()
            except Exception:
                log.exception("health listener failed")

    # -- readers --------------------------------------------------------------------------------------

    def snapshot(self) -> tuple[int, list[DeviceHealth]]:
        with self._cond:
            return self._version, self._devices()

    def _devices(self) -> list[DeviceHealth]:
        return [DeviceHealth(g.device_name, g.uuid, self._problems.get(g.uuid)) for g in self._gpus]

    def problems_by_device(self) -> dict[str, Problem]:
        with self._cond:
            return {d.device: d.problem for d in self._devices() if d.problem is not None}

    def wait(
        self, seen_version: int, timeout: float, cancelled: threading.Event | None = None
    ) -> tuple[int, list[DeviceHealth], bool]:
        """Block until the version differs from ``seen_version``, ``timeout`` passes, ``cancelled`` is set
        (then call ``kick``) or the tracker is closed. Returns (version, devices, closed or cancelled)."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._version != seen_version or self._closed or (cancelled is not None and cancelled.is_set()),
                timeout,
            )
            done = self._closed or (cancelled is not None and cancelled.is_set())
            return self._version, self._devices(), done

    def kick(self) -> None:
        """Wake every waiter so it re-checks its ``cancelled`` event."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
