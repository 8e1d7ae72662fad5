"""Pipelined writes (controller/pipeline.py): decisions made while earlier writes are in flight, against the
in-memory store with the API server's concurrency rules. The e2e bench runs the same on a real API server."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from controller_factories import NS, allocation_on, claim, pod, settings, view
from controller_store import StoreApi

from dra_hami.controller.leader import NotLeader
from dra_hami.controller.pipeline import InlinePipeline, WritePipeline
from dra_hami.controller.reconciler import Reconciler
from dra_hami.controller.view import CLAIMS
from dra_hami.kube.client import ApiError


class ManualPipeline:
    """Holds every job until the test lets it run: writes stay in flight as long as the test wants."""

    capacity = 1000

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], Any], Callable[[Any], None]]] = []

    @property
    def in_flight(self) -> int:
        return len(self.jobs)

    @property
    def full(self) -> bool:
        return False

    def submit(self, job: Callable[[], Any], done: Callable[[Any], None]) -> None:
        self.jobs.append((job, done))

    def run(self, order: list[int] | None = None) -> None:
        jobs, self.jobs = self.jobs, []
        for i in order if order is not None else range(len(jobs)):
            InlinePipeline().submit(*jobs[i])  # the same run-and-report as the unpipelined loop's

    def close(self) -> None:
        return None


def _setup(n: int, memory: str = "12Gi", nodes=("n1", "n2")) -> tuple[StoreApi, list[dict], list[dict]]:
    pods = [pod(f"p{i}", claims={"gpu": f"c{i}"}) for i in range(n)]
    claims = [claim(f"c{i}", memory) for i in range(n)]
    return StoreApi(claims, pods), pods, claims


def _reconciler(api: StoreApi, pods, claims, pipeline=None, nodes=("n1", "n2")) -> tuple[Reconciler, list[str]]:
    v = view(nodes=list(nodes), pods=list(api.pods.values()), claims=list(api.claims.values()))
    requeued: list[str] = []
    r = Reconciler(v, api, settings(), orphan_grace=0.0, pipeline=pipeline, requeue=requeued.append)
    return r, requeued


def _placements(api: StoreApi) -> dict[str, tuple[str, str]]:
    out = {}
    for key, c in api.claims.items():
        alloc = (c.get("status") or {}).get("allocation")
        if alloc:
            (result,) = alloc["devices"]["results"]
            out[key] = (result["pool"], result["device"])
    return out


def test_pipelined_placements_equal_the_one_at_a_time_loop() -> None:
    # 2 nodes x 4 GPUs of 40Gi, 12Gi claims: 3 per GPU, 24 fit; 30 pods, so the last ones are unplaceable.
    seq_api, pods, claims = _setup(30)
    seq, _ = _reconciler(seq_api, pods, claims)
    sequential = [seq.handle(f"{NS}/p{i}") for i in range(30)]

    api, pods, claims = _setup(30)
    manual = ManualPipeline()
    r, _ = _reconciler(api, pods, claims, pipeline=manual)
    pipelined = [r.handle(f"{NS}/p{i}") for i in range(30)]  # every decision made before any write landed
    assert api.writes == [] and manual.in_flight == 24
    manual.run(order=list(reversed(range(24))))  # answers in any order
    assert _placements(api) == _placements(seq_api) and len(_placements(api)) == 24
    assert pipelined.count("in-flight") == 24 and sequential.count("allocated") == 24
    assert [s for s in sequential if s != "allocated"] == [s for s in pipelined if s != "in-flight"]
    assert len(api.writes) == 48  # two writes per placed pod: claim status, gate removal
    assert not r.in_flight and r.metrics.decisions.labels("allocated")._value.get() == 24
    assert (
        r.view.claims[f"{NS}/c0"]["metadata"]["resourceVersion"]
        == api.claims[f"{NS}/c0"]["metadata"]["resourceVersion"]
    )  # the view holds the server's answers, not the assumptions


def test_a_conflicting_write_undoes_only_its_own_assumption_and_the_pod_is_decided_again() -> None:
    api, pods, claims = _setup(3, memory="40Gi", nodes=("n1",))  # one pod per GPU: 4 GPUs
    manual = ManualPipeline()
    r, requeued = _reconciler(api, pods, claims, pipeline=manual, nodes=("n1",))
    assert [r.handle(f"{NS}/p{i}") for i in range(3)] == ["in-flight"] * 3
    devices = {
        k: a["devices"]["results"][0]["device"]
        for k, c in r.view.claims.items()
        if (a := c["status"].get("allocation"))
    }
    assert sorted(devices.values()) == ["hami-gpu-0", "hami-gpu-1", "hami-gpu-2"]
    api.claims[f"{NS}/c1"]["metadata"]["labels"] = {"touched": "yes"}  # somebody else wrote c1 meanwhile
    api._bump(api.claims[f"{NS}/c1"])
    manual.run()
    assert requeued == [f"{NS}/p1"]
    assert "allocation" not in r.view.claims[f"{NS}/c1"].get("status", {})  # read back: not allocated
    assert r.view.claims[f"{NS}/c1"]["metadata"]["labels"] == {"touched": "yes"}
    assert r.metrics.decisions.labels("conflict")._value.get() == 1
    # Decided again, it takes the GPU its failed write had held (the others keep theirs).
    assert r.handle(f"{NS}/p1") == "in-flight"
    manual.run()
    assert _placements(api)[f"{NS}/c1"] == ("n1", devices[f"{NS}/c1"])
    assert len(set(_placements(api).values())) == 3


def test_a_pod_whose_claim_is_in_flight_waits_for_it() -> None:
    shared = claim("shared")
    first, second = pod("first", claims={"gpu": "shared"}), pod("second", claims={"gpu": "shared"})
    api = StoreApi([shared], [first, second])
    manual = ManualPipeline()
    r, requeued = _reconciler(api, [first, second], [shared], pipeline=manual, nodes=("n1",))
    assert r.handle(f"{NS}/first") == "in-flight"
    assert r.handle(f"{NS}/second") == "deferred"  # would otherwise lift its gate on a guess
    manual.run()
    assert requeued == [f"{NS}/second"]
    assert r.handle(f"{NS}/second") == "ungated"
    assert api.writes == [("allocate", f"{NS}/shared"), ("ungate", f"{NS}/first"), ("ungate", f"{NS}/second")]


def test_a_write_that_timed_out_is_read_back_before_its_capacity_counts_as_free() -> None:
    api, pods, claims = _setup(1, memory="40Gi", nodes=("n1",))
    manual = ManualPipeline()
    r, _ = _reconciler(api, pods, claims, pipeline=manual, nodes=("n1",))
    real = api.write_allocation

    def landed_but_timed_out(key, version, allocation):
        real(key, version, allocation)
        raise ApiError(0, "read timed out", "Timeout")

    api.write_allocation = landed_but_timed_out
    assert r.handle(f"{NS}/p0") == "in-flight"
    manual.run()
    assert r.view.claims[f"{NS}/c0"]["status"]["allocation"]  # it did land: the view knows from the read
    assert f"{NS}/p0" in r.unplaceable  # retried later: only the gate is left to lift
    api.write_allocation = real
    assert r.handle(f"{NS}/p0") == "ungated"


def test_lease_lost_in_flight_leaves_the_pod_to_the_leader() -> None:
    api, pods, claims = _setup(1, nodes=("n1",))
    manual = ManualPipeline()
    r, requeued = _reconciler(api, pods, claims, pipeline=manual, nodes=("n1",))

    def no_lease(*_args):
        raise NotLeader("the lease lapsed while a write was in flight")

    api.write_allocation = no_lease
    assert r.handle(f"{NS}/p0") == "in-flight"
    manual.run()
    assert requeued == [f"{NS}/p0"] and api.writes == []
    assert "allocation" not in r.view.claims[f"{NS}/c0"].get("status", {})
    assert f"{NS}/p0" not in r.view.assumed_nodes


def test_watch_event_newer_than_the_assumption_wins() -> None:
    api, pods, claims = _setup(1, nodes=("n1",))
    manual = ManualPipeline()
    r, _ = _reconciler(api, pods, claims, pipeline=manual, nodes=("n1",))
    assert r.handle(f"{NS}/p0") == "in-flight"
    theirs = copy.deepcopy(api.claims[f"{NS}/c0"])
    theirs["status"] = {"allocation": allocation_on("n1", "hami-gpu-3")}
    api.claims[f"{NS}/c0"] = theirs
    r.view.apply(CLAIMS, "MODIFIED", api._bump(theirs))  # another allocator won; its event came first
    manual.run()  # our write gets 409: nothing of ours is left in the view
    assert r.view.claims[f"{NS}/c0"]["status"]["allocation"]["devices"]["results"][0]["device"] == "hami-gpu-3"


def test_write_pipeline_bounds_the_writes_in_flight_and_hands_outcomes_back() -> None:
    delivered: list[Callable[[], None]] = []
    lock = threading.Lock()
    release = threading.Event()
    running = []

    def deliver(landed):
        with lock:
            delivered.append(landed)

    pipeline = WritePipeline(2, deliver)
    outcomes: list[Any] = []

    def job(i):
        def run():
            running.append(i)
            release.wait(5)
            if i == 2:
                raise ValueError("boom")
            return i

        return run

    for i in range(3):
        pipeline.submit(job(i), outcomes.append)
    assert pipeline.full and pipeline.in_flight == 3
    deadline = time.monotonic() + 5
    while len(running) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(running) == [0, 1]  # the third waits for a writer
    release.set()
    while len(delivered) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    for landed in list(delivered):
        landed()
    assert pipeline.in_flight == 0 and sorted(o for o in outcomes if isinstance(o, int)) == [0, 1]
    assert any(isinstance(o, ValueError) for o in outcomes)
    pipeline.close()
    with pytest.raises(ValueError, match="at least 1"):
        WritePipeline(0, deliver)


def test_a_clean_up_write_without_the_lease_does_not_stop_the_work_loop() -> None:
    api, _pods, _claims = _setup(1, nodes=("n1",))
    manual = ManualPipeline()
    leading = [True]
    v = view(nodes=["n1"], pods=list(api.pods.values()), claims=list(api.claims.values()))
    requeued: list[str] = []
    r = Reconciler(v, api, settings(), may_write=lambda: leading[0], pipeline=manual, requeue=requeued.append)
    api.gate_error = ApiError(403, "forbidden", "Forbidden")  # gate removal refused: its claims get released ...
    assert r.handle(f"{NS}/p0") == "in-flight"
    leading[0] = False  # ... but the lease is gone by then
    manual.run()  # must not raise into the work loop
    assert requeued == [f"{NS}/p0"]
