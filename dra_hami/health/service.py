"""The kubelet's v1alpha1.DRAResourceHealth service: one stream per kubelet connection, a full list of the
pool's devices on every change and as a heartbeat (the kubelet marks devices it stops hearing about Unknown)."""

from __future__ import annotations

import logging
import threading
import time

from dra_hami.health.tracker import DeviceHealth, HealthTracker
from dra_hami.kubeletapi import dra_health_v1alpha1_pb2 as pb2
from dra_hami.kubeletapi import dra_health_v1alpha1_pb2_grpc as pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "v1alpha1.DRAResourceHealth"
MAX_MESSAGE = 1024  # the kubelet truncates longer messages


def response(pool: str, devices: list[DeviceHealth], now: int, timeout_seconds: int) -> pb2.NodeWatchResourcesResponse:
    out = pb2.NodeWatchResourcesResponse()
    for device in devices:
        message = "" if device.problem is None else device.problem.message
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        out.devices.add(
            device=pb2.DeviceIdentifier(pool_name=pool, device_name=device.device),
            health=pb2.HEALTHY if device.healthy else pb2.UNHEALTHY,
            last_updated_time=now,
            health_check_timeout_seconds=timeout_seconds,
            message=message,
        )
    return out


class HealthService(pb2_grpc.DRAResourceHealthServicer):
    def __init__(self, tracker: HealthTracker, pool: str, heartbeat: float = 10.0, timeout_seconds: int = 60):
        self._tracker = tracker
        self._pool = pool
        self._heartbeat = heartbeat
        self._timeout_seconds = timeout_seconds

    def NodeWatchResources(self, request, context):
        cancelled = threading.Event()

        def on_done() -> None:
            cancelled.set()
            self._tracker.kick()

        context.add_callback(on_done)
        version, devices = self._tracker.snapshot()
        unhealthy = sum(not d.healthy for d in devices)
        log.info("kubelet watches device health (%d devices, %d unhealthy)", len(devices), unhealthy)
        while True:
            yield response(self._pool, devices, int(time.time()), self._timeout_seconds)
            version, devices, done = self._tracker.wait(version, self._heartbeat, cancelled)
            if done or not context.is_active():
                return
