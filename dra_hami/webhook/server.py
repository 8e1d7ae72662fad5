"""The HTTPS admission server (stdlib ``http.server`` + ``ssl``) hardened for a hostile network.

Paths: POST /mutate-pods, POST /validate-claims, GET /healthz. The certificate and key (and the client CA)
are re-read when their files change (cert-manager and kubelet-mounted secrets rotate them in place), checked
at most every 10 s. A handler that raises answers 500: the API server then applies the webhook's
failurePolicy (Ignore for pods, so an outage or a bug never blocks a pod; Fail for claims).

Only the API server may call it (issue 18 item 7): with a client CA (``--client-ca-file``) the TLS handshake
requires a client certificate signed by it (the API server presents one when its AdmissionConfiguration
names it, docs/security.md), optionally with an allowed common name. A fixed pool of workers serves the
connections (more wait in a bounded queue; beyond it they are closed at once), the TLS handshake and every
request have one total deadline each (a request's from its first line to the response), so a slow client
cannot hold a worker (slowloris), an idle kept-alive connection is closed after a short wait, and bodies are
limited to the largest review the API server can send.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Histogram

from dra_hami.webhook.review import Response, ReviewError, parse, render

log = logging.getLogger(__name__)

# The API server refuses request bodies over 3 MiB (its maxRequestBodyBytes), so no object it admits is
# larger; a review wraps one object (CREATE has no oldObject) with a few hundred bytes of request fields.
MAX_BODY = (3 << 20) + (64 << 10)

REVIEWS = Counter("dra_hami_webhook_reviews_total", "Admission reviews answered", ["path", "result"])
REFUSED_CONNECTIONS = Counter(
    "dra_hami_webhook_refused_connections_total", "Connections closed without an answer", ["reason"]
)
LATENCY = Histogram(
    "dra_hami_webhook_review_seconds", "Time to answer one admission review", ["path"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)  # fmt: skip

Handler = Callable[[dict[str, Any]], Response]


@dataclass(frozen=True)
class ServerLimits:
    workers: int = 8  # reviews parsed at once: each can hold a 3 MiB body and its parsed JSON
    queue: int = 64  # accepted connections waiting for a worker; more are closed at once
    request_deadline: float = 10.0  # seconds from a request's first line to its answer; also bounds the handshake
    idle_timeout: float = 2.0  # a kept-alive connection that sends no next request gives its worker back
    max_body: int = MAX_BODY


@dataclass(frozen=True)
class ClientAuth:
    """Who may call: a client certificate signed by ``ca`` and, if given, with one of ``names`` as its CN."""

    ca: Path
    names: frozenset[str] = frozenset()


class Reaper:
    """Closes sockets whose deadline passed (one thread for all connections, instead of a timer each)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._cond = threading.Condition()
        threading.Thread(target=self._run, name="webhook-reaper", daemon=True).start()

    def watch(self, sock: socket.socket, seconds: float) -> int:
        token = next(self._ids)
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + seconds, token, sock))
            self._live.add(token)
            self._cond.notify()
        return token

    def release(self, token: int) -> None:
        with self._cond:
            self._live.discard(token)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, token, sock = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(timeout=wait)
                    continue
                heapq.heappop(self._heap)
                expired = token in self._live
                self._live.discard(token)
            if expired:
                REFUSED_CONNECTIONS.labels("deadline").inc()
                # Wakes the worker blocked in recv/send; the plain socket's shutdown leaves the TLS object
                # alone (SSLSocket.shutdown would drop it under the worker's feet).
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


class ReloadingContext:
    """An SSLContext per certificate generation; ``context()`` swaps in a new one when the files change."""

    def __init__(self, cert: Path, key: Path, check_every: float = 10.0, client_ca: Path | None = None) -> None:
        self.cert, self.key, self.check_every, self.client_ca = cert, key, check_every, client_ca
        self._lock = threading.Lock()
        self._stamp = self._files_stamp()
        self._ctx = self._load()
        self._checked = time.monotonic()

    def _files_stamp(self) -> tuple[float, ...]:
        files = [self.cert, self.key] + ([self.client_ca] if self.client_ca else [])
        return tuple(os.stat(f).st_mtime for f in files)

    def _load(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key))
        if self.client_ca is not None:
            ctx.load_verify_locations(cafile=str(self.client_ca))
            # A certificate the CA did not sign fails the handshake; none at all is let through so the
            # kubelet's probes reach /healthz, and the review paths then refuse it (``_client_refusal``).
            ctx.verify_mode = ssl.CERT_OPTIONAL
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


