"""The one list-then-watch loop every component uses (controller informers, slice publisher, quota watches).

What it guarantees, whatever the API server does:

- it lists, hands the items over, then watches from the list's resourceVersion with bookmarks on, so no
  event between the list and the watch is lost (and a 1.36 server never sees a watch without a version:
  it would answer it with one ERROR event and close the stream);
- a stream the server ends at ``timeoutSeconds`` resumes from the last version seen (no relist);
- 410 Gone (as an HTTP answer or as an ERROR event) and any other ERROR event list again, after a short
  backoff (a server that answers every watch with an ERROR must not be hammered);
- a failure (API server down, reset, timed out, 5xx) waits with exponential backoff, jittered so that many
  nodes do not come back in step, and capped; a transport failure during a watch first tries to resume from
  the last version, which the server answers with 410 if it is too old;
- only ``ApiError`` is expected from the API object (RawKubeApi maps every transport error to it); anything
  else is a bug and is logged with its traceback, then treated like a failure, so the loop never dies.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dra_hami.kube import objects as k8s
from dra_hami.kube.client import ApiError, ListWatchApi

log = logging.getLogger(__name__)

WATCH_TIMEOUT = 300  # seconds a watch asks the server to keep the stream open
MIN_HEALTHY_STREAM = 1.0  # a stream that ends sooner than this without an event is a failure, not a timeout


class Handler(Protocol):
    def on_list(self, items: list[dict[str, Any]], resource_version: str) -> None:
        """The full state of the collection (replace everything known)."""

    def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        """ADDED, MODIFIED or DELETED (bookmarks and errors are the reflector's business)."""


@dataclass
class Backoff:
    """Exponential backoff with full-range jitter in [1 - jitter, 1] of the step, capped."""

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5
    rand: Callable[[], float] = random.random
    _step: float = field(default=0.0, init=False)

    def next(self) -> float:
        self._step = self.initial if self._step == 0.0 else min(self.cap, self._step * self.factor)
        return self._step * (1.0 - self.jitter * self.rand())

    def reset(self) -> None:
        self._step = 0.0


@dataclass
class Callbacks:
    """A Handler from two functions."""

    list_fn: Callable[[list[dict[str, Any]], str], None]
    event_fn: Callable[[str, dict[str, Any]], None]

    def on_list(self, items: list[dict[str, Any]], resource_version: str) -> None:
        self.list_fn(items, resource_version)

    def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        self.event_fn(event_type, obj)


class _Relist(Exception):
    """The watch cannot go on from its resourceVersion: list again."""


class Reflector:
    """List-then-watch of one collection, feeding ``handler``; ``run`` until ``stop`` is set, never raises.

    ``query`` (e.g. a fieldSelector) applies to the list and the watch. ``on_list_error`` may claim a failed
    list (return seconds to wait before listing again, e.g. for a CRD that is not installed); None lets the
    reflector back off as usual. ``items=False`` lists one item only: for consumers that want to know
    *that* something changed, not the whole collection."""

    def __init__(
        self,
        api: ListWatchApi,
        path: str,
        handler: Handler,
        *,
        name: str = "",
        query: dict[str, str] | None = None,
        items: bool = True,
        watch_timeout: int = WATCH_TIMEOUT,
        backoff: Backoff | None = None,
        on_list_error: Callable[[ApiError], float | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api, self.path, self.handler = api, path, handler
        self.name = name or path
        self.query = dict(query or {})
        self.items = items
        self.watch_timeout = watch_timeout
        self.backoff = backoff or Backoff()
        self.on_list_error = on_list_error
        self.clock = clock
        self.lists = 0  # how many lists were handed over (for tests and logs)
        self.version = ""

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._list()
            except ApiError as err:
                wait = self.on_list_error(err) if self.on_list_error else None
                if wait is None:
                    wait = self.backoff.next()
                    log.warning("%s: listing failed (%s); listing again in %.1fs", self.name, err, wait)
                stop.wait(wait)
                continue
            except Exception:  # a bug in the handler or the adapter: keep the loop alive, list again later
                wait = self.backoff.next()
                log.exception("%s: listing failed unexpectedly; listing again in %.1fs", self.name, wait)
                stop.wait(wait)
                continue
            self._watch_until_relist(stop)

    def _list(self) -> None:
        query = dict(self.query)
        if not self.items:
            query["limit"] = "1"
        items, version = self.api.list_objects(self.path, query or None, first_page_only=not self.items)
        if not version:
            raise ApiError(0, f"the list of {self.path} has no metadata.resourceVersion", "BadList")
        self.version = version
        self.lists += 1
        self.handler.on_list(items if self.items else [], version)

    def _watch_until_relist(self, stop: threading.Event) -> None:
        """Watch from self.version until the version is unusable (then return: the caller lists again)."""
        while not stop.is_set():
            started, events = self.clock(), 0
            try:
                for event in self.api.watch(self.path, self.version, self.watch_timeout, self.query or None):
                    events += 1
                    self._event(event)
                    if stop.is_set():
                        return
            except _Relist as relist:
                log.info("%s: %s: listing again", self.name, relist)
                stop.wait(self.backoff.next())
                return
            except ApiError as err:
                if err.gone:
                    log.info("%s: watch expired (%s): listing again", self.name, err)
                    stop.wait(self.backoff.next())
                    return
                wait = self.backoff.next()
                if not err.unreachable:
                    log.warning("%s: watch failed (%s); listing again in %.1fs", self.name, err, wait)
                    stop.wait(wait)
                    return
                # Unreachable: resume from the same version once the server answers (410 if it is too old).
                log.warning("%s: watch failed (%s); watching again in %.1fs", self.name, err, wait)
                stop.wait(wait)
                continue
            except Exception:
                wait = self.backoff.next()
                log.exception("%s: watch failed unexpectedly; listing again in %.1fs", self.name, wait)
                stop.wait(wait)
                return
            healthy = self.clock() - started >= MIN_HEALTHY_STREAM
            if healthy:
                self.backoff.reset()
            if events == 0 and not healthy:
                wait = self.backoff.next()  # a stream that closes at once must not spin
                log.warning("%s: the watch closed at once; listing again in %.1fs", self.name, wait)
                stop.wait(wait)
                return
            # The server closed the stream at timeoutSeconds: go on from the last version seen.

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = int(obj.get("code") or 0) if str(obj.get("code") or "0").isdigit() else 0
            why = f"ERROR event {code} {obj.get('reason', '')}: {obj.get('message', obj)}"
            raise _Relist(why)
        version = k8s.meta(obj).get("resourceVersion")
        if version:
            self.version = version
        self.backoff.reset()  # the server answers again
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self.handler.on_event(kind, obj)


def start(reflector: Reflector, stop: threading.Event) -> threading.Thread:
    """Run ``reflector`` on a daemon thread named after it."""
    thread = threading.Thread(target=reflector.run, args=(stop,), name=f"reflector-{reflector.name}", daemon=True)
    thread.start()
    return thread
