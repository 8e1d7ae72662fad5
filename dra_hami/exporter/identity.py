"""Which pod and containers use a claim, and what the claim was allocated: from the ResourceClaim (its
reservedFor and status.allocation) and the pod's spec.

Resolved off the scrape path (a background thread with a cache), so a slow or absent API server never
slows /metrics. Until a claim is resolved the collector marks it ``pending`` and leaves out the series
that need its consumer (never exporting them under empty pod labels that would change a scrape later).
The only reads are a GET of each claim prepared on this node and of the pods that reserve it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from dra_hami.allocator import ParseError
from dra_hami.allocator.model import AllocatedDevice, claim_results
from dra_hami.kube import objects as k8s
from dra_hami.kube.client import ApiError

log = logging.getLogger(__name__)


class PodApi(Protocol):
    def get_resource_claim(self, namespace: str, name: str) -> dict[str, Any]: ...

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Consumer:
    pod: str
    containers: tuple[str, ...]
    uid: str = ""  # the pod's UID: the node guard matches it against a process's cgroup
    # Per container: its position in spec.containers (HAMi's containeridx), "init-<i>" for init containers.
    indices: tuple[str, ...] = ()


# Why a claim's consumer is not known (the ``reason`` label of dra_hami_claim_consumer_unknown).
PENDING = "pending"  # not resolved yet: the resolver thread was woken and will answer within seconds
NO_API = "no_api"
GONE = "gone"  # the claim no longer exists or is another object now
NO_POD = "no_pod"  # no pod reserves it
API_ERROR = "api_error"


@dataclass(frozen=True)
class ClaimUsers:
    consumers: tuple[Consumer, ...] = ()
    why_unknown: str = ""  # set when pod/container cannot be told
    reason: str = ""  # one of the codes above when why_unknown is set
    # The claim's allocation results of our driver (read by the one parser, allocator.model.claim_results).
    results: tuple[AllocatedDevice, ...] = ()

    @property
    def pod(self) -> str:
        """The pod, when exactly one reserves the claim (the only case a claim-level number is a pod's)."""
        return self.consumers[0].pod if len(self.consumers) == 1 else ""

    @property
    def container(self) -> str:
        """The container, when exactly one container of exactly one pod uses the claim: the claim's region
        is shared by every process of every container using it, so usage cannot be split between them."""
        if len(self.consumers) == 1 and len(self.consumers[0].containers) == 1:
            return self.consumers[0].containers[0]
        return ""


def pod_claim_names(pod: dict[str, Any], claim_name: str) -> set[str]:
    """The names under which the pod refers to the ResourceClaim ``claim_name`` (spec or generated)."""
    names = {entry.get("name", "") for entry in k8s.pod_claims(pod) if entry.get("resourceClaimName") == claim_name}
    names |= {
        entry.get("name", "") for entry in k8s.pod_claim_statuses(pod) if entry.get("resourceClaimName") == claim_name
    }
    return names - {""}


def claim_container_refs(pod: dict[str, Any], claim_name: str) -> list[tuple[str, str]]:
    """(name, index) of the pod's containers that use the claim; index as HAMi counts (spec.containers)."""
    wanted = pod_claim_names(pod, claim_name)
    spec = pod.get("spec") or {}
    indexed = [(c, f"init-{i}") for i, c in enumerate(spec.get("initContainers") or [])]
    indexed += [(c, str(i)) for i, c in enumerate(spec.get("containers") or [])]
    return [
        (c["name"], index)
        for c, index in indexed
        if any(ref.get("name") in wanted for ref in ((c.get("resources") or {}).get("claims") or []))
    ]


def claim_containers(pod: dict[str, Any], claim_name: str) -> tuple[str, ...]:
    return tuple(name for name, _ in claim_container_refs(pod, claim_name))


def _results(claim: dict[str, Any], driver: str | None) -> tuple[AllocatedDevice, ...]:
    try:
        return claim_results(claim, driver)
    except ParseError as err:  # the consumer is still worth knowing; the allocation gauges leave it out
        log.warning("cannot read the allocation of a prepared claim: %s", err)
        return ()


def resolve(api: PodApi, namespace: str, name: str, uid: str, driver: str | None = None) -> ClaimUsers:
    """Raises ApiError for failures worth retrying; a claim that is gone or changed resolves to 'unknown'."""
    try:
        claim = api.get_resource_claim(namespace, name)
    except ApiError as err:
        if err.not_found:
            return ClaimUsers(why_unknown="the ResourceClaim no longer exists", reason=GONE)
        raise
    if k8s.meta(claim).get("uid") != uid:
        return ClaimUsers(why_unknown="the ResourceClaim of that name is another object now", reason=GONE)
    results = _results(claim, driver)
    consumers = []
    for ref in (claim.get("status") or {}).get("reservedFor") or []:
        if ref.get("resource") != "pods" or ref.get("apiGroup"):
            continue
        try:
            pod = api.get_pod(namespace, ref["name"])
        except ApiError as err:
            if err.not_found:
                continue
            raise
        if ref.get("uid") and k8s.meta(pod).get("uid") != ref["uid"]:
            continue
        refs = claim_container_refs(pod, name)
        consumers.append(Consumer(ref["name"], tuple(n for n, _ in refs), k8s.uid(pod), tuple(i for _, i in refs)))
    if not consumers:
        return ClaimUsers(why_unknown="no pod reserves the claim", reason=NO_POD, results=results)
    return ClaimUsers(tuple(sorted(consumers, key=lambda c: c.pod)), results=results)


class IdentityCache:
    """Claim UID -> ClaimUsers. ``lookup`` never blocks; unknown claims are resolved by ``run``."""

    def __init__(
        self, api: PodApi | None, retry_after: float = 30.0, refresh_after: float = 600.0, driver: str | None = None
    ):
        self._api = api
        self._driver = driver
        self._retry_after = retry_after
        self._refresh_after = refresh_after
        self._lock = threading.Lock()
        self._known: dict[str, tuple[ClaimUsers, float]] = {}  # uid -> (users, resolved at, monotonic)
        self._wanted: dict[str, tuple[str, str]] = {}  # uid -> (namespace, name)
        self._wake = threading.Event()

    def lookup(self, uid: str, namespace: str, name: str) -> ClaimUsers:
        if self._api is None:
            return ClaimUsers(why_unknown="the exporter has no Kubernetes API access", reason=NO_API)
        with self._lock:
            self._wanted[uid] = (namespace, name)
            entry = self._known.get(uid)
        if entry is None:
            self._wake.set()
            return ClaimUsers(why_unknown="not resolved yet", reason=PENDING)
        return entry[0]

    def forget_except(self, uids: set[str]) -> None:
        with self._lock:
            for uid in set(self._wanted) - uids:
                self._wanted.pop(uid, None)
                self._known.pop(uid, None)

    def resolve_due(self, now: float | None = None) -> int:
        """Resolve claims never resolved, due for a retry or for a refresh; returns how many were tried."""
        if self._api is None:
            return 0
        now = time.monotonic() if now is None else now
        with self._lock:
            due = []
            for uid, (namespace, name) in self._wanted.items():
                entry = self._known.get(uid)
                if entry is None:
                    due.append((uid, namespace, name))
                    continue
                users, at = entry
                age = now - at
                if age >= (self._retry_after if users.why_unknown else self._refresh_after):
                    due.append((uid, namespace, name))
        for uid, namespace, name in due:
            try:
                users = resolve(self._api, namespace, name, uid, self._driver)
            except ApiError as err:
                log.warning("cannot tell which pod uses claim %s/%s: %s", namespace, name, err)
                with self._lock:
                    before = self._known.get(uid)
                if before is not None and not before[0].why_unknown:
                    # A refresh that failed: what was known still holds (a prepared claim keeps its pod);
                    # replacing it would move the claim's series to empty labels and back.
                    users = before[0]
                else:
                    users = ClaimUsers(why_unknown=f"API error: {err}", reason=API_ERROR)
            with self._lock:
                if uid in self._wanted:
                    self._known[uid] = (users, now)
        return len(due)

    def run(self, stop: threading.Event, interval: float = 5.0) -> None:
        while not stop.is_set():
            try:
                self.resolve_due()
            except Exception:  # never let a bug end the resolver: labels would freeze
                log.exception("resolving claim owners failed")
            self._wake.wait(interval)
            self._wake.clear()
