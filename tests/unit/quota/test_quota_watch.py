"""The reconciler's watches against an HTTP server that answers like Kubernetes 1.36 on etcd 3.4.

Such an API server answers a watch without a resourceVersion (or with "0") with 200, one ERROR event and
a closed stream. The reconciler used to watch that way, reconnected once a second and never saw an event, so
GpuQuota status only moved at the full resync. Now it lists for a resourceVersion and watches from there.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "webhook"))
from webhook_fixtures import FakeApi, claim, fleet, quota, slice_spec

from dra_hami.kube.client import RawKubeApi
from dra_hami.quota import reconciler as rec
from dra_hami.quota.reconciler import CLAIMS_PATH, QuotaReconciler
from dra_hami.webhook.kube import KubeWebhookApi

NO_PROGRESS = {
    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "InternalError", "code": 500,
    "message": "a watch stream was requested by the client but the required storage feature RequestWatchProgress "
    "is disabled",
}  # fmt: skip


class ApiServer:
    """Lists carry a resourceVersion; watches from one stream later events until timeoutSeconds."""

    def __init__(self) -> None:
        self.version = 100
        self.events: list[tuple[str, int, dict[str, Any]]] = []  # (path, version, event)
        self.watches: list[tuple[str, str]] = []  # (path, resourceVersion) of every watch request
        self.changed = threading.Condition()
        self.closing = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if query.get("watch") != "true":
                    body = json.dumps({"metadata": {"resourceVersion": str(server.version)}, "items": []}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                since = query.get("resourceVersion", "")
                server.watches.append((url.path, since))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if since in ("", "0"):
                    self._send({"type": "ERROR", "object": NO_PROGRESS})
                else:
                    self._stream(url.path, int(since), time.monotonic() + int(query["timeoutSeconds"]))
                self.wfile.write(b"0\r\n\r\n")

            def _stream(self, path: str, since: int, deadline: float) -> None:
                while time.monotonic() < deadline:
                    with server.changed:
                        fresh = [e for p, v, e in server.events if p == path and v > since]
                        if not fresh and not server.closing:
                            server.changed.wait(0.2)
                        if server.closing:
                            return
                    for event in fresh:
                        since = int(event["object"]["metadata"]["resourceVersion"])
                        self._send(event)

            def _send(self, event: dict[str, Any]) -> None:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    def publish(self, path: str, kind: str, obj: dict[str, Any]) -> None:
        with self.changed:
            self.version += 1
            obj["metadata"]["resourceVersion"] = str(self.version)
            self.events.append((path, self.version, {"type": kind, "object": obj}))
            self.changed.notify_all()

    def stop(self) -> None:
        with self.changed:
            self.closing = True
            self.changed.notify_all()
        self.http.shutdown()


@pytest.fixture
def apiserver() -> Iterator[ApiServer]:
    server = ApiServer()
    yield server
    server.stop()


def _wait(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_claim_events_reach_the_reconciler_over_one_long_watch(apiserver: ApiServer) -> None:
    configuration = client.Configuration()
    configuration.host = apiserver.url
    watcher = KubeWebhookApi(RawKubeApi(client.ApiClient(configuration)))
    api = FakeApi(fleet("t4x2"))
    api.add_quota(quota(gpus=4))
    r = QuotaReconciler(api, "hami-core-gpu.project-hami.io", resync=3600, watch=watcher)
    stop = threading.Event()
    thread = threading.Thread(target=r.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert _wait(lambda: len(apiserver.watches) == 2 and r.passes >= 1, 5), apiserver.watches
        assert all(version == "100" for _, version in apiserver.watches), apiserver.watches  # the listed version
        time.sleep(2.5)  # the old code reconnected every second here
        assert len(apiserver.watches) == 2, apiserver.watches
        api.add_claim(claim("a", slice_spec("1Gi")))
        apiserver.publish(CLAIMS_PATH, "ADDED", {"kind": "ResourceClaim", "metadata": {"namespace": "ns", "name": "a"}})
        assert _wait(lambda: api.quotas[("ns", "budget")]["status"]["used"]["gpus"] == 1, 3)  # not the 3600 s resync
        assert len(apiserver.watches) == 2
    finally:
        stop.set()
        apiserver.stop()
        thread.join(5)
    assert not thread.is_alive()


def test_an_error_event_lists_again_after_a_pause(monkeypatch) -> None:
    monkeypatch.setattr(rec, "WATCH_BACKOFF", (0.05, 0.2))
    calls: list[tuple[str, str]] = []
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}

    class Watcher:
        def list_objects(self, path: str, query=None, first_page_only=False):
            calls.append(("list", path))
            return [], str(len(calls))

        def watch(self, path: str, version: str, timeout: int, query=None) -> Iterator[dict[str, Any]]:
            calls.append(("watch", version))
            yield gone

    api = FakeApi(fleet("t4x2"))
    r = QuotaReconciler(api, "hami-core-gpu.project-hami.io", resync=3600, watch=Watcher())
    stop = threading.Event()
    thread = threading.Thread(target=r._watch_loop, args=(CLAIMS_PATH, stop), daemon=True)
    started = time.monotonic()
    thread.start()
    assert _wait(lambda: sum(1 for c in calls if c[0] == "watch") >= 4, 3)
    stop.set()
    thread.join(2)
    elapsed = time.monotonic() - started
    # every watch starts from a fresh list's version, never from "" and never the expired one again
    for i in range(0, 8, 2):
        assert calls[i][0] == "list" and calls[i + 1] == ("watch", str(i + 1))
    assert elapsed >= (0.05 + 0.1 + 0.2) / 2  # the pauses grew (each jittered by up to half)
