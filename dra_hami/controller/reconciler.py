"""Carrying out the core's decisions for one pod: claim status writes, gate removal, conditions and events.

Every write is conditional (resourceVersion or a JSON-patch test), and every answer is fed back into the view
at once, so the next decision already counts what was just allocated. A conflict means somebody else changed
the object: re-read it and decide again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from dra_hami.kube import objects as k8s
from dra_hami.kube.client import ApiError

from . import pods as p
from .api import CONDITION_TYPE, ControllerApi
from .core import Allocate, Fail, Release, Settings, Ungate, Wait, decide, orphaned_allocations
from .leader import NotLeader  # raised before a write, or after one that completed when the lease had lapsed
from .metrics import ControllerMetrics
from .view import CLAIMS, DELETED, MODIFIED, PODS, View

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5  # decisions per pod per pass; each retry follows a conflict or a release


def transient(err: ApiError) -> bool:
    """Server unreachable, overloaded or failing: try again later rather than giving up on the pod."""
    return err.status in (0, 429) or err.status >= 500


class Reconciler:
    def __init__(
        self,
        view: View,
        api: ControllerApi,
        settings: Settings,
        metrics: ControllerMetrics | None = None,
        may_write: Callable[[], bool] = lambda: True,
        orphan_grace: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.view = view
        self.api = api
        self.settings = settings
        self.metrics = metrics or ControllerMetrics()
        self.may_write = may_write
        self.orphan_grace = orphan_grace
        self.clock = clock
        self.waiting: set[str] = set()  # pods waiting for claims to appear
        self.unplaceable: set[str] = set()  # pods to retry when capacity changes
        self._orphans_seen: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------ one pod

    def handle(self, pod_key: str) -> str:
        """Decide and act for one pod; returns what happened (a metrics result label, or skipped/gone)."""
        for _ in range(MAX_ATTEMPTS):
            pod = self.view.pods.get(pod_key)
            if pod is None:
                self.forget(pod_key)
                return "gone"
            started = time.perf_counter()
            decision = decide(self.view, pod, self.settings)
            decided = time.perf_counter()
            self.metrics.decision_seconds.observe(decided - started)
            if decision is None:
                self.forget(pod_key)
                return "skipped"
            if isinstance(decision, Wait):
                self.waiting.add(pod_key)
                self.metrics.count("waiting")
                log.debug("pod %s: %s", pod_key, decision.reason)
                return "waiting"
            self.waiting.discard(pod_key)
            self._require_lease()
            if isinstance(decision, Fail):
                self._fail(pod_key, pod, decision)
                return "unplaceable" if decision.waits_for_capacity else "invalid"
            if isinstance(decision, Release):
                log.info("pod %s: deallocating %s: %s", pod_key, ", ".join(decision.claims), decision.why)
                self._release(decision.claims)
                self.metrics.count("released")
                continue
            if isinstance(decision, Allocate):
                written = self._allocate(pod_key, decision)
                if written is None:
                    return "invalid"
                if not written:
                    self.metrics.count("conflict")
                    continue
                result = self._ungate(pod_key, decision.node_name, "allocated")
            else:
                assert isinstance(decision, Ungate)
                result = self._ungate(pod_key, decision.node_name, "ungated")
            if result == "retry":
                self.metrics.count("conflict")
                continue
            self.metrics.placement_seconds.observe(time.perf_counter() - decided)
            return result
        self.metrics.count("error")
        log.warning("pod %s: gave up after %d conflicting attempts; retrying later", pod_key, MAX_ATTEMPTS)
        self.unplaceable.add(pod_key)
        return "error"

    def forget(self, pod_key: str) -> None:
        self.waiting.discard(pod_key)
        self.unplaceable.discard(pod_key)

    def _require_lease(self) -> None:
        if not self.may_write():
            raise NotLeader

    # ------------------------------------------------------------------------------------------ writes

    def _allocate(self, pod_key: str, decision: Allocate) -> bool | None:
        """Write every claim's allocation: True done, False conflict (re-decide), None rejected for good."""
        written: list[str] = []
        for write in decision.writes:
            self._require_lease()
            try:
                answer = self.api.write_allocation(write.key, write.resource_version, write.allocation)
            except ApiError as err:
                if transient(err):
                    raise  # what is written stays; the next pass finishes the pod (half-done repair)
                if err.conflict or err.not_found:
                    self._refresh_claim(write.key)
                    log.info("pod %s: claim %s changed meanwhile (%s); deciding again", pod_key, write.key, err)
                    return False
                log.error("pod %s: the API server rejected the allocation of %s: %s", pod_key, write.key, err)
                self._release(tuple(written))
                pod = self.view.pods.get(pod_key)
                if pod is not None:
                    self._fail(pod_key, pod, Fail("AllocationRejected", f"ResourceClaim {write.key}: {err.message}"))
                return None
            self.view.apply(CLAIMS, MODIFIED, answer)
            written.append(write.key)
        for placed in decision.placement.claims:
            for kind in placed.task_kinds:
                self.view.demand.observe(kind)
        log.info(
            "pod %s: allocated %s on node %s (%s/%s)",
            pod_key,
            ", ".join(written),
            decision.node_name,
            decision.placement.policy.node,
            decision.placement.policy.gpu,
        )
        return True

    def _ungate(self, pod_key: str, node_name: str | None, result: str) -> str:
        pod = self.view.pods[pod_key]
        gate = self.settings.gate
        self._require_lease()
        try:
            answer = self.api.remove_gate(pod_key, p.gates(pod), gate)
        except ApiError as err:
            if transient(err):
                raise
            if err.not_found:
                self.view.apply(PODS, DELETED, pod)
                return "gone"  # its allocations are orphans now: the next sweep removes them
            if err.conflict or err.status == 422:
                fresh = self._refresh_pod(pod_key)
                if fresh is None or not p.has_gate(fresh, gate):
                    return result if fresh is not None else "gone"
                if p.gates(fresh) != p.gates(pod):
                    return "retry"  # somebody changed the other gates: test again with the new list
            log.error("pod %s: cannot remove scheduling gate %s: %s; deallocating its claims", pod_key, gate, err)
            mine = tuple(k for k in p.claim_keys(pod) if self._ours_unreserved(self.view.claims.get(k)))
            self._release(mine)
            self._fail(pod_key, pod, Fail("GateRemovalFailed", f"removing scheduling gate {gate}: {err.message}"))
            return "error"
        self.view.apply(PODS, MODIFIED, answer)
        if node_name:
            self.view.assume_pod_on(pod_key, node_name)
        self.forget(pod_key)
        if _condition(pod, CONDITION_TYPE).get("status") == "False":
            self._best_effort(
                lambda: self.api.set_condition(pod_key, "True", "Allocated", f"claims allocated on node {node_name}")
            )
        self.metrics.count(result)
        return result

    def _ours_unreserved(self, claim: dict[str, Any] | None) -> bool:
        return bool(
            claim
            and p.allocation(claim)
            and not p.reserved_for(claim)
            and not p.scheduler_owned(claim)
            and p.only_driver(claim, self.settings.driver)
        )

    def _release(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            claim = self.view.claims.get(key)
            if claim is None or not p.allocation(claim):
                continue
            self._require_lease()
            rv = k8s.resource_version(claim)
            try:
                answer = self.api.clear_allocation(key, rv)
            except ApiError as err:
                log.warning("deallocating ResourceClaim %s: %s", key, err)
                self._refresh_claim(key)
                continue
            self.view.apply(CLAIMS, MODIFIED, answer)

    def _fail(self, pod_key: str, pod: dict[str, Any], decision: Fail) -> None:
        self.unplaceable.add(pod_key)
        self.metrics.count("unplaceable" if decision.waits_for_capacity else "invalid")
        current = _condition(pod, CONDITION_TYPE)
        if (current.get("status"), current.get("reason"), current.get("message")) == (
            "False",
            decision.reason,
            decision.message,
        ):
            return  # already said: no event storm on every retry
        log.info("pod %s stays gated: %s: %s", pod_key, decision.reason, decision.message)
        answer = self._best_effort(lambda: self.api.set_condition(pod_key, "False", decision.reason, decision.message))
        if answer:
            self.view.apply(PODS, MODIFIED, answer)
        self._best_effort(lambda: self.api.record_event(pod, decision.reason, decision.message, warning=True))

    def _refresh_claim(self, key: str) -> None:
        try:
            self.view.apply(CLAIMS, MODIFIED, self.api.get_claim(key))
        except ApiError as err:
            if err.not_found and key in self.view.claims:
                self.view.apply(CLAIMS, DELETED, self.view.claims[key])

    def _refresh_pod(self, key: str) -> dict[str, Any] | None:
        try:
            fresh = self.api.get_pod(key)
        except ApiError as err:
            if err.not_found and key in self.view.pods:
                self.view.apply(PODS, DELETED, self.view.pods[key])
            return None
        self.view.apply(PODS, MODIFIED, fresh)
        return self.view.pods.get(key)

    @staticmethod
    def _best_effort(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ApiError as err:
            log.warning("status or event write failed (ignored): %s", err)
            return None

    # ------------------------------------------------------------------------------------------ orphans

    def sweep(self) -> list[str]:
        """Deallocate allocations of ours that no pod can bind to, once they stayed orphaned ``orphan_grace`` s.

        The grace covers watch streams that lag each other (a claim seen before the pod that uses it).
        """
        now = self.clock()
        orphans = orphaned_allocations(self.view, self.settings.driver)
        self._orphans_seen = {k: self._orphans_seen.get(k, now) for k in orphans}
        due = tuple(k for k, seen in self._orphans_seen.items() if now - seen >= self.orphan_grace)
        if due:
            self._require_lease()
            log.info("deallocating ResourceClaims no pod can use any more: %s", ", ".join(due))
            self._release(due)
            for key in due:
                self._orphans_seen.pop(key, None)
        return list(due)

    def next_sweep_in(self) -> float | None:
        """Seconds until the earliest orphan seen so far is due; None when there is none."""
        if not self._orphans_seen:
            return None
        return max(0.0, min(self._orphans_seen.values()) + self.orphan_grace - self.clock())


def _condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return {}
