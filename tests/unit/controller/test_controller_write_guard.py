"""The controller's writes under leader election: bounded by the lease, re-checked when they complete, and
the lease calls themselves bounded by the margin (worked numbers with a fake clock)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from controller_factories import settings

from dra_hami.controller.api import RawControllerApi
from dra_hami.controller.leader import LeaderElector, NotLeader
from dra_hami.controller.runtime import Controller, Options
from dra_hami.kube.client import ApiError, RawKubeApi


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Raw:
    """What RawKubeApi does for these calls, with a clock that the calls advance (a slow API server)."""

    timeout = 30.0

    def __init__(self, clock: Clock, takes: float = 0.0) -> None:
        self.clock, self.takes = clock, takes
        self.calls: list[tuple[str, str, float | None]] = []
        self.lease: dict[str, Any] | None = None

    def patch_object(self, path: str, patch: Any, kind: str = "merge", timeout: float | None = None) -> dict:
        self.calls.append(("PATCH", path, timeout))
        self.clock.t += self.takes
        return {"metadata": {"resourceVersion": "2"}}

    def get_object(self, path: str, timeout: float | None = None) -> dict:
        self.calls.append(("GET", path, timeout))
        self.clock.t += self.takes
        if self.lease is None:
            raise ApiError(404, "not found", "NotFound")
        return self.lease

    def create_object(self, path: str, body: dict, timeout: float | None = None) -> dict:
        self.calls.append(("POST", path, timeout))
        self.clock.t += self.takes
        self.lease = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}
        return self.lease

    def replace_object(self, path: str, body: dict, timeout: float | None = None) -> dict:
        return self.create_object(path, body, timeout)


def leader(clock: Clock) -> LeaderElector:
    e = LeaderElector("me", lease_duration=15, renew_deadline=10, retry_period=2, clock=clock)
    e.written({"spec": {"holderIdentity": "me"}}, started=clock.t)  # renewed at 1000
    return e


def test_an_allocation_write_times_out_within_the_lease() -> None:
    clock = Clock()
    e = leader(clock)
    raw = Raw(clock)
    api = RawControllerApi(raw, "me", write_budget=e.write_budget)  # type: ignore[arg-type]
    clock.t = 1007
    api.write_allocation("ns/c", "1", {"devices": {}})
    # 1015 - 1007 = 8 s left of the lease, below the 30 s API timeout
    assert raw.calls == [("PATCH", "/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/c/status", 8.0)]


def test_no_write_without_the_lease_and_a_write_that_outlived_it_stops_the_leader() -> None:
    clock = Clock()
    e = leader(clock)
    raw = Raw(clock, takes=4)
    api = RawControllerApi(raw, "me", write_budget=e.write_budget)  # type: ignore[arg-type]
    clock.t = 1007
    with pytest.raises(NotLeader, match="lapsed while a write was in flight"):
        api.remove_gate("ns/p", [{"name": "g"}], "g")  # sent at 1007, answered at 1011: no longer leading
    assert len(raw.calls) == 1
    with pytest.raises(NotLeader, match="does not cover"):
        api.clear_allocation("ns/c", "1")
    assert len(raw.calls) == 1  # nothing sent


def test_lease_calls_time_out_within_the_margin_and_a_slow_round_counts_from_its_start(monkeypatch) -> None:
    clock = Clock()
    raw = Raw(clock, takes=3)  # each lease call takes 3 s
    options = Options(settings=settings(), kubeconfig=None, identity="me", metrics_address="0", writes_in_flight=0)
    controller = Controller(options, api_factory=lambda: RawKubeApi(api_client=None))
    assert controller.elector is not None
    controller.elector.clock = clock
    controller.api.raw = raw  # type: ignore[assignment]
    stop = threading.Event()
    monkeypatch.setattr(stop, "wait", lambda _t=None: stop.set())  # one round
    controller._lead(stop)
    # read (404) at 1000..1003, create at 1003..1006: leading from 1000, so until 1010, not 1016
    assert [c[2] for c in raw.calls] == [5.0, 5.0]  # the margin lease_duration - renew_deadline, not 30 s
    assert controller.elector.leading()
    clock.t = 1010
    assert not controller.elector.leading()
