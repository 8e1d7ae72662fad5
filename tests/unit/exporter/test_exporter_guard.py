"""The node guard's judgement: attribution from unforgeable facts, events, the grace period and the kill.

Here the driver's process list is a stand-in and /proc is a table; test_exporter_guard_driver.py runs the
same guard against the real NVML bindings, the fake libnvidia-ml, real mount namespaces and cgroups.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from exporter_fixtures import GiB, claim_record
from test_exporter_collector import G0, G1, GPUS

from dra_hami.exporter.claims import prepared_claims
from dra_hami.exporter.guard import GpuProcess, GuardAction, NodeGuard, PidfdKiller, claim_mount
from dra_hami.exporter.procfs import MountEntry, ProcFs, parse_mountinfo, pod_uid_of_cgroup, start_time

POD_A, POD_B, POD_X = (f"{c * 8}-aaaa-4aaa-8aaa-{c * 12}" for c in "abc")


class Proc(ProcFs):
    """/proc as a table: pid -> (pod UID or None, mount entries, start time)."""

    def __init__(self) -> None:
        self.table: dict[int, tuple[str | None, list[MountEntry], int]] = {}

    def mounts(self, pid: int) -> list[MountEntry] | None:
        return self.table[pid][1] if pid in self.table else None

    def pod_uid(self, pid: int) -> str | None:
        return self.table[pid][0] if pid in self.table else None

    def start_time(self, pid: int) -> int | None:
        return self.table[pid][2] if pid in self.table else None


class Driver:
    def __init__(self) -> None:
        self.procs: list[GpuProcess] = []

    def processes(self, uuids):
        return [p for p in self.procs if p.uuid in set(uuids)]


class Killer:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.killed: list[int] = []

    def kill(self, pid: int, start: int | None) -> str:
        self.killed.append(pid)
        self.driver.procs = [p for p in self.driver.procs if p.pid != pid]  # the driver frees its memory
        return ""


class Events:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def emit(self, claim, reason, message):
        self.sent.append((claim.name, reason, message))


class Node:
    def __init__(self, tmp_path: Path, action: GuardAction = "event", grace: float = 30.0) -> None:
        self.root = tmp_path / "claims"
        self.records = [
            claim_record("uid-a", "a", [(G0.device_name, GiB, 0)], GPUS),
            claim_record("uid-b", "b", [(G0.device_name, 2 * GiB, 0), (G1.device_name, GiB, 0)], GPUS),
            claim_record("uid-admin", "admin", [(G1.device_name, None, 0)], GPUS),  # admin access: no cap
        ]
        for rec in self.records:
            (self.root / rec.uid).mkdir(parents=True)
        self.pods = {"uid-a": frozenset({POD_A}), "uid-b": frozenset({POD_B}), "uid-admin": frozenset()}
        self.proc, self.driver, self.events = Proc(), Driver(), Events()
        self.killer = Killer(self.driver)
        self.now = 0.0
        self.guard = NodeGuard(
            "node-a", action, grace, self.root, lambda: prepared_claims(self.records, GPUS),
            lambda c: self.pods[c.uid], self.driver, proc=self.proc, killer=self.killer, events=self.events,
            clock=lambda: self.now,
        )  # fmt: skip

    def mount(self, uid: str) -> MountEntry:
        m = claim_mount(self.root, uid)
        assert m is not None
        return MountEntry(m.device, m.root, f"/usr/local/vgpu/claims/{uid}")

    def run(self, pid: int, uuid: str, used: int, pod: str | None, claims: list[str], started: int = 1) -> None:
        self.proc.table[pid] = (pod, [self.mount(c) for c in claims], started)
        self.driver.procs.append(GpuProcess(pid, uuid, used))

    def metric(self, name: str) -> dict[tuple[str, ...], float]:
        return {tuple(s.labels.values()): s.value for f in self.guard.collect() for s in f.samples if s.name == name}


def test_a_process_that_bypasses_libvgpu_is_caught_and_reported(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.run(100, G0.uuid, 3 * GiB, POD_A, ["uid-a"])  # 3 GiB against claim a's 1 GiB, libvgpu never asked
    node.run(200, G0.uuid, GiB, POD_B, ["uid-b"])  # claim b is within its 2 GiB
    verdicts = {v.claims: v for v in node.guard.poll()}
    assert verdicts[("uid-a",)].over and verdicts[("uid-a",)].used == 3 * GiB
    assert not verdicts[("uid-b",)].over
    node.now = 100.0
    node.guard.poll()  # the same episode: one event, not one per poll
    assert [(n, r) for n, r, _ in node.events.sent] == [("a", "GpuMemoryOverLimit")]
    assert "3221225472 bytes on GPU" in node.events.sent[0][2] and "limit of 1073741824" in node.events.sent[0][2]
    labels = ("node-a", "default", "a", "uid-a", G0.uuid)
    assert node.metric("dra_hami_guard_claim_over_limit")[labels] == 1
    assert node.metric("dra_hami_guard_claim_memory_used_bytes")[labels] == 3 * GiB
    assert node.metric("dra_hami_guard_violations_total")[labels] == 1
    assert node.killer.killed == []  # action 'event' never kills
    assert node.metric("dra_hami_guard_processes")[("node-a", G0.uuid, "mount")] == 2


def test_kill_waits_for_the_grace_period_then_takes_the_largest_process(tmp_path: Path) -> None:
    node = Node(tmp_path, action="kill", grace=10.0)
    node.run(100, G0.uuid, GiB // 2, POD_A, ["uid-a"])
    node.run(101, G0.uuid, 2 * GiB, POD_A, ["uid-a"])  # the one that went over
    node.run(200, G0.uuid, GiB, POD_B, ["uid-b"])
    node.guard.poll()
    node.now = 9.9
    node.guard.poll()
    assert node.killer.killed == []
    node.now = 10.0
    node.guard.poll()
    assert node.killer.killed == [101]
    node.now = 15.0
    assert not any(v.over for v in node.guard.poll())  # back under: the episode ends, nothing else dies
    assert node.killer.killed == [101]
    assert [r for _, r, _ in node.events.sent] == ["GpuMemoryOverLimit", "GpuProcessKilled"]
    assert node.metric("dra_hami_guard_kills_total")[("node-a", "default", "a", "uid-a", G0.uuid)] == 1


def test_attribution_never_uses_what_the_tenant_controls(tmp_path: Path) -> None:
    node = Node(tmp_path, action="kill", grace=0.0)
    # A host process (no pod cgroup) sees every claim directory in the host's mount table: not a claim's.
    node.run(1, G0.uuid, 8 * GiB, None, ["uid-a", "uid-b"])
    # A pod that got a GPU outside any claim (no claim directory, a pod no claim reserves).
    node.run(2, G0.uuid, 4 * GiB, POD_X, [])
    # A process of claim b's pod that unmounted its claim directory: its cgroup still names the pod.
    node.run(3, G0.uuid, 3 * GiB, POD_B, [])
    verdicts = {v.claims: v for v in node.guard.poll()}
    assert set(verdicts) == {("uid-b",)} and verdicts[("uid-b",)].used == 3 * GiB
    assert node.killer.killed == [3]
    assert node.metric("dra_hami_guard_unattributed_memory_bytes")[("node-a", G0.uuid)] == 12 * GiB
    by = node.metric("dra_hami_guard_processes")
    assert by[("node-a", G0.uuid, "none")] == 2 and by[("node-a", G0.uuid, "cgroup")] == 1


def test_claims_seen_together_are_judged_together_and_admin_claims_never(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.run(1, G0.uuid, int(2.5 * GiB), POD_A, ["uid-a", "uid-b"])  # one process sees both claims on GPU 0
    node.run(2, G1.uuid, 14 * GiB, POD_B, ["uid-admin"])  # admin access: unlimited
    verdicts = {v.claims: v for v in node.guard.poll()}
    assert verdicts[("uid-a", "uid-b")].limit == 3 * GiB and not verdicts[("uid-a", "uid-b")].over
    assert verdicts[("uid-admin",)].limit is None and not verdicts[("uid-admin",)].over
    assert node.events.sent == []


def test_unprepared_claims_leave_the_metrics(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.run(100, G0.uuid, 3 * GiB, POD_A, ["uid-a"])
    node.guard.poll()
    node.records = [r for r in node.records if r.uid != "uid-a"]
    node.driver.procs = []
    node.guard.poll()
    assert node.metric("dra_hami_guard_violations_total") == {}
    assert node.metric("dra_hami_guard_claim_over_limit") == {}


def test_a_reused_pid_is_never_killed() -> None:
    proc = ProcFs()
    child = subprocess.Popen(["sleep", "60"])
    try:
        started = proc.start_time(child.pid)
        assert started is not None
        killer = PidfdKiller(proc)
        assert "another process" in killer.kill(child.pid, started + 1)
        assert child.poll() is None
        assert killer.kill(child.pid, started) == ""
        assert child.wait(10) == -9
        assert "ended" in killer.kill(child.pid, started)
    finally:
        child.kill()
        child.wait()


def test_proc_parsers() -> None:
    text = (
        "36 35 98:0 /usr/local/vgpu/claims/u1 /usr/local/vgpu/claims/u1 rw,noatime master:1 - ext4 /dev/root rw\n"
        "37 35 0:52 / /usr/local/vgpu/claims/with\\040space rw - tmpfs dra-hami-claim rw,size=8192k\n"
    )
    entries = parse_mountinfo(text)
    assert entries[0] == MountEntry("98:0", "/usr/local/vgpu/claims/u1", "/usr/local/vgpu/claims/u1")
    assert entries[1].mount_point == "/usr/local/vgpu/claims/with space" and entries[1].root == "/"
    systemd = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f2e3d4c_1111_4222_8333_444455556666.slice/cri-containerd-ab.scope\n"  # noqa: E501
    assert pod_uid_of_cgroup(systemd) == "1f2e3d4c-1111-4222-8333-444455556666"
    cgroupfs = "8:pids:/kubepods/besteffort/pod1f2e3d4c-1111-4222-8333-444455556666/0123abcd\n1:cpu:/\n"
    assert pod_uid_of_cgroup(cgroupfs) == "1f2e3d4c-1111-4222-8333-444455556666"
    assert pod_uid_of_cgroup("0::/system.slice/containerd.service\n") is None
    assert start_time("42 (a b) c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 0 0") == 123456


@pytest.mark.parametrize("action", ["sometimes"])
def test_bad_action_is_refused(tmp_path: Path, action: str) -> None:
    with pytest.raises(ValueError, match="choose one of off, event, kill"):
        NodeGuard("n", action, 1.0, tmp_path, list, lambda c: frozenset(), Driver())  # type: ignore[arg-type]


def test_poll_loop_survives_a_failing_poll(tmp_path: Path) -> None:
    import threading

    class Broken(Driver):
        def processes(self, uuids):
            raise RuntimeError("driver went away")

    node = Node(tmp_path)
    node.guard._source = Broken()
    stop = threading.Event()
    thread = threading.Thread(target=node.guard.run, args=(stop, 0.01))
    thread.start()
    deadline = time.monotonic() + 5
    while node.metric("dra_hami_guard_poll_errors_total").get(("node-a",), 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(5)
    assert node.metric("dra_hami_guard_poll_errors_total")[("node-a",)] >= 2


def test_events_go_to_the_claim_without_ever_blocking_the_guard(tmp_path: Path) -> None:
    import threading

    from dra_hami.exporter.guard import ApiEvents

    release = threading.Event()

    class SlowApi:
        def __init__(self) -> None:
            self.requests: list[tuple[str, str, dict]] = []

        def request(self, method: str, path: str, body: dict) -> dict:
            release.wait(10)  # an API server that does not answer
            self.requests.append((method, path, body))
            return {}

    api = SlowApi()
    events = ApiEvents(api, "node-a", backlog=2)
    claim = prepared_claims([claim_record("uid-a", "a", [(G0.device_name, GiB, 0)], GPUS, namespace="team")], GPUS)[0]
    started = time.monotonic()
    for _ in range(5):
        events.emit(claim, "GpuMemoryOverLimit", "over")
    assert time.monotonic() - started < 1  # queued, never waited for
    assert events.dropped >= 2  # beyond the backlog: dropped and counted, not piled up
    release.set()
    deadline = time.monotonic() + 5
    while len(api.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    method, path, body = api.requests[0]
    assert (method, path) == ("POST", "/api/v1/namespaces/team/events")
    assert body["involvedObject"] == {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "namespace": "team", "name": "a", "uid": "uid-a",
    }  # fmt: skip
    assert body["type"] == "Warning" and body["reason"] == "GpuMemoryOverLimit"


if TYPE_CHECKING:  # mypy (.ci/run) checks that each fake still has the shape of the Protocol it stands in for
    from dra_hami.exporter.guard import EventSink, ProcessSource
    from dra_hami.exporter.guard import Killer as _Killer

    _process_source: type[ProcessSource] = Driver
    _killer: type[_Killer] = Killer
    _event_sink: type[EventSink] = Events
