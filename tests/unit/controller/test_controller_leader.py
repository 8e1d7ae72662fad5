"""Lease-based leader election with a fake clock: acquire, renew, expire, take over, release."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from dra_hami.controller.leader import LeaderElector
from dra_hami.kube.client import ApiError


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return datetime(2026, 12, 3, 9, 0, tzinfo=UTC) + timedelta(seconds=self.t - 1000.0)


class Server:
    """One Lease with the API server's optimistic concurrency (resourceVersion)."""

    def __init__(self) -> None:
        self.lease: dict | None = None
        self.version = 0

    def read(self) -> dict | None:
        return copy.deepcopy(self.lease)

    def write(self, body: dict, create: bool) -> dict:
        if create and self.lease is not None:
            raise ApiError(409, "leases.coordination.k8s.io already exists", "AlreadyExists")
        if not create and body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise ApiError(409, "the object has been modified", "Conflict")
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)


def elector(name: str, clock: Clock) -> LeaderElector:
    return LeaderElector(name, lease_duration=15, renew_deadline=10, retry_period=2, clock=clock, wall=clock.wall)


def round_(e: LeaderElector, server: Server, lease: dict | None = None) -> bool:
    """One election round; ``lease`` overrides what is read (two candidates reading the same version)."""
    current = server.read() if lease is None else lease
    body = e.desired(current)
    if body is None:
        return False
    try:
        e.written(server.write(body, create=current is None))
    except ApiError:
        e.lost()
        return False
    return True


def test_first_candidate_creates_the_lease_and_leads() -> None:
    clock, server = Clock(), Server()
    a = elector("a", clock)
    assert not a.leading()
    assert round_(a, server)
    assert a.leading()
    spec = server.lease["spec"]
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["acquireTime"] == spec["renewTime"] == "2026-12-03T09:00:00.000000Z"
    assert spec["leaseTransitions"] == 0


def test_a_held_lease_is_not_taken_while_it_is_renewed() -> None:
    clock, server = Clock(), Server()
    a, b = elector("a", clock), elector("b", clock)
    round_(a, server)
    for _ in range(20):  # 40 s: a renews every 2 s, b never gets it
        clock.t += 2
        assert round_(a, server)
        assert not round_(b, server)
        assert a.leading() and not b.leading()
    assert server.lease["spec"]["holderIdentity"] == "a"
    assert server.lease["spec"]["renewTime"] == "2026-12-03T09:00:40.000000Z"


def test_leader_stops_acting_after_the_renew_deadline_before_anyone_can_take_over() -> None:
    clock, server = Clock(), Server()
    a, b = elector("a", clock), elector("b", clock)
    round_(a, server)
    round_(b, server)  # b observes the record at t=1000
    clock.t += 9.9
    assert a.leading()
    clock.t += 0.2
    assert not a.leading()  # 10.1 s without a renewal: a stands down ...
    assert not round_(b, server)  # ... while b still waits for the 15 s lease duration
    clock.t += 5
    assert round_(b, server)  # expired (15.1 s after b last saw it change): taken over
    assert b.leading()
    spec = server.lease["spec"]
    assert spec["holderIdentity"] == "b"
    assert spec["leaseTransitions"] == 1
    assert spec["acquireTime"] == "2026-12-03T09:00:15.100000Z"
    # a comes back: it must not take the lease back while b renews
    assert not round_(a, server)
    assert not a.leading()


def test_expiry_is_judged_by_when_we_saw_the_record_change_not_by_its_timestamps() -> None:
    """A holder whose clock is hours behind still renews its lease: b sees renewTime change and waits."""
    clock, server = Clock(), Server()
    a, b = elector("a", clock), elector("b", clock)
    a.wall = lambda: datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=clock.t)
    round_(a, server)
    for _ in range(10):
        clock.t += 5
        round_(a, server)
        assert not round_(b, server)


def test_two_candidates_deciding_on_the_same_version_cannot_both_win() -> None:
    clock, server = Clock(), Server()
    a, b = elector("a", clock), elector("b", clock)
    round_(a, server)
    stale = server.read()
    clock.t += 20  # a died; b and c both see the lease expired
    c = elector("c", clock)
    b.desired(stale)
    c.desired(stale)
    clock.t += 16
    assert round_(b, server, stale)
    assert not round_(c, server, stale)  # same resourceVersion: conflict
    assert b.leading() and not c.leading()
    assert server.lease["spec"]["holderIdentity"] == "b"


def test_conflict_while_leading_stops_acting_at_once() -> None:
    clock, server = Clock(), Server()
    a = elector("a", clock)
    round_(a, server)
    stale = server.read()
    server.lease["metadata"]["resourceVersion"] = "999"  # somebody else wrote it
    clock.t += 2
    assert not round_(a, server, stale)
    assert not a.leading()


def test_release_lets_a_successor_in_without_waiting_for_expiry() -> None:
    clock, server = Clock(), Server()
    a, b = elector("a", clock), elector("b", clock)
    round_(a, server)
    round_(b, server)
    body = a.released(server.read())
    assert body["spec"]["holderIdentity"] is None and body["spec"]["leaseDurationSeconds"] == 1
    server.write(body, create=False)
    assert not a.leading()
    clock.t += 2
    assert round_(b, server)
    assert b.released({"spec": {"holderIdentity": "someone"}}) is None


def test_bad_settings_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="--identity"):
        LeaderElector("")
    with pytest.raises(ValueError, match="renew deadline < lease duration"):
        LeaderElector("a", lease_duration=5, renew_deadline=10)


# ------------------------------------------------------------------ no double leadership with a slow API server


def test_a_slow_renewal_counts_from_when_it_was_sent() -> None:
    """Worked numbers: lease 15 s, renew deadline 10 s. A renewal sent at t=1000 answered at t=1004 leads until
    1010 (not 1014): a follower that saw the record at 1000 may take over at 1015, 5 s later."""
    clock, server = Clock(), Server()
    a = elector("a", clock)
    started = clock.t
    body = a.desired(server.read())
    clock.t += 4  # the API server took 4 s to answer
    a.written(server.write(body, create=True), started)
    clock.t = 1009.9
    assert a.leading()
    clock.t = 1010.0
    assert not a.leading()


def test_writes_are_bounded_by_what_the_lease_still_covers() -> None:
    clock, server = Clock(), Server()
    a = elector("a", clock)
    round_(a, server)  # renewed at 1000: others may lead from 1015
    assert a.margin == 5
    clock.t = 1003
    assert a.write_budget() == 12
    clock.t = 1009
    assert a.write_budget() == 6  # a write sent now must land by 1015
    clock.t = 1010
    assert a.write_budget() == 0  # not leading: no write at all
