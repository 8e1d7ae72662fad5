"""Keeps the node's ResourceSlices equal to what discovery finds (the I/O edge of the publisher).

The kubelet deletes a node's slices when it starts, and a driver's slices 30 s after the driver goes away
(docs/design/kubelet.md#what-the-kubelet-does-to-slices), so publishing once is not enough: ``run`` reconciles
on a timer, whenever the reflector (dra_hami.kube.reflector) reports one of our slices deleted or modified, and
after each of its lists (a list follows a lost watch, so a deletion while no watch was open is repaired at once
too).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.discovery.model import Discovery, DiscoveryError
from dra_hami.kube import objects as k8s
from dra_hami.kube.client import RESOURCE_API, ApiError
from dra_hami.kube.reflector import Backoff, Callbacks, ListWatchApi, Reflector
from dra_hami.publisher.compare import same_content
from dra_hami.publisher.device import PoolError
from dra_hami.publisher.policy import PolicyError
from dra_hami.publisher.slices import build_pool, pool_generation

log = logging.getLogger(__name__)

_RETRYABLE = (404, 409)  # someone else wrote or deleted a slice between our list and our write


@dataclass(frozen=True)
class ReconcileResult:
    generation: int
    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    attempts: int = 1

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


class SliceApi(ListWatchApi, Protocol):
    """The calls the publisher makes (it holds no other right): its slices, and list/watch to see them change."""

    def list_resource_slices(self, field_selector: str = "") -> list[dict[str, Any]]: ...

    def create_resource_slice(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def update_resource_slice(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def delete_resource_slice(self, name: str) -> None: ...


class SlicePublisher:
    def __init__(
        self,
        api: SliceApi,
        discovery: Discovery,
        config: PublisherConfig,
        *,
        max_attempts: int = 5,
        watch_timeout: int = 300,
        min_gap: float = 0.2,
        taints: Callable[[], dict[str, list[dict[str, Any]]]] | None = None,
        on_published: Callable[[list[dict[str, Any]]], None] | None = None,
    ):
        self._api = api
        self._discovery = discovery
        self._config = config
        self._max_attempts = max_attempts
        self._watch_timeout = watch_timeout
        self._min_gap = min_gap  # coalesces a burst of watch events (our own writes cause some) into one pass
        self._last_generation = 0
        self._lock = threading.Lock()
        self._taints = taints or dict  # device name -> taints (device health)
        self._taints_dropped = False  # the API server drops them (DRADeviceTaints off): stop sending them
        self._wake = threading.Event()
        self._on_published = on_published  # told each pool the API server holds (the plugin's inventory)

    def poke(self) -> None:
        """Reconcile soon (e.g. a GPU's health changed); safe from any thread, never blocks."""
        self._wake.set()

    @property
    def config(self) -> PublisherConfig:
        return self._config

    def set_node_uid(self, uid: str) -> None:
        """Own the slices by the Node from now on (read once the API server answers)."""
        with self._lock:
            self._config = self._config.model_copy(update={"node_uid": uid})

    def reconcile(self) -> ReconcileResult:
        """One pass; raises ApiError, DiscoveryError, PoolError or PolicyError and then publishes nothing new."""
        with self._lock:
            gpus = self._discovery.discover()
            for attempt in range(1, self._max_attempts + 1):
                try:
                    return self._reconcile_once(gpus, attempt)
                except ApiError as err:
                    if err.status not in _RETRYABLE or attempt == self._max_attempts:
                        raise
                    log.info("slice write raced with another writer (%s); listing again", err)
            raise AssertionError("unreachable")

    def remove_all(self) -> list[str]:
        """Delete this node's slices of our driver (clean uninstall; a restart should leave them in place)."""
        with self._lock:
            names = sorted(slice_["metadata"]["name"] for slice_ in self._list())
            for name in names:
                self._api.delete_resource_slice(name)
            return names

    def run(self, stop: threading.Event, interval: float = 30.0) -> None:
        """Reconcile every ``interval`` seconds and on watch events until ``stop`` is set; never raises."""
        wake = self._wake

        def wake_on_stop() -> None:
            stop.wait()
            wake.set()

        threading.Thread(target=wake_on_stop, name="publisher-stop", daemon=True).start()
        reflector = Reflector(
            self._api,
            f"{RESOURCE_API}/resourceslices",
            Callbacks(lambda _items, _version: wake.set(), self._on_event),
            name="ResourceSlice watch",
            query={"fieldSelector": self._config.field_selector} if self._config.field_selector else None,
            items=False,  # the pass lists what it needs; the watch only says when to run one
            watch_timeout=self._watch_timeout,
            backoff=Backoff(initial=0.5, cap=max(0.5, interval)),
        )
        threading.Thread(target=reflector.run, args=(stop,), name="publisher-watch", daemon=True).start()
        while not stop.is_set():
            wake.clear()  # before the pass: an event during it means another pass
            self._reconcile_logged()
            wake.wait(interval)
            stop.wait(self._min_gap)

    def _reconcile_logged(self) -> None:
        try:
            result = self.reconcile()
        except (ApiError, DiscoveryError, PoolError, PolicyError) as err:
            log.warning("publishing ResourceSlices failed, will retry: %s", err)
            return
        except Exception:  # the publisher must outlive any bug in one pass; the next pass starts clean
            log.exception("publishing ResourceSlices failed unexpectedly, will retry")
            return
        if result.changed:
            log.info(
                "published pool %s generation %d: created %s, updated %s, deleted %s",
                self._config.node_name,
                result.generation,
                list(result.created),
                list(result.updated),
                list(result.deleted),
            )

    def _on_event(self, event_type: str, _obj: dict[str, Any]) -> None:
        if event_type in ("DELETED", "MODIFIED"):
            self._wake.set()

    def _list(self) -> list[dict[str, Any]]:
        # Filtered again here: the selector is the contract, but a slice we did not ask for must never be touched.
        return [
            slice_
            for slice_ in self._api.list_resource_slices(self._config.field_selector)
            if (slice_.get("spec") or {}).get("nodeName") == self._config.node_name
            and (slice_.get("spec") or {}).get("driver") == self._config.driver_name
        ]

    def _reconcile_once(self, gpus: list[Any], attempt: int) -> ReconcileResult:
        stored = {slice_["metadata"]["name"]: slice_ for slice_ in self._list()}
        current = max((pool_generation(slice_) for slice_ in stored.values()), default=0)
        taints = {} if self._taints_dropped else self._taints()
        desired = build_pool(gpus, self._config, current, taints)
        if self._in_sync(desired, stored, current):
            self._last_generation = max(self._last_generation, current)
            self._published(desired)
            return ReconcileResult(current, attempts=attempt)

        # Any change moves every slice to a new generation: consumers use only the highest one they see.
        generation = max(current, self._last_generation) + 1
        desired = build_pool(gpus, self._config, generation, taints)
        created, updated = [], []
        for body in desired:
            name = body["metadata"]["name"]
            if name in stored:
                written = self._update(body, stored[name])
                updated.append(name)
            else:
                written = self._api.create_resource_slice(body)
                created.append(name)
            self._check_taints_kept(body, written)
        self._last_generation = generation
        stale = sorted(set(stored) - {body["metadata"]["name"] for body in desired})
        for name in stale:
            self._api.delete_resource_slice(name)
        self._published(desired)
        return ReconcileResult(generation, tuple(created), tuple(updated), tuple(stale), attempt)

    def _published(self, pool: list[dict[str, Any]]) -> None:
        if self._on_published is not None:
            self._on_published(pool)

    @staticmethod
    def _in_sync(desired: list[dict[str, Any]], stored: dict[str, dict[str, Any]], generation: int) -> bool:
        if {body["metadata"]["name"] for body in desired} != set(stored):
            return False
        return all(
            pool_generation(stored[body["metadata"]["name"]]) == generation
            and same_content(body, stored[body["metadata"]["name"]])
            for body in desired
        )

    def _update(self, body: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._api.update_resource_slice(_update_body(body, stored))
        except ApiError as err:
            if err.status != 422:
                raise
            # An immutable field differs (a foreign pool name, say): replace the slice instead.
            log.info("slice %s cannot be updated in place (%s); re-creating it", body["metadata"]["name"], err)
            self._api.delete_resource_slice(body["metadata"]["name"])
            return self._api.create_resource_slice(body)

    def _check_taints_kept(self, sent: dict[str, Any], written: dict[str, Any] | None) -> None:
        """A server with DRADeviceTaints off silently drops taints; sending them again would rewrite the pool
        on every pass (and wake the watch each time), so stop, and say why."""
        if self._taints_dropped or not isinstance(written, dict) or not written.get("spec"):
            return
        if _has_taints(sent) and not _has_taints(written):
            self._taints_dropped = True
            log.warning(
                "the API server dropped the device taints of unhealthy GPUs (feature gate DRADeviceTaints off?); "
                "publishing without taints from now on"
            )


def _has_taints(slice_: dict[str, Any]) -> bool:
    return any(device.get("taints") for device in (slice_.get("spec") or {}).get("devices") or [])


def _update_body(body: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """Our spec on the stored object's identity; labels and annotations others added are kept.

    Sent as raw JSON built from the stored dict, never from a typed model (which would drop unknown fields).
    """
    have = k8s.meta(stored)
    want = body["metadata"]
    metadata: dict[str, Any] = {
        "name": want["name"],
        "resourceVersion": have.get("resourceVersion"),
        "labels": {**(have.get("labels") or {}), **want["labels"]},
    }
    for key in ("uid", "annotations", "finalizers"):
        if have.get(key):
            metadata[key] = have[key]
    owners = want.get("ownerReferences") or have.get("ownerReferences")
    if owners:
        metadata["ownerReferences"] = owners
    return {**body, "metadata": metadata}
