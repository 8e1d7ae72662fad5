"""The HTTPS admission server (stdlib ``http.server`` + ``ssl``, one thread per connection).

Paths: POST /mutate-pods, POST /validate-claims, GET /healthz. The certificate and key are re-read when their
files change (cert-manager and kubelet-mounted secrets rotate them in place), checked at most every 10 s.
A handler that raises answers 500: the API server then applies the webhook's failurePolicy (Ignore for pods,
so an outage or a bug never blocks a pod; Fail for our claims).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Histogram

from dra_hami.webhook.review import Response, ReviewError, parse, render

log = logging.getLogger(__name__)

MAX_BODY = 8 << 20  # an AdmissionReview of a huge pod is still far below this

REVIEWS = Counter("dra_hami_webhook_reviews_total", "Admission reviews answered", ["path", "result"])
LATENCY = Histogram(
    "dra_hami_webhook_review_seconds", "Time to answer one admission review", ["path"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)  # fmt: skip

Handler = Callable[[dict[str, Any]], Response]


class ReloadingContext:
    """An SSLContext per certificate generation; ``context()`` swaps in a new one when the files change."""

    def __init__(self, cert: Path, key: Path, check_every: float = 10.0) -> None:
        self.cert, self.key, self.check_every = cert, key, check_every
        self._lock = threading.Lock()
        self._stamp = self._files_stamp()
        self._ctx = self._load()
        self._checked = time.monotonic()

    def _files_stamp(self) -> tuple[float, float]:
        return (os.stat(self.cert).st_mtime, os.stat(self.key).st_mtime)

    def _load(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key))
        ctx.sni_callback = self._sni
        return ctx

    def context(self) -> ssl.SSLContext:
        now = time.monotonic()
        with self._lock:
            if now - self._checked >= self.check_every:
                self._checked = now
                try:
                    stamp = self._files_stamp()
                    if stamp != self._stamp:
                        self._ctx, self._stamp = self._load(), stamp
                        log.info("reloaded TLS certificate %s", self.cert)
                except (OSError, ssl.SSLError) as err:
                    log.warning("keeping the old TLS certificate; could not load the new one: %s", err)
            return self._ctx

    def _sni(self, sock: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        current = self.context()
        if sock.context is not current:
            sock.context = current


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handlers: dict[str, Handler], tls: ReloadingContext) -> None:
        self.handlers, self.tls = handlers, tls
        super().__init__(address, _RequestHandler)

    def get_request(self):  # TLS per connection, handshake in the connection's own thread
        sock, addr = super().get_request()
        return self.tls.context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # the API server keeps connections open
    timeout = 30

    def handle(self) -> None:
        try:
            self.connection.do_handshake()  # type: ignore[attr-defined]
        except (ssl.SSLError, OSError) as err:
            log.debug("TLS handshake from %s failed: %s", self.client_address, err)
            return
        super().handle()

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.split("?")[0] in ("/healthz", "/readyz", "/livez"):
            self._send(200, b"ok", "text/plain")
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        handler = self.server.handlers.get(path)
        if handler is None:
            self._send(404, b"not found", "text/plain")
            return
        started = time.perf_counter()
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            REVIEWS.labels(path, "bad-request").inc()
            self._send(HTTPStatus.BAD_REQUEST, f"body must be 1..{MAX_BODY} bytes".encode(), "text/plain")
            return
        body = self.rfile.read(length)
        try:
            request = parse(body)
        except ReviewError as err:
            REVIEWS.labels(path, "bad-request").inc()
            self._send(HTTPStatus.BAD_REQUEST, str(err).encode(), "text/plain")
            return
        try:
            response = handler(request)
        except Exception:
            log.exception("admission handler %s failed for %s", path, request.get("uid"))
            REVIEWS.labels(path, "error").inc()
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error", "text/plain")
            return
        result = "denied" if not response.allowed else ("patched" if response.patch else "allowed")
        REVIEWS.labels(path, result).inc()
        LATENCY.labels(path).observe(time.perf_counter() - started)
        self._send(200, render(request["uid"], response))


class WebhookServer:
    """Owns the listening socket; ``serve`` blocks until ``shutdown``."""

    def __init__(self, bind: tuple[str, int], cert: Path, key: Path, handlers: dict[str, Handler]) -> None:
        self.tls = ReloadingContext(cert, key)
        self.httpd = _Server(bind, handlers, self.tls)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def serve(self) -> None:
        self.httpd.serve_forever(poll_interval=0.5)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve, name="webhook-https", daemon=True)
        thread.start()
        return thread

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
