"""The DRAResourceHealth stream: full device list per message, on change and as a heartbeat."""

from __future__ import annotations

import threading
import time

from dra_hami.discovery import FakeDiscovery
from dra_hami.health.service import HealthService, response
from dra_hami.health.tracker import REASON_XID, DeviceHealth, HealthTracker, Problem
from dra_hami.kubeletapi import dra_health_v1alpha1_pb2 as pb2

GPUS = FakeDiscovery.from_profile("t4x2").discover()


class Context:
    def __init__(self) -> None:
        self.callbacks: list = []
        self.active = True

    def add_callback(self, fn) -> None:
        self.callbacks.append(fn)

    def is_active(self) -> bool:
        return self.active

    def cancel(self) -> None:
        self.active = False
        for fn in self.callbacks:
            fn()


def test_response_shape_and_message_limit() -> None:
    devices = [
        DeviceHealth("hami-gpu-0", "GPU-a", None),
        DeviceHealth("hami-gpu-1", "GPU-b", Problem(REASON_XID, "x" * 2000, 1.0, 79)),
    ]
    out = response("node-a", devices, now=1700, timeout_seconds=60)
    a, b = out.devices
    assert (a.device.pool_name, a.device.device_name, a.health, a.message) == ("node-a", "hami-gpu-0", pb2.HEALTHY, "")
    assert (b.health, b.last_updated_time, b.health_check_timeout_seconds) == (pb2.UNHEALTHY, 1700, 60)
    assert len(b.message) == 1024 and b.message.endswith("...")


def test_stream_sends_changes_and_heartbeats_and_ends_on_cancel() -> None:
    tracker = HealthTracker(FakeDiscovery(GPUS))
    service = HealthService(tracker, "node-a", heartbeat=0.2)
    context = Context()
    stream = service.NodeWatchResources(pb2.NodeWatchResourcesRequest(), context)
    first = next(stream)
    assert [d.health for d in first.devices] == [pb2.HEALTHY, pb2.HEALTHY]
    started = time.monotonic()
    beat = next(stream)  # nothing changed: the same list again after the heartbeat
    assert 0.15 <= time.monotonic() - started < 5
    assert [d.health for d in beat.devices] == [pb2.HEALTHY, pb2.HEALTHY]
    threading.Timer(0.05, tracker.mark_unhealthy, args=(GPUS[1].uuid, REASON_XID, "XID 79", 79)).start()
    changed = next(stream)
    assert [d.health for d in changed.devices] == [pb2.HEALTHY, pb2.UNHEALTHY]
    threading.Timer(0.05, context.cancel).start()
    started = time.monotonic()
    assert list(stream) == []
    assert time.monotonic() - started < 1  # cancel wakes the waiting stream, no heartbeat wait
