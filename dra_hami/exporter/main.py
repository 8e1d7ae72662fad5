"""Wiring of the exporter process: inventory, checkpoint, identities, collector, HTTP server."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry

from dra_hami.cli_options import listen_error, parse_bind_address
from dra_hami.discovery import load_discovery
from dra_hami.exporter import hami
from dra_hami.exporter.claims import CheckpointReader, PreparedClaim, prepared_claims
from dra_hami.exporter.collector import ExporterCollector, Inventory
from dra_hami.exporter.exposition import CONTENT_TYPE, render
from dra_hami.exporter.gpus import FakeGpuStats, GpuStats, NvmlGpuStats, NvmlProcesses
from dra_hami.exporter.guard import ApiEvents, GuardAction, NodeGuard
from dra_hami.exporter.identity import IdentityCache, PodApi
from dra_hami.exporter.procfs import ProcFs
from dra_hami.kube.client import RawKubeApi

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExporterOptions:
    node_name: str
    driver_name: str
    kubeconfig: str | None
    fake_profile: str | None
    vgpu_dir: Path
    plugin_dir: Path
    metrics_bind_address: str
    kube_api: bool = True
    guard_action: GuardAction = "event"
    guard_grace_seconds: float = 30.0
    guard_interval: float = 5.0
    proc_root: Path = Path("/proc")
    hami_metrics: str = "both"  # which HAMi name sets: hami.CHOICES


class PodReader:
    """PodApi over RawKubeApi (the shared KubeApi protocol has no pod read)."""

    def __init__(self, api: RawKubeApi):
        self._api = api

    def get_resource_claim(self, namespace: str, name: str) -> dict[str, Any]:
        return self._api.get_resource_claim(namespace, name)

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self._api.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per scrape is noise
        pass


def _app(registry: CollectorRegistry):
    def app(environ, start_response) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path in ("/metrics", "/"):
            body = render(registry)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


def serve(registry: CollectorRegistry, address: str) -> tuple[WSGIServer, threading.Thread]:
    """/metrics (and /healthz) on ``address``; port 0 picks a free one (see server.server_port)."""
    host, port = parse_bind_address(address, "--metrics-bind-address")
    try:
        server = make_server(host, port, _app(registry), _ThreadingServer, handler_class=_QuietHandler)
    except OSError as err:
        raise listen_error("--metrics-bind-address", address, err) from None
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, thread


def build_collector(options: ExporterOptions) -> tuple[ExporterCollector, Inventory, IdentityCache, NodeGuard | None]:
    discovery = load_discovery(options.fake_profile)
    stats: GpuStats = FakeGpuStats() if options.fake_profile else NvmlGpuStats()
    raw: RawKubeApi | None = None
    if options.kube_api:
        try:
            raw = RawKubeApi.from_config(options.kubeconfig)
        except Exception as err:  # no kubeconfig and not in a cluster: metrics still work, pod labels stay empty
            log.warning("no Kubernetes API access (%s): pod and container labels stay empty", err)
    api: PodApi | None = PodReader(raw) if raw is not None else None
    inventory = Inventory(discovery)
    identities = IdentityCache(api, driver=options.driver_name)
    checkpoint = CheckpointReader(options.plugin_dir / "checkpoint.json")
    collector = ExporterCollector(
        options.node_name,
        options.vgpu_dir,
        checkpoint,
        lambda: inventory.gpus,
        stats,
        identities,
        hami_names=hami.CHOICES[options.hami_metrics],
    )
    return collector, inventory, identities, build_guard(options, inventory, identities, raw)


def build_guard(
    options: ExporterOptions, inventory: Inventory, identities: IdentityCache, raw: RawKubeApi | None
) -> NodeGuard | None:
    if options.guard_action == "off":
        log.info("node guard off (--guard-action=off): only libvgpu enforces the claims' memory limits")
        return None
    if options.fake_profile:
        log.info("node guard off: fake GPUs have no driver to ask for per-process memory")
        return None
    checkpoint = CheckpointReader(options.plugin_dir / "checkpoint.json")  # its own: polls run on their thread

    def pod_uids(claim: PreparedClaim) -> frozenset[str]:
        users = identities.lookup(claim.uid, claim.namespace, claim.name)
        return frozenset(c.uid for c in users.consumers if c.uid)

    return NodeGuard(
        options.node_name,
        options.guard_action,
        options.guard_grace_seconds,
        options.vgpu_dir / "claims",
        lambda: prepared_claims(checkpoint.records(), inventory.gpus),
        pod_uids,
        NvmlProcesses(),
        proc=ProcFs(options.proc_root),
        events=ApiEvents(raw, options.node_name) if raw is not None else None,
    )


def run(options: ExporterOptions, stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()
    collector, inventory, identities, guard = build_collector(options)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    if guard is not None:
        registry.register(guard)
    server, _ = serve(registry, options.metrics_bind_address)
    log.info(
        "serving metrics on %s:%d for node %s (claims of %s, regions under %s)",
        *server.server_address[:2],
        options.node_name,
        options.plugin_dir / "checkpoint.json",
        options.vgpu_dir / "claims",
    )

    def on_signal(signum, _frame):
        log.info("signal %d: shutting down", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    for target, name in ((inventory.run, "inventory"), (identities.run, "claim-owners")):
        threading.Thread(target=target, args=(stop,), name=name, daemon=True).start()
    if guard is not None:
        log.info(
            "node guard: action %s, a look at the driver every %gs%s",
            guard.action,
            options.guard_interval,
            f", kills after {guard.grace:g}s over the limit" if guard.action == "kill" else "",
        )
        threading.Thread(target=guard.run, args=(stop, options.guard_interval), name="node-guard", daemon=True).start()
    stop.wait()
    server.shutdown()
    server.server_close()
