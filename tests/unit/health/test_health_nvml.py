"""NVML health: critical XIDs, ignored XIDs, lost GPUs, and recovery only when quiet and the probe passes."""

from __future__ import annotations

import threading

import pynvml as real
import pytest
from health_fakes import EventNvml, Gpu

from dra_hami.discovery import FakeDiscovery
from dra_hami.health.nvml import DEFAULT_IGNORED_XIDS, NvmlHealthMonitor, parse_xids
from dra_hami.health.tracker import REASON_LOST, REASON_XID, HealthTracker

GPUS = FakeDiscovery.from_profile("t4x2").discover()
U0, U1 = GPUS[0].uuid, GPUS[1].uuid


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup(**nvml_kwargs) -> tuple[EventNvml, HealthTracker, NvmlHealthMonitor, Clock]:
    nvml = EventNvml([Gpu(U0), Gpu(U1)], **nvml_kwargs)
    tracker = HealthTracker(FakeDiscovery(GPUS))
    clock = Clock()
    monitor = NvmlHealthMonitor(tracker, nvml=nvml, recovery_seconds=60, clock=clock)
    monitor.register()
    return nvml, tracker, monitor, clock


def test_critical_xid_marks_unhealthy_and_ignored_ones_do_not() -> None:
    nvml, tracker, monitor, _ = setup()
    assert sorted(nvml.registered) == sorted([U0, U1])
    nvml.emit(U1, 13)  # an application's fault
    monitor.wait_once()
    assert tracker.problem(U1) is None
    nvml.emit(U1, 79)
    monitor.wait_once()
    problem = tracker.problem(U1)
    assert problem is not None and (problem.reason, problem.xid) == (REASON_XID, 79)
    assert tracker.problem(U0) is None
    monitor.wait_once()  # timeout: nothing happens
    assert tracker.problem(U1) is not None


def test_recovery_waits_for_quiet_time_and_a_clean_probe() -> None:
    nvml, tracker, monitor, clock = setup()
    nvml.emit(U0, 48)
    monitor.wait_once()
    clock.now += 30
    monitor.probe()
    assert tracker.problem(U0) is not None  # too soon
    nvml.gpus[U0].remapped = (0, 1, 1, 0)  # a row remap waits for a reset
    clock.now += 60
    monitor.probe()
    assert tracker.problem(U0) is not None
    nvml.gpus[U0].remapped = (0, 1, 0, 0)
    nvml.gpus[U0].retired_pending = 1
    monitor.probe()
    assert tracker.problem(U0) is not None
    nvml.gpus[U0].retired_pending = 0
    monitor.probe()
    assert tracker.problem(U0) is None
    monitor.register()  # a recovered GPU is registered again (a reset gives it a new handle)
    assert nvml.registered.count(U0) == 2


def test_a_new_xid_restarts_the_quiet_time() -> None:
    nvml, tracker, monitor, clock = setup()
    nvml.emit(U0, 48)
    monitor.wait_once()
    clock.now += 50
    nvml.emit(U0, 48)
    monitor.wait_once()
    clock.now += 50
    monitor.probe()
    assert tracker.problem(U0) is not None
    clock.now += 11
    monitor.probe()
    assert tracker.problem(U0) is None


def test_lost_gpu_from_probe_and_from_the_event_wait_and_its_return() -> None:
    nvml, tracker, monitor, _ = setup()
    nvml.gpus[U1].lost = True
    nvml.emit_error(real.NVML_ERROR_GPU_IS_LOST)
    monitor.wait_once()
    problem = tracker.problem(U1)
    assert problem is not None and problem.reason == REASON_LOST
    assert tracker.problem(U0) is None
    nvml.gpus[U1].lost = False
    monitor.probe()  # back on the bus: no quiet time for a lost GPU
    assert tracker.problem(U1) is None


def test_without_event_support_the_probe_still_works() -> None:
    nvml, tracker, monitor, _ = setup(event_sets=False)
    monitor.wait_once()  # sleeps instead of waiting on events
    nvml.gpus[U0].lost = True
    monitor.probe()
    assert tracker.problem(U0) is not None


def test_a_gpu_that_cannot_register_is_only_probed() -> None:
    nvml = EventNvml([Gpu(U0, register_error=real.NVML_ERROR_NOT_SUPPORTED), Gpu(U1)])
    tracker = HealthTracker(FakeDiscovery(GPUS))
    NvmlHealthMonitor(tracker, nvml=nvml).register()
    assert nvml.registered == [U1]


def test_run_loop_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml, tracker, monitor, _ = setup()
    nvml.emit(U0, 79)
    stop = threading.Event()
    thread = threading.Thread(target=monitor.run, args=(stop,))
    thread.start()
    deadline = threading.Event()
    for _ in range(100):
        if tracker.problem(U0) is not None:
            break
        deadline.wait(0.05)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert tracker.problem(U0) is not None


def test_parse_xids() -> None:
    assert parse_xids("13, 31,43") == frozenset({13, 31, 43})
    assert parse_xids("") == frozenset()
    assert parse_xids("13,31,43,45,68,109") == DEFAULT_IGNORED_XIDS
    with pytest.raises(ValueError, match="'x1' is not an XID"):
        parse_xids("13,x1")
