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
from dra_hami.exporter.claims import CheckpointReader
from dra_hami.exporter.collector import ExporterCollector, Inventory
from dra_hami.exporter.exposition import CONTENT_TYPE, render
from dra_hami.exporter.gpus import FakeGpuStats, GpuStats, NvmlGpuStats
from dra_hami.exporter.identity import IdentityCache, PodApi
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


def build_collector(options: ExporterOptions) -> tuple[ExporterCollector, Inventory, IdentityCache]:
    discovery = load_discovery(options.fake_profile)
    stats: GpuStats = FakeGpuStats() if options.fake_profile else NvmlGpuStats()
    api: PodApi | None = None
    if options.kube_api:
        try:
            api = PodReader(RawKubeApi.from_config(options.kubeconfig))
        except Exception as err:  # no kubeconfig and not in a cluster: metrics still work, pod labels stay empty
            log.warning("no Kubernetes API access (%s): pod and container labels stay empty", err)
    inventory = Inventory(discovery)
    identities = IdentityCache(api)
    checkpoint = CheckpointReader(options.plugin_dir / "checkpoint.json")
    collector = ExporterCollector(
        options.node_name, options.vgpu_dir, checkpoint, lambda: inventory.gpus, stats, identities
    )
    return collector, inventory, identities


def run(options: ExporterOptions, stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()
    collector, inventory, identities = build_collector(options)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
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
    stop.wait()
    server.shutdown()
    server.server_close()
