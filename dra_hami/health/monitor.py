"""Device health of the kubelet plugin, assembled: tracker + the monitor for the backend in use."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dra_hami.discovery.model import Discovery, DiscoveryError, GpuInfo
from dra_hami.health.fake import FakeHealthSource
from dra_hami.health.nvml import DEFAULT_IGNORED_XIDS, NvmlHealthMonitor
from dra_hami.health.taints import device_taints
from dra_hami.health.tracker import HealthTracker

log = logging.getLogger(__name__)


class LastKnownDiscovery:
    """Discovery for the publisher: when NVML discovery fails while a GPU is unhealthy (a GPU that fell off
    the bus can fail it), publish the last inventory, with the taint, rather than nothing new."""

    def __init__(self, discovery: Discovery, tracker: HealthTracker):
        self._discovery = discovery
        self._tracker = tracker

    def discover(self) -> list[GpuInfo]:
        try:
            return self._discovery.discover()
        except DiscoveryError as err:
            gpus = self._tracker.gpus
            if gpus and self._tracker.problems_by_device():
                log.warning("GPU discovery failed while a GPU is unhealthy; publishing the last inventory: %s", err)
                return gpus
            raise


class DeviceHealth:
    """What the plugin wires: ``taints()`` for the publisher, ``tracker`` for the gRPC stream, ``run`` to monitor."""

    def __init__(self, driver_name: str, tracker: HealthTracker, run: Callable[[threading.Event], None], close=None):
        self.driver_name = driver_name
        self.tracker = tracker
        self._run = run
        self._close = close

    def taints(self) -> dict[str, list[dict[str, Any]]]:
        return {
            device: device_taints(self.driver_name, problem)
            for device, problem in self.tracker.problems_by_device().items()
        }

    def run(self, stop: threading.Event) -> None:
        try:
            self._run(stop)
        finally:
            self.tracker.close()
            if self._close is not None:
                self._close()


def build(
    driver_name: str,
    discovery: Discovery,
    fake: bool,
    fake_health_file: Path | None,
    ignored_xids: frozenset[int] = DEFAULT_IGNORED_XIDS,
    recovery_seconds: float = 60.0,
) -> DeviceHealth:
    tracker = HealthTracker(discovery)
    if fake:
        if fake_health_file is None:
            raise ValueError("fake GPUs need a health file to inject events from (--fake-health-file)")
        source = FakeHealthSource(tracker, fake_health_file, ignored_xids)
        log.info("fake device health: edit %s to inject XIDs or lost GPUs", fake_health_file)
        return DeviceHealth(driver_name, tracker, source.run)
    monitor = NvmlHealthMonitor(tracker, ignored_xids=ignored_xids, recovery_seconds=recovery_seconds)
    return DeviceHealth(driver_name, tracker, monitor.run, monitor.close)