class _Server(HTTPServer):
    """Accepts on one thread; a fixed pool serves the connections (``ThreadingHTTPServer`` had no cap)."""

    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handlers: dict[str, Handler], tls: ReloadingContext,
                 limits: ServerLimits, client_auth: ClientAuth | None) -> None:  # fmt: skip
        self.handlers, self.tls, self.limits, self.client_auth = handlers, tls, limits, client_auth
        self.reaper = Reaper()
        self._pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="webhook-worker")
        self._slots = threading.BoundedSemaphore(limits.workers + limits.queue)
        super().__init__(address, _RequestHandler)

    def get_request(self):  # TLS per connection, handshake in the worker (under the request deadline)
        sock, addr = super().get_request()
        return self.tls.context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            REFUSED_CONNECTIONS.labels("busy").inc()
            self.shutdown_request(request)
            return
        self._pool.submit(self._serve, request, client_address)

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # the handler logs its own errors; a broken connection must not kill the worker
            log.debug("connection from %s ended with an error", client_address, exc_info=True)
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # the API server keeps connections open

    def setup(self) -> None:
        super().setup()
        self._served = 0
        self._token = self.server.reaper.watch(self.connection, self.server.limits.request_deadline)

    def _arm(self, seconds: float) -> None:
        self.server.reaper.release(self._token)
        self._token = self.server.reaper.watch(self.connection, seconds)

    def finish(self) -> None:
        self.server.reaper.release(self._token)
        with contextlib.suppress(OSError):
            super().finish()

    def handle(self) -> None:
        try:
            self.connection.do_handshake()
        except (ssl.SSLError, OSError) as err:
            REFUSED_CONNECTIONS.labels("tls").inc()
            log.debug("TLS handshake from %s failed: %s", self.client_address, err)
            return
        super().handle()

    def handle_one_request(self) -> None:
        # Between requests on a kept-alive connection only a short wait: an idle connection must not hold
        # one of the few workers (the API server opens a new one when it needs it).
        if self._served:
            self._arm(self.server.limits.idle_timeout)
        self._served += 1
        super().handle_one_request()

    def parse_request(self) -> bool:
        self._arm(self.server.limits.request_deadline)  # the request line is in: one deadline for the rest
        return super().parse_request()

    def _client_refusal(self) -> str:
        """Why this connection may not post reviews ("" = it may)."""
        auth = self.server.client_auth
        if auth is None:
            return ""
        cert = self.connection.getpeercert()
        if not cert:
            return "no client certificate"
        names = {v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"}
        if auth.names and not names & auth.names:
            return f"client certificate common name {sorted(names)} is not one of {sorted(auth.names)}"
        return ""

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
        refusal = self._client_refusal()
        if refusal:  # answered before the body is read: a caller that is not the API server gets nothing more
            REFUSED_CONNECTIONS.labels("client-certificate").inc()
            log.warning("refused a review from %s: %s", self.client_address, refusal)
            self.close_connection = True
            self._send(HTTPStatus.FORBIDDEN, f"{refusal}: only the API server may call".encode(), "text/plain")
            return
        started = time.perf_counter()
        limit = self.server.limits.max_body
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length <= 0 or length > limit:
            REVIEWS.labels(path, "bad-request").inc()
            self.close_connection = True  # never read (or skip) a body we refuse
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE if length > limit else HTTPStatus.LENGTH_REQUIRED,
                       f"body must be 1..{limit} bytes with a Content-Length".encode(), "text/plain")  # fmt: skip
            return
        body = self.rfile.read(length)
        if len(body) != length:
            return  # the client went away (or the deadline closed the connection)
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

    def __init__(self, bind: tuple[str, int], cert: Path, key: Path, handlers: dict[str, Handler],
                 limits: ServerLimits | None = None, client_auth: ClientAuth | None = None) -> None:  # fmt: skip
        self.tls = ReloadingContext(cert, key, client_ca=client_auth.ca if client_auth else None)
        self.httpd = _Server(bind, handlers, self.tls, limits or ServerLimits(), client_auth)

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
