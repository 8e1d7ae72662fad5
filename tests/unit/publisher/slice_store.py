"""An in-memory KubeApi for ResourceSlices: resourceVersions, 409 on stale writes, field selectors, watch.

Like RawKubeApi it raises only ApiError (a transport failure is ApiError status 0); a watch replays the
events after its resourceVersion and answers 410 Gone for a version older than the kept history."""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from dra_hami.kube.client import ApiError

Obj = dict[str, Any]


def select(obj: Obj, field_selector: str) -> bool:
    for term in filter(None, field_selector.split(",")):
        path, _, want = term.partition("=")
        value: Any = obj
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value != want:
            return False
    return True


class SliceStore:
    """Behaves like the API server where the publisher can tell; hooks let a test inject races and faults."""

    def __init__(self, normalise: Callable[[Obj], None] | None = None):
        self.objects: dict[str, Obj] = {}
        self.writes: list[tuple[str, str]] = []  # (verb, name)
        self.failures: dict[str, list[ApiError]] = {}  # verb -> errors raised by the next calls
        self.before: dict[str, Callable[[Obj], None]] = {}  # verb -> hook run before the write
        self.watch_error: ApiError | None = None  # raised by every watch call
        self.watch_calls = 0
        self.watch_versions: list[str] = []  # the resourceVersion of every watch call
        self.end_watches_with: dict[str, Any] | None = None  # the next open watch yields this ERROR event
        self.compacted = 0  # versions at or below this are gone from the history (410)
        self.history: list[tuple[int, Obj]] = []  # (version, event)
        self._normalise = normalise
        self._version = 0
        self._lock = threading.RLock()
        self._watchers: list[queue.Queue] = []

    # -- helpers for tests ----------------------------------------------------------------------------
    def put(self, obj: Obj) -> Obj:
        """Store an object as another writer would (no write recorded for the publisher)."""
        with self._lock:
            return self._store(copy.deepcopy(obj), "ADDED")

    def remove(self, name: str) -> None:
        """Delete as the kubelet would."""
        with self._lock:
            obj = self.objects.pop(name)
            self._notify("DELETED", obj)

    def error_open_watches(self, code: int = 500, message: str = "etcd leader changed") -> None:
        """End the open watch streams with an ERROR event (a 1.36 server does this, among others)."""
        self.end_watches_with = {"type": "ERROR", "object": {"kind": "Status", "code": code, "message": message}}

    def names(self) -> list[str]:
        return sorted(self.objects)

    def generations(self) -> dict[str, int]:
        return {name: obj["spec"]["pool"]["generation"] for name, obj in sorted(self.objects.items())}

    def clear_writes(self) -> None:
        self.writes.clear()

    # -- KubeApi --------------------------------------------------------------------------------------
    def get_resource_claim(self, namespace: str, name: str) -> Obj:
        raise ApiError(404, "not here", "NotFound")

    def list_resource_slices(self, field_selector: str = "") -> list[Obj]:
        self._fail("list")
        with self._lock:
            return [copy.deepcopy(obj) for obj in self.objects.values() if select(obj, field_selector)]

    def create_resource_slice(self, body: Obj) -> Obj:
        name = body["metadata"]["name"]
        self._hook("create", body)
        self._fail("create")
        with self._lock:
            if name in self.objects:
                raise ApiError(409, f'resourceslices "{name}" already exists', "AlreadyExists")
            if body["metadata"].get("resourceVersion"):
                raise ApiError(400, "resourceVersion should not be set on objects to be created", "BadRequest")
            self.writes.append(("create", name))
            return copy.deepcopy(self._store(copy.deepcopy(body), "ADDED"))

    def update_resource_slice(self, body: Obj) -> Obj:
        name = body["metadata"]["name"]
        self._hook("update", body)
        self._fail("update")
        with self._lock:
            current = self.objects.get(name)
            if current is None:
                raise ApiError(404, f'resourceslices "{name}" not found', "NotFound")
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "the object has been modified; please apply your changes", "Conflict")
            for field in ("driver", "nodeName"):
                if body["spec"].get(field) != current["spec"].get(field):
                    raise ApiError(422, f"spec.{field}: field is immutable", "Invalid")
            if body["spec"]["pool"]["name"] != current["spec"]["pool"]["name"]:
                raise ApiError(422, "spec.pool.name: field is immutable", "Invalid")
            self.writes.append(("update", name))
            obj = copy.deepcopy(body)
            obj["metadata"]["uid"] = current["metadata"]["uid"]
            return copy.deepcopy(self._store(obj, "MODIFIED"))

    def delete_resource_slice(self, name: str) -> None:
        self._fail("delete")
        with self._lock:
            obj = self.objects.pop(name, None)
            if obj is None:
                return  # like RawKubeApi: deleting what is gone is fine
            self.writes.append(("delete", name))
            self._notify("DELETED", obj)

    def list_objects(
        self, path: str, query: dict[str, str] | None = None, first_page_only: bool = False
    ) -> tuple[list[Obj], str]:
        assert path.endswith("/resourceslices"), path
        self._fail("list_objects")
        with self._lock:
            items = [
                copy.deepcopy(o) for o in self.objects.values() if select(o, (query or {}).get("fieldSelector", ""))
            ]
            if query and query.get("limit"):
                items = items[: int(query["limit"])]
            return items, str(self._version)

    def watch(
        self, path: str, resource_version: str, timeout_seconds: int, query: dict[str, str] | None = None
    ) -> Iterator[Obj]:
        assert path.endswith("/resourceslices"), path
        self.watch_calls += 1
        self.watch_versions.append(resource_version)
        if self.watch_error is not None:
            raise self.watch_error
        if not resource_version:
            raise AssertionError("a watch without a resourceVersion (a 1.36 server answers it with an ERROR event)")
        since = int(resource_version)
        field_selector = (query or {}).get("fieldSelector", "")
        sink: queue.Queue = queue.Queue()
        with self._lock:
            if since < self.compacted:
                raise ApiError(410, f"too old resource version: {since} ({self.compacted})", "Expired")
            for version, event in self.history:
                if version > since:
                    sink.put(event)
            self._watchers.append(sink)
        deadline = time.monotonic() + timeout_seconds
        try:
            while time.monotonic() < deadline:
                if self.end_watches_with is not None:
                    event, self.end_watches_with = self.end_watches_with, None
                    yield event
                    return
                try:
                    event = sink.get(timeout=0.02)
                except queue.Empty:
                    continue
                if select(event["object"], field_selector):
                    yield event
        finally:
            with self._lock:
                self._watchers.remove(sink)

    # -- internals ------------------------------------------------------------------------------------
    def _store(self, obj: Obj, event: str) -> Obj:
        self._version += 1
        metadata = obj.setdefault("metadata", {})
        metadata["resourceVersion"] = str(self._version)
        metadata.setdefault("uid", f"uid-{self._version}")
        metadata.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        if self._normalise:
            self._normalise(obj)
        self.objects[metadata["name"]] = obj
        self._notify(event, obj)
        return obj

    def _notify(self, kind: str, obj: Obj) -> None:
        if kind == "DELETED":  # a deletion is a change of its own, with its own version
            self._version += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self._version)
        event = {"type": kind, "object": copy.deepcopy(obj)}
        self.history.append((self._version, event))
        for sink in list(self._watchers):
            sink.put(copy.deepcopy(event))

    def _fail(self, verb: str) -> None:
        pending = self.failures.get(verb)
        if pending:
            raise pending.pop(0)

    def _hook(self, verb: str, body: Obj) -> None:
        hook = self.before.pop(verb, None)
        if hook:
            hook(body)


if TYPE_CHECKING:  # mypy (.ci/run) checks that each fake still has the shape of the Protocol it stands in for
    from dra_hami.kube.reflector import ListWatchApi
    from dra_hami.publisher.publisher import SliceApi

    _slice_api: type[SliceApi] = SliceStore
    _list_watch_api: type[ListWatchApi] = SliceStore
