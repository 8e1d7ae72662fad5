"""Leader election on a coordination.k8s.io/v1 Lease: the pure rules (acquire, renew, expire), with injected clocks.

Like client-go's: expiry is judged by when *we* last saw the lease record change (local monotonic time), never
by comparing the holder's timestamps with our clock; a leader that has not renewed within ``renew_deadline``
stops acting before anybody else may take over (``lease_duration`` > ``renew_deadline``). Writes carry the
resourceVersion they were decided on, so two candidates cannot both win one round.

No double leadership, however slow the API server: a renewal counts from when its request *started* (a
follower sees the new record no earlier than that, so it cannot take over before start + lease_duration);
lease calls time out within the margin lease_duration - renew_deadline; and every write the leader makes must
land before start + lease_duration (``write_budget``), and is followed by a fresh look at ``leading``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

LEASE_API = "/apis/coordination.k8s.io/v1"


class NotLeader(Exception):
    """The lease does not (or no longer) cover a write: stop acting until it is renewed."""


def micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_path(namespace: str, name: str | None = None) -> str:
    base = f"{LEASE_API}/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


@dataclass
class LeaderElector:
    identity: str
    namespace: str = "kube-system"
    name: str = "dra-hami-controller"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _observed: tuple | None = None
    _observed_at: float = 0.0
    _renewed_at: float | None = None

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("--identity: must not be empty (set POD_NAME or pass --identity)")
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election: need 0 < retry period < renew deadline < lease duration")

    def leading(self) -> bool:
        """Whether we may act now: we renewed the lease within the renew deadline."""
        return self._renewed_at is not None and self.clock() - self._renewed_at < self.renew_deadline

    @property
    def margin(self) -> float:
        """Seconds between when we stop acting and when a follower may take over: the bound of any call."""
        return self.lease_duration - self.renew_deadline

    def write_budget(self) -> float:
        """Seconds a write started now may take and still land while no one else can lead; 0: do not write."""
        if not self.leading():
            return 0.0
        assert self._renewed_at is not None
        return max(0.0, self._renewed_at + self.lease_duration - self.clock())

    def desired(self, lease: dict[str, Any] | None) -> dict[str, Any] | None:
        """The Lease to write (create when ``lease`` is None, else update) to take or keep it; None: stand by."""
        now = self.clock()
        if lease is None:
            return self._claim(self._empty(), first=True)
        spec = lease.get("spec") or {}
        record = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            spec.get("acquireTime"),
            spec.get("leaseTransitions"),
        )
        if record != self._observed:
            self._observed, self._observed_at = record, now
        holder = spec.get("holderIdentity") or ""
        duration = spec.get("leaseDurationSeconds") or self.lease_duration
        if holder and holder != self.identity and now - self._observed_at < duration:
            return None  # another candidate holds it and has renewed recently enough
        return self._claim(lease, first=holder != self.identity)

    def written(self, lease: dict[str, Any], started: float | None = None) -> None:
        """Our write of ``desired`` was accepted: we lead until ``renew_deadline`` after ``started``, when the
        round's first request went out (the clock's reading then; None: now)."""
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return
        now = self.clock()
        self._renewed_at = now if started is None else min(started, now)
        self._observed = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            spec.get("acquireTime"),
            spec.get("leaseTransitions"),
        )
        self._observed_at = now

    def lost(self) -> None:
        """A write failed (conflict: somebody else wrote first): stop acting at once."""
        self._renewed_at = None

    def released(self, lease: dict[str, Any]) -> dict[str, Any] | None:
        """The Lease to write on shutdown so that a successor need not wait for expiry; None if not ours."""
        if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return None
        body = copy.deepcopy(lease)
        body["spec"]["holderIdentity"] = None
        body["spec"]["leaseDurationSeconds"] = 1
        body["spec"]["renewTime"] = micro_time(self.wall())
        self._renewed_at = None
        return body

    def _empty(self) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"leaseTransitions": 0},
        }

    def _claim(self, lease: dict[str, Any], first: bool) -> dict[str, Any]:
        body = copy.deepcopy(lease)
        spec = body.setdefault("spec", {})
        stamp = micro_time(self.wall())
        if first:
            had_holder = bool(spec.get("holderIdentity"))
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if had_holder else 0)
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = int(self.lease_duration)
        spec["renewTime"] = stamp
        return body
