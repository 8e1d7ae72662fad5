"""Carrying out the core's decisions for one pod: claim status writes, gate removal, conditions and events.

Every write is conditional (resourceVersion or a JSON-patch test), and every answer is fed back into the view
at once, so the next decision already counts what was just allocated. A conflict means somebody else changed
the object: re-read it and decide again.

With a write pipeline (pipeline.py) an allocation is put into the view when it is decided (the claims with
their allocation, the pod's cpu/memory on its node) and its two writes (claim status, gate removal) run on a
writer thread while the next pod is decided; so every decision sees exactly what it would see had the writes
before it already landed, and the placements are those of the one-at-a-time loop as long as the writes
succeed. A failed write undoes its own assumption only (pods decided meanwhile counted that capacity as
taken, which can only have left them more room, never less); a pod whose claims are still in flight is not
decided until they land.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from dra_hami.kube import objects as k8s
from dra_hami.kube.client import ApiError

from . import pods as p
from .api import CONDITION_TYPE, ControllerApi
from .core import Allocate, Fail, Release, Settings, Ungate, Wait, decide, orphaned_allocations
from .leader import NotLeader  # raised before a write, or after one that completed when the lease had lapsed
from .metrics import ControllerMetrics
from .pipeline import InlinePipeline, Outcome, WritePipeline
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
        pipeline: WritePipeline | InlinePipeline | None = None,
        requeue: Callable[[str], None] = lambda key: None,
    ) -> None:
        self.pipeline = pipeline  # None: every write is awaited before the next decision
        self.requeue = requeue  # the pod is to be handled again (after a conflict, or when its claims landed)
        self.in_flight: dict[str, tuple[str, ...]] = {}  # pod key -> its claims being written
        self._claims_in_flight: set[str] = set()
        self.deferred: set[str] = set()  # pods that waited for writes in flight
        self._attempts: dict[str, int] = {}  # pipelined decisions per pod since its last success
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

    def busy(self, pod_key: str) -> bool:
        """The pod, or one of its claims, has writes in flight: deciding it now could act on a guess."""
        if pod_key in self.in_flight:
            return True
        pod = self.view.pods.get(pod_key)
        return pod is not None and any(k in self._claims_in_flight for k in p.claim_keys(pod))

    def handle(self, pod_key: str) -> str:
        """Decide and act for one pod; returns what happened (a metrics result label, or skipped/gone; "in-flight"
        when its writes were handed to the pipeline)."""
        if self.busy(pod_key):
            self.deferred.add(pod_key)
            return "deferred"
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
            if isinstance(decision, Allocate) and self.pipeline is not None:
                self._submit(pod_key, pod, decision, decided)
                return "in-flight"
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

    # ------------------------------------------------------------------------------------------ pipelined writes

    def _submit(self, pod_key: str, pod: dict[str, Any], decision: Allocate, decided: float) -> None:
        """Put the decision into the view, then hand its writes to the pipeline."""
        assert self.pipeline is not None
        originals: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        for write in decision.writes:
            original = self.view.claims[write.key]
            assumed = {**original, "status": {**(original.get("status") or {}), "allocation": write.allocation}}
            self.view.assume(CLAIMS, assumed)
            originals[write.key] = (original, assumed)
        self.view.assume_pod_on(pod_key, decision.node_name)
        # Learnt demand follows the decision, as in the one-at-a-time loop (a failed write does not unlearn it).
        for placed in decision.placement.claims:
            for kind in placed.task_kinds:
                self.view.demand.observe(kind)
        keys = tuple(originals)
        self.in_flight[pod_key] = keys
        self._claims_in_flight.update(keys)
        current_gates, gate = p.gates(pod), self.settings.gate

        def writes() -> tuple[list[dict[str, Any]], BaseException | None, dict[str, Any] | BaseException | None]:
            answers: list[dict[str, Any]] = []
            for write in decision.writes:
                try:
                    answers.append(self.api.write_allocation(write.key, write.resource_version, write.allocation))
                except (ApiError, NotLeader) as err:
                    return answers, err, None
            try:
                return answers, None, self.api.remove_gate(pod_key, current_gates, gate)
            except (ApiError, NotLeader) as err:
                return answers, None, err

        def landed(outcome: Outcome) -> None:
            try:
                self._landed(pod_key, pod, decision, originals, decided, outcome)
            except NotLeader:  # a clean-up write needed the lease: the next leader repairs the pod
                log.warning("pod %s: lost the lease while handling its writes; left to the leader", pod_key)
                self.requeue(pod_key)
            except Exception:  # a bug must not stop the work loop, which runs this
                log.exception("pod %s: handling its writes failed; retrying later", pod_key)
                self.unplaceable.add(pod_key)
                self.metrics.count("error")

        self.pipeline.submit(writes, landed)

    def _landed(
        self,
        pod_key: str,
        pod: dict[str, Any],
        decision: Allocate,
        originals: dict[str, tuple[dict[str, Any], dict[str, Any]]],
        decided: float,
        outcome: Outcome,
    ) -> None:
        """A pipelined pod's writes came back (on the work loop): apply the answers, or undo what failed."""
        keys = self.in_flight.pop(pod_key, ())
        self._claims_in_flight.difference_update(keys)
        for waiting in self.deferred:
            self.requeue(waiting)
        self.deferred.clear()
        if isinstance(outcome, BaseException):  # a bug in the job: the writes' fate is unknown, read them back
            log.warning("pod %s: writing its allocation: %r; retrying later", pod_key, outcome)
            self._undo(pod_key, originals, tuple(originals))
            self.unplaceable.add(pod_key)
            self.metrics.count("error")
            return
        answers, allocation_error, ungated = outcome
        for answer in answers:
            self.view.apply(CLAIMS, MODIFIED, answer)
        written = tuple(decision.writes[i].key for i in range(len(answers)))
        if allocation_error is not None:
            self._undo(pod_key, originals, tuple(k for k in originals if k not in written))
            self._allocation_failed(pod_key, allocation_error, written)
            return
        _log_allocated(pod_key, written, decision)
        assert ungated is not None
        if isinstance(ungated, BaseException):
            result = self._ungate_failed(pod_key, pod, ungated, "allocated")
            if result in ("retry", "lease"):
                self._again(pod_key)
            return
        self._attempts.pop(pod_key, None)
        self._ungated(pod_key, pod, ungated, decision.node_name, "allocated")
        self.metrics.placement_seconds.observe(time.perf_counter() - decided)

    def _undo(
        self, pod_key: str, originals: dict[str, tuple[dict[str, Any], dict[str, Any]]], keys: tuple[str, ...]
    ) -> None:
        """Take back the assumption of claims whose write did not land (read back: it may have landed unseen)."""
        self.view.forget_assumed(pod_key)
        for key in keys:
            original, assumed = originals[key]
            if self.view.claims.get(key) is not assumed:
                continue  # a newer version came in meanwhile: the view holds the truth already
            try:
                self.view.assume(CLAIMS, self.api.get_claim(key))
            except ApiError as err:
                if err.not_found:
                    self.view.apply(CLAIMS, DELETED, original)
                else:  # unknown: count it as not written, as the one-at-a-time loop does
                    self.view.assume(CLAIMS, original)
        for key in self.unplaceable:
            self.requeue(key)  # the capacity it held is free again

    def _allocation_failed(self, pod_key: str, err: BaseException, written: tuple[str, ...]) -> None:
        if isinstance(err, NotLeader):
            log.warning("pod %s: %s; left to the leader", pod_key, err)
            self.requeue(pod_key)
            return
        assert isinstance(err, ApiError)
        if transient(err):
            log.warning("pod %s: %s; retrying later", pod_key, err)  # what is written stays (half-done repair)
            self.unplaceable.add(pod_key)
            self.metrics.count("error")
            return
        if err.conflict or err.not_found:
            log.info("pod %s: a claim changed meanwhile (%s); deciding again", pod_key, err)
            self.metrics.count("conflict")
            self._again(pod_key)
            return
        log.error("pod %s: the API server rejected the allocation: %s", pod_key, err)
        self._release(written)
        pod = self.view.pods.get(pod_key)
        if pod is not None:
            self._fail(pod_key, pod, Fail("AllocationRejected", f"the allocation of its claims: {err.message}"))

    def _again(self, pod_key: str) -> None:
        """Decide the pod again, up to MAX_ATTEMPTS times in a row (then at the next resync)."""
        attempts = self._attempts[pod_key] = self._attempts.get(pod_key, 0) + 1
        if attempts < MAX_ATTEMPTS:
            self.requeue(pod_key)
            return
        self._attempts.pop(pod_key, None)
        self.metrics.count("error")
        log.warning("pod %s: gave up after %d conflicting attempts; retrying later", pod_key, MAX_ATTEMPTS)
        self.unplaceable.add(pod_key)

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
        _log_allocated(pod_key, written, decision)
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
            return self._ungate_failed(pod_key, pod, err, result)
        self._ungated(pod_key, pod, answer, node_name, result)
        return result

    def _ungate_failed(self, pod_key: str, pod: dict[str, Any], err: BaseException, result: str) -> str:
        """After a failed gate removal: "retry", "gone", ``result`` (somebody else lifted it) or "error";
        "lease" when the lease did not cover it (pipelined writes only)."""
        gate = self.settings.gate
        if isinstance(err, NotLeader):
            log.warning("pod %s: %s; left to the leader", pod_key, err)
            return "lease"
        assert isinstance(err, ApiError)
        if transient(err):
            log.warning("pod %s: removing the gate: %s; retrying later", pod_key, err)
            self.unplaceable.add(pod_key)  # its claims stay allocated: the next pass only lifts the gate
            self.metrics.count("error")
            return "error"
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
        self.view.forget_assumed(pod_key)
        mine = tuple(k for k in p.claim_keys(pod) if self._ours_unreserved(self.view.claims.get(k)))
        self._release(mine)
        self._fail(pod_key, pod, Fail("GateRemovalFailed", f"removing scheduling gate {gate}: {err.message}"))
        return "error"

    def _ungated(
        self, pod_key: str, pod: dict[str, Any], answer: dict[str, Any], node_name: str | None, result: str
    ) -> None:
        self.view.apply(PODS, MODIFIED, answer)
        if node_name:
            self.view.assume_pod_on(pod_key, node_name)
        self.forget(pod_key)
        if _condition(pod, CONDITION_TYPE).get("status") == "False":
            self._best_effort(
                lambda: self.api.set_condition(pod_key, "True", "Allocated", f"claims allocated on node {node_name}")
            )
        self.metrics.count(result)

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


def _log_allocated(pod_key: str, written: Sequence[str], decision: Allocate) -> None:
    """One line per placement, whether its writes were awaited or came back from the pipeline."""
    policy = decision.placement.policy
    log.info(
        "pod %s: allocated %s on node %s (%s/%s)",
        pod_key,
        ", ".join(written),
        decision.node_name,
        policy.node,
        policy.gpu,
    )


def _condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            found: dict[str, Any] = condition
            return found
    return {}
