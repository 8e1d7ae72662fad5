"""Keeps every GpuQuota's ``status.used`` equal to what the claims of its namespace hold.

Runs inside the ``dra-hami webhook`` process (every replica; the writes are idempotent, the last one wins
with the same numbers). A watch on ResourceClaims and GpuQuotas marks namespaces dirty, so deleting a claim
frees quota within a moment; a full pass every ``resync`` seconds repairs whatever a lost watch missed
(and releases charges the webhook made for claims that were never created). ``used`` is computed with
``dra_hami.quota.usage`` - the same code admission and the controller use.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from dra_hami.kube import objects as k8s
from dra_hami.kube.client import ApiError
from dra_hami.kube.reflector import Backoff, Callbacks, ListWatchApi, Reflector
from dra_hami.quota.classes import our_classes
from dra_hami.quota.model import GROUP, PLURAL, VERSION, QuotaError, Usage, parse_gpu_quota
from dra_hami.quota.usage import Accounting, namespace_usage

log = logging.getLogger(__name__)

CLAIMS_PATH = "/apis/resource.k8s.io/v1/resourceclaims"
QUOTAS_PATH = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
CHARGE_HOLD = datetime.timedelta(seconds=10)
WATCH_BACKOFF = (1.0, 30.0)  # after a failed watch: first and longest wait before the next try


class QuotaApi(Protocol):
    def list_all_quotas(self) -> list[dict[str, Any]]: ...
    def list_namespace_quotas(self, namespace: str) -> list[dict[str, Any]]: ...
    def list_namespace_claims(self, namespace: str) -> list[dict[str, Any]]: ...
    def list_all_slices(self) -> list[dict[str, Any]]: ...
    def list_all_device_classes(self) -> list[dict[str, Any]]: ...
    def patch_quota_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...


Watcher = ListWatchApi  # list-then-watch of a collection (``dra_hami.webhook.kube.KubeWebhookApi``)


def status_updates(
    quotas: list[dict[str, Any]], claims: list[dict[str, Any]], acct: Accounting, now: datetime.datetime
) -> tuple[list[tuple[str, str, dict[str, Any]]], bool]:
    """(namespace, name, status) for each quota of one namespace whose status.used is not what the claims hold,
    and whether a recent admission charge is still being held (look again in CHARGE_HOLD).

    A charge the webhook wrote less than CHARGE_HOLD ago may be for a claim the API server has not stored yet,
    so during that time used never drops below the recorded value; afterwards the claims alone decide."""
    used = namespace_usage(claims, acct)
    out, held = [], False
    for raw in quotas:
        try:
            quota = parse_gpu_quota(raw)
        except QuotaError as err:
            log.warning("%s", err)
            continue
        target = used
        charged = _time((raw.get("status") or {}).get("chargedAt"))
        if quota.used is not None and charged is not None and now - charged < CHARGE_HOLD:
            target = used.max(quota.used)
            held = held or target != used
        if (raw.get("status") or {}).get("used") != target.to_status():
            out.append((quota.namespace, quota.name, {"used": target.to_status()}))
    return out, held


def _time(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


class QuotaReconciler:
    def __init__(
        self,
        api: QuotaApi,
        driver: str,
        resync: float = 30.0,
        watch: Watcher | None = None,
        watch_timeout: int = 300,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.api, self.driver, self.resync = api, driver, resync
        self.clock = clock
        self._held: set[str] = set()  # namespaces with a charge still held: look again soon
        self._watch = watch  # None: resync only
        self._watch_timeout = watch_timeout
        self._dirty: set[str] = set()
        self._full = True
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.passes = 0

    def mark(self, namespace: str) -> None:
        with self._lock:
            self._dirty.add(namespace)
        self._wake.set()

    def reconcile_namespace(self, namespace: str, acct: Accounting) -> int:
        """Write the namespace's quotas' status; returns how many were updated."""
        quotas = self.api.list_namespace_quotas(namespace)
        if not quotas:
            return 0
        updates, held = status_updates(quotas, self.api.list_namespace_claims(namespace), acct, self.clock())
        if held:
            with self._lock:
                self._held.add(namespace)
        for ns, name, status in updates:
            try:
                self.api.patch_quota_status(ns, name, status)
                log.info("GpuQuota %s/%s: used %s", ns, name, status["used"])
            except ApiError as err:
                if not err.not_found:
                    raise
        return len(updates)

    def reconcile(self, namespaces: set[str] | None = None) -> int:
        """One pass over ``namespaces`` (None: every namespace that has a GpuQuota)."""
        if namespaces is None:
            namespaces = {k8s.meta(q).get("namespace", "") for q in self.api.list_all_quotas()}
        if not namespaces:
            return 0
        slices = self.api.list_all_slices()
        classes = our_classes(self.driver, self.api.list_all_device_classes(), slices)
        acct = Accounting.from_slices(self.driver, slices, classes)
        updated = sum(self.reconcile_namespace(ns, acct) for ns in sorted(namespaces))
        self.passes += 1
        return updated

    def run(self, stop: threading.Event) -> None:
        def wake_on_stop() -> None:
            stop.wait()
            self._wake.set()

        threading.Thread(target=wake_on_stop, name="quota-stop", daemon=True).start()
        if self._watch is not None:
            for path in (CLAIMS_PATH, QUOTAS_PATH):
                threading.Thread(target=self._watch_loop, args=(path, stop), name="quota-watch", daemon=True).start()
        while not stop.is_set():
            with self._lock:
                full, dirty = self._full, self._dirty
                self._full, self._dirty = False, set()
            try:
                self.reconcile(None if full else dirty) if full or dirty else None
            except (ApiError, OSError) as err:
                log.warning("GpuQuota status pass failed, retrying: %s", err)
                with self._lock:
                    self._dirty |= dirty
                    self._full = self._full or full
                stop.wait(2.0)
                continue
            with self._lock:
                held, self._held = self._held, set()
            wait = CHARGE_HOLD.total_seconds() if held else self.resync
            if not self._wake.wait(wait):
                with self._lock:
                    if held:
                        self._dirty |= held
                    else:
                        self._full = True
            self._wake.clear()

    def _watch_loop(self, path: str, stop: threading.Event) -> None:
        """Watch ``path`` with the shared reflector: it lists (one item: only the version matters here),
        watches from there through events and bookmarks, and lists again after an ERROR event, a 410 or a
        failure, with a growing pause. Each list asks for a full pass, which covers whatever changed while
        no watch was open."""
        assert self._watch is not None
        seen: dict[tuple[str, Any], Any] = {}

        def event(kind: str, obj: dict[str, Any]) -> None:
            self._handle(kind, obj, k8s.meta(obj), seen)

        Reflector(
            self._watch,
            path,
            Callbacks(lambda _items, _version: self.request_full(), event),
            name=f"watch of {path}",
            items=False,
            watch_timeout=self._watch_timeout,
            backoff=Backoff(initial=WATCH_BACKOFF[0], cap=WATCH_BACKOFF[1]),
        ).run(stop)

    def _handle(self, kind: Any, obj: dict[str, Any], meta: k8s.ObjectMeta, seen: dict[tuple[str, Any], Any]) -> None:
        namespace = meta.get("namespace")
        if kind not in ("ADDED", "MODIFIED", "DELETED") or not namespace:
            return  # BOOKMARK: only its resourceVersion matters
        if obj.get("kind") == "GpuQuota" and kind == "MODIFIED":
            # status writes (ours, the webhook's charges) bump no generation: only spec edits count
            key = (namespace, meta.get("name"))
            if seen.get(key) == meta.get("generation"):
                return
            seen[key] = meta.get("generation")
        elif obj.get("kind") == "GpuQuota":
            seen[(namespace, meta.get("name"))] = meta.get("generation")
        self.mark(namespace)

    def request_full(self) -> None:
        with self._lock:
            self._full = True
        self._wake.set()


__all__ = ["QuotaReconciler", "Usage", "status_updates"]
