"""The controller process: informers (list + watch), the leader-election loop, the work loop and /metrics.

Threads: one informer per kind feeds a queue; a single worker applies the events to the view and reconciles
pods, so decisions never race each other; the leader-election loop renews the Lease on its own thread; up to
``writes_in_flight`` writer threads carry out decided placements (pipeline.py) and hand their outcomes back
through the same queue. Followers keep their view warm but never write.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dra_hami.cli_options import listen_error, parse_bind_address
from dra_hami.kube import objects as k8s
from dra_hami.kube.client import ApiError, RawKubeApi
from dra_hami.kube.reflector import Backoff, Callbacks, ListWatchApi, Reflector

from . import pods as p
from .api import COLLECTIONS, OPTIONAL, RawControllerApi
from .core import Settings
from .leader import LeaderElector, NotLeader
from .metrics import ControllerMetrics
from .pipeline import WritePipeline
from .reconciler import Reconciler
from .view import CLAIMS, DELETED, KINDS, PODS, View

log = logging.getLogger(__name__)

LIST = "LIST"
LANDED = "landed"  # queue item of a pipelined write's outcome: (LANDED, LANDED, callable run on the work loop)
WRITES_IN_FLIGHT = 16
WATCH_TIMEOUT = 300
RESYNC_SECONDS = 30.0
BATCH = 64  # pods reconciled between two drains of the event queue
ABSENT_RECHECK = 30.0  # seconds between looks for an optional kind whose CRD is not installed (or not allowed)


@dataclass
class Options:
    settings: Settings
    kubeconfig: str | None
    identity: str
    leader_elect: bool = True
    lease_namespace: str = "kube-system"
    lease_name: str = "dra-hami-controller"
    metrics_address: str = "0.0.0.0:9402"
    orphan_grace: float = 5.0
    resync_seconds: float = RESYNC_SECONDS
    api_timeout: float = 30.0
    writes_in_flight: int = WRITES_IN_FLIGHT  # pods whose writes may run at once; 0: await each write


class Informer(threading.Thread):
    """One kind's reflector (dra_hami.kube.reflector) feeding the work queue as (kind, LIST|event, object)."""

    def __init__(
        self,
        api: ListWatchApi,
        kind: str,
        sink: Callable[[tuple], None],
        stop: threading.Event,
        backoff: float = 0.5,
        absent_recheck: float = ABSENT_RECHECK,
    ) -> None:
        super().__init__(name=f"informer-{kind}", daemon=True)
        self.kind, self.sink, self.stop = kind, sink, stop
        self.path = COLLECTIONS[kind]
        self.absent_recheck = absent_recheck
        self.absent = False  # an optional kind that is not served (or not ours to read): seen as empty
        self.reflector = Reflector(
            api,
            self.path,
            Callbacks(self._listed, self._event),
            name=f"{kind} informer",
            watch_timeout=WATCH_TIMEOUT,
            backoff=Backoff(initial=backoff, cap=max(backoff, 30.0)),
            on_list_error=self._list_failed,
        )

    def run(self) -> None:
        self.reflector.run(self.stop)

    def _listed(self, items: list[dict[str, Any]], _version: str) -> None:
        if self.absent:
            log.info("%s informer: %s is served now: enforcing it", self.kind, self.path)
            self.absent = False
        self.sink((self.kind, LIST, items))

    def _event(self, event_type: str, obj: dict[str, Any]) -> None:
        self.sink((self.kind, event_type, obj))

    def _list_failed(self, err: ApiError) -> float | None:
        """No CRD (404) or no permission (403): nothing of this kind is known; look again now and then."""
        if self.kind not in OPTIONAL or not (err.not_found or err.status == 403):
            return None  # the reflector backs off and lists again
        if not self.absent:
            why = "is not installed" if err.not_found else f"cannot be read ({err.message}; grant list and watch)"
            log.warning(
                "%s informer: %s %s: treating it as empty, looking again every %.0fs",
                self.kind,
                self.path,
                why,
                self.absent_recheck,
            )
            self.absent = True
            self.sink((self.kind, LIST, []))  # also forgets every object if the CRD was deleted
        return self.absent_recheck


