"""The tracker, the taints it turns into, the fake event file, and the publisher following health changes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from health_fakes import Slices

from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.discovery import FakeDiscovery
from dra_hami.discovery.model import DiscoveryError
from dra_hami.health import monitor as health_monitor
from dra_hami.health.fake import FakeHealthError, FakeHealthSource, parse
from dra_hami.health.taints import device_taints, taint_value, time_added
from dra_hami.health.tracker import REASON_LOST, REASON_XID, HealthTracker, Problem
from dra_hami.publisher.publisher import SlicePublisher

DRIVER = "hami-core-gpu.project-hami.io"
GPUS = FakeDiscovery.from_profile("t4x2").discover()
G0, G1 = GPUS


class FlakyDiscovery:
    def __init__(self) -> None:
        self.fail = False

    def discover(self):
        if self.fail:
            raise DiscoveryError("NVML: GPU 1: cannot read its UUID: GPU is lost")
        return list(GPUS)


def test_mark_wait_and_listeners() -> None:
    tracker = HealthTracker(FakeDiscovery(GPUS), clock=lambda: 1234.9)
    pokes = []
    tracker.on_change(lambda: pokes.append(1))
    version, devices = tracker.snapshot()
    assert [d.healthy for d in devices] == [True, True]
    assert tracker.mark_unhealthy(G1.uuid, REASON_XID, "critical XID 79", 79)
    assert not tracker.mark_unhealthy(G1.uuid, REASON_XID, "critical XID 79", 79)  # a repeat changes nothing
    new_version, devices, done = tracker.wait(version, timeout=0)
    assert new_version != version and not done
    assert [d.device for d in devices if not d.healthy] == [G1.device_name]
    assert tracker.problems_by_device() == {G1.device_name: Problem(REASON_XID, "critical XID 79", 1234.9, 79)}
    assert tracker.mark_healthy(G1.uuid) and not tracker.mark_healthy(G1.uuid)
    assert len(pokes) == 2
    # wait: times out without a change, wakes on cancel and on close
    v, _ = tracker.snapshot()
    assert tracker.wait(v, timeout=0.01)[0] == v
    cancelled = threading.Event()
    cancelled.set()
    assert tracker.wait(v, timeout=10, cancelled=cancelled)[2]
    tracker.close()
    assert tracker.wait(v, timeout=10)[2]


def test_problem_keeps_its_start_time_and_inventory_survives_a_failed_discovery() -> None:
    times = iter([100.0, 200.0])
    discovery = FlakyDiscovery()
    tracker = HealthTracker(discovery, clock=lambda: next(times))
    tracker.mark_unhealthy(G0.uuid, REASON_XID, "XID 48", 48)
    tracker.mark_unhealthy(G0.uuid, REASON_XID, "XID 94", 94)
    problem = tracker.problem(G0.uuid)
    assert problem is not None and (problem.since, problem.xid) == (100.0, 94)
    discovery.fail = True
    assert tracker.refresh_inventory() == GPUS
    assert tracker.device_of(G1.uuid.upper()) == G1 and tracker.device_of(G1.device_name) == G1


def test_taints() -> None:
    xid = Problem(REASON_XID, "critical XID 79", 1_800_000_000.7, 79)
    assert device_taints(DRIVER, xid) == [
        {"key": f"{DRIVER}/unhealthy", "value": "xid-79", "effect": "NoSchedule", "timeAdded": "2027-01-15T08:00:00Z"}
    ]
    assert device_taints(DRIVER, None) == []
    assert taint_value(Problem(REASON_LOST, "gone", 0)) == "gpu-lost"
    assert taint_value(Problem("weird reason!/x" * 10, "", 0)) == ("weird-reason-x" * 10)[:63].strip("-")
    assert time_added(0) == "1970-01-01T00:00:00Z"


def test_fake_file_injects_and_recovers(tmp_path: Path) -> None:
    tracker = HealthTracker(FakeDiscovery(GPUS))
    path = tmp_path / "fake-health.yaml"
    source = FakeHealthSource(tracker, path, ignored_xids=frozenset({13}))
    source.poll()
    assert not tracker.problems_by_device()
    path.write_text(f"hami-gpu-0: {{xid: 13}}\n{G1.uuid}: {{reason: gpu-lost, message: fell off the bus}}\n")
    source.poll()
    assert tracker.problems_by_device() == {G1.device_name: tracker.problem(G1.uuid)}  # XID 13 is ignored
    problem = tracker.problem(G1.uuid)
    assert problem is not None and (problem.reason, problem.message) == ("gpu-lost", "fell off the bus")
    path.write_text("hami-gpu-0: {xid: 79}\n")
    source.poll()
    assert set(tracker.problems_by_device()) == {G0.device_name}
    path.write_text("hami-gpu-0: [not, a, mapping]\n")
    source.poll()  # a broken file is reported and ignored: the state stays as it was
    assert set(tracker.problems_by_device()) == {G0.device_name}
    path.unlink()
    source.poll()
    assert not tracker.problems_by_device()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (["hami-gpu-0"], "expected a mapping"),
        ({"hami-gpu-0": {"xid": "79"}}, "hami-gpu-0.xid: '79' is not a positive integer"),
        ({"hami-gpu-0": {"xid": 79, "colour": "red"}}, "hami-gpu-0: expected"),
    ],
)
def test_fake_file_errors_name_the_entry(raw: object, message: str) -> None:
    with pytest.raises(FakeHealthError, match=message):
        parse(raw, "f.yaml")


def publisher_with_health(slices: Slices, discovery=None):
    tracker = HealthTracker(discovery or FakeDiscovery(GPUS), clock=lambda: 1_800_000_000.0)
    health = health_monitor.DeviceHealth(DRIVER, tracker, run=lambda stop: None)
    config = PublisherConfig(node_name="node-a", driver_name=DRIVER)
    publisher = SlicePublisher(
        slices,
        health_monitor.LastKnownDiscovery(discovery or FakeDiscovery(GPUS), tracker),
        config,
        taints=health.taints,
    )
    tracker.on_change(publisher.poke)
    return tracker, publisher


def test_publisher_taints_and_untaints_the_device() -> None:
    slices = Slices()
    tracker, publisher = publisher_with_health(slices)
    publisher.reconcile()
    assert slices.taints() == {G0.device_name: [], G1.device_name: []}
    tracker.mark_unhealthy(G1.uuid, REASON_XID, "critical XID 79", 79)
    assert publisher._wake.is_set()  # the publisher is woken at once
    assert publisher.reconcile().changed
    assert [t["value"] for t in slices.taints()[G1.device_name]] == ["xid-79"]
    writes = slices.writes
    assert not publisher.reconcile().changed and slices.writes == writes  # stored taint compares equal
    tracker.mark_healthy(G1.uuid)
    assert publisher.reconcile().changed
    assert slices.taints()[G1.device_name] == []


def test_publisher_keeps_a_lost_gpu_published_with_its_taint() -> None:
    slices = Slices()
    discovery = FlakyDiscovery()
    tracker, publisher = publisher_with_health(slices, discovery)
    publisher.reconcile()
    discovery.fail = True
    tracker.mark_unhealthy(G1.uuid, REASON_LOST, "GPU is lost")
    publisher.reconcile()
    assert [t["value"] for t in slices.taints()[G1.device_name]] == ["gpu-lost"]


def test_publisher_stops_sending_taints_a_server_drops(caplog: pytest.LogCaptureFixture) -> None:
    slices = Slices(drop_taints=True)
    tracker, publisher = publisher_with_health(slices)
    publisher.reconcile()
    tracker.mark_unhealthy(G1.uuid, REASON_XID, "critical XID 79", 79)
    publisher.reconcile()
    assert "DRADeviceTaints" in caplog.text
    writes = slices.writes
    for _ in range(3):
        assert not publisher.reconcile().changed
    assert slices.writes == writes  # no rewrite loop


if TYPE_CHECKING:  # mypy (.ci/run) checks that each fake still has the shape of the Protocol it stands in for
    from dra_hami.discovery.model import Discovery

    _discovery: type[Discovery] = FlakyDiscovery