class Controller:
    def __init__(self, options: Options, api_factory: Callable[[], RawKubeApi] | None = None) -> None:
        self.options = options
        self.settings = options.settings
        factory = api_factory or (lambda: RawKubeApi.from_config(options.kubeconfig, options.api_timeout))
        self._factory = factory
        self.view = View()
        self.lock = threading.RLock()  # the view
        self.metrics = ControllerMetrics()
        self.elector = (
            LeaderElector(options.identity, options.lease_namespace, options.lease_name)
            if options.leader_elect
            else None
        )
        self.api = RawControllerApi(
            factory(),
            options.identity,
            write_budget=self.elector.write_budget if self.elector else None,
            # a renewal counts from its start, so a slow one cannot stretch leadership; the timeout only keeps a
            # hung call from delaying the next round past the point where another candidate may take over
            lease_timeout=min(options.api_timeout, self.elector.margin) if self.elector else None,
            on_write=lambda write: self.metrics.api_writes.labels(write).inc(),
        )
        self.events: queue.Queue[tuple] = queue.Queue()
        self.pipeline = (
            WritePipeline(options.writes_in_flight, lambda landed: self.events.put((LANDED, LANDED, landed)))
            if options.writes_in_flight > 0
            else None
        )
        self.reconciler = Reconciler(
            self.view,
            self.api,
            self.settings,
            self.metrics,
            self.leading,
            orphan_grace=options.orphan_grace,
            pipeline=self.pipeline,
            requeue=self._requeue,
        )
        self.synced: set[str] = set()
        self.dirty: OrderedDict[str, None] = OrderedDict()
        self.heartbeat = time.monotonic()
        self._was_leading = False
        self._next_resync = 0.0
        self._sweep_at = 0.0

    def leading(self) -> bool:
        return self.elector is None or self.elector.leading()

    # ------------------------------------------------------------------------------------------ threads

    def run(self, stop: threading.Event) -> None:
        server = self._serve_metrics()
        for kind in KINDS:
            Informer(self._factory(), kind, self.events.put, stop).start()
        if self.elector is not None:
            threading.Thread(target=self._lead, args=(stop,), name="leader-election", daemon=True).start()
        log.info(
            "controller %s started: gate %s, default policy %s/%s, leader election %s",
            self.options.identity,
            self.settings.gate,
            self.settings.default_policy.node,
            self.settings.default_policy.gpu,
            "on" if self.elector else "off",
        )
        try:
            while not stop.is_set():
                self.heartbeat = time.monotonic()
                self._drain(timeout=0.5)
                self.step()
        finally:
            if self.pipeline is not None:
                self.pipeline.close()
            self._release_lease()
            if server is not None:
                server.shutdown()

    def _lead(self, stop: threading.Event) -> None:
        elector = self.elector
        assert elector is not None
        while not stop.is_set():
            try:
                started = elector.clock()  # the renewal counts from here, however long the calls take
                lease = self.api.get_lease(elector.namespace, elector.name)
                body = elector.desired(lease)
                if body is not None:
                    elector.written(self.api.write_lease(body, create=lease is None), started)
            except ApiError as err:
                if err.conflict:
                    elector.lost()
                log.debug("leader election: %s", err)
            except Exception as err:  # a bug must not end the election; leading() decays on its own
                log.warning("leader election: %s", err)
            stop.wait(elector.retry_period)

    def _release_lease(self) -> None:
        if self.elector is None or not self.elector.leading():
            return
        try:
            lease = self.api.get_lease(self.elector.namespace, self.elector.name)
            body = self.elector.released(lease) if lease else None
            if body is not None:
                self.api.write_lease(body, create=False)
        except ApiError as err:
            log.warning("releasing the lease: %s", err)

    # ------------------------------------------------------------------------------------------ the work loop

    def _drain(self, timeout: float) -> None:
        try:
            busy = self.dirty and self.leading() and len(self.synced) == len(KINDS) and not self._pipeline_full()
            item = self.events.get(timeout=0.001 if busy else timeout)
        except queue.Empty:
            return
        with self.lock:
            while True:
                self._apply(*item)
                try:
                    item = self.events.get_nowait()
                except queue.Empty:
                    return

    def _pipeline_full(self) -> bool:
        return self.pipeline is not None and self.pipeline.full

    def _requeue(self, pod_key: str) -> None:
        self.dirty[pod_key] = None

    def _apply(self, kind: str, event_type: str, obj: Any) -> None:
        if kind == LANDED:
            obj()  # a pipelined write's outcome: applied here, on the work loop, like any event
            return
        if event_type == LIST:
            self.view.replace(kind, obj)
            self.synced.add(kind)
            self._requeue_all()
            return
        change = self.view.apply(kind, event_type, obj)
        if change is None:
            return
        if kind == PODS:
            if event_type != DELETED and p.has_gate(obj, self.settings.gate):
                self.dirty[change.key] = None
            elif event_type == DELETED:
                self.reconciler.forget(change.key)
                self.dirty.pop(change.key, None)
                self._sweep_at = min(self._sweep_at, time.monotonic() + 0.5)  # its allocations may be orphans now
        elif kind == CLAIMS and event_type != DELETED:
            namespace = change.key.split("/", 1)[0]
            for owner in k8s.meta(obj).get("ownerReferences") or []:
                if owner.get("kind") == "Pod":
                    self._enqueue_if_gated(f"{namespace}/{owner.get('name')}")
            for waiting in [w for w in self.reconciler.waiting if w.startswith(namespace + "/")]:
                self.dirty[waiting] = None
        if kind == CLAIMS and event_type == DELETED:
            # a deleted claim (allocated or not) frees GpuQuota in its namespace
            namespace = change.key.split("/", 1)[0]
            for key in [u for u in self.reconciler.unplaceable if u.startswith(namespace + "/")]:
                self.dirty[key] = None
        if change.frees_capacity:
            for key in self.reconciler.unplaceable:
                self.dirty[key] = None

    def _enqueue_if_gated(self, pod_key: str) -> None:
        pod = self.view.pods.get(pod_key)
        if pod is not None and p.has_gate(pod, self.settings.gate):
            self.dirty[pod_key] = None

    def _requeue_all(self) -> None:
        for key, pod in self.view.pods.items():
            if p.has_gate(pod, self.settings.gate):
                self.dirty[key] = None

    def step(self) -> None:
        """Reconcile up to BATCH dirty pods, if synced and leading; sweep orphans and resync periodically."""
        if len(self.synced) < len(KINDS):
            return
        leading = self.leading()
        if leading and not self._was_leading:
            log.info("leading: rebuilding from the API view and repairing half-done pods")
            self.metrics.leader.inc()
            with self.lock:
                self._requeue_all()
            self._next_resync = 0.0
        self._was_leading = leading
        if not leading:
            return
        now = time.monotonic()
        try:
            with self.lock:
                if now >= self._next_resync:
                    self._next_resync = now + self.options.resync_seconds
                    for key in self.reconciler.unplaceable:
                        self.dirty[key] = None
                    self._sweep_at = now
                if now >= self._sweep_at:
                    self.reconciler.sweep()
                    pending = self.reconciler.next_sweep_in()
                    self._sweep_at = self._next_resync if pending is None else now + pending + 0.05
                for _ in range(min(BATCH, len(self.dirty))):
                    if self._pipeline_full():
                        break  # the next outcome that lands makes room (the queue wakes the loop)
                    key, _ = self.dirty.popitem(last=False)
                    try:
                        self.reconciler.handle(key)
                    except NotLeader:
                        self.dirty[key] = None
                        raise
                    except Exception as err:  # one pod (or a flaky API call) must not stop the others
                        log.warning("pod %s: %s; retrying later", key, err, exc_info=not isinstance(err, ApiError))
                        self.reconciler.unplaceable.add(key)
                        self.metrics.count("error")
        except NotLeader:
            log.warning("lost the lease: standing by")

    # ------------------------------------------------------------------------------------------ /metrics

    def _serve_metrics(self) -> ThreadingHTTPServer | None:
        address = self.options.metrics_address
        if not address or address == "0":
            return None
        host, port = parse_bind_address(address, "--metrics-bind-address")
        controller = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    body, ctype, code = generate_latest(controller.metrics.registry), CONTENT_TYPE_LATEST, 200
                elif self.path.startswith("/healthz"):
                    alive = time.monotonic() - controller.heartbeat < 60
                    body, ctype, code = (b"ok" if alive else b"work loop stalled"), "text/plain", 200 if alive else 500
                else:
                    body, ctype, code = b"not found", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a log line
                return

        try:
            server = ThreadingHTTPServer((host, port), Handler)
        except OSError as err:
            raise listen_error("--metrics-bind-address", address, err) from None
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        log.info("serving /metrics and /healthz on %s:%s", host or "0.0.0.0", server.server_address[1])
        return server
