"""The kubelet-plugin container's probe endpoints over HTTP: /livez (the process serves) and /readyz (the
kubelet registered the driver and this node's ResourceSlices are in the API server).

Ready means a pod scheduled to this node now can have its claims prepared: without the registration the kubelet
refuses the prepare ("driver is not registered"), without the slices the scheduler cannot allocate here. Once
both happened readiness stays: a later API server outage does not stop the plugin serving what it published.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from dra_hami.cli_options import listen_error, parse_bind_address

log = logging.getLogger(__name__)


class Registered(Protocol):
    """What the registration service learnt from the kubelet (server.RegistrationStatus)."""

    registered: bool
    error: str


class Readiness:
    def __init__(self, registration: Registered | None = None) -> None:
        self._registration = registration
        self._published = threading.Event()

    def watch(self, registration: Registered) -> None:
        """The registration service's status (made after the publisher, which reports to us from the start)."""
        self._registration = registration

    def published(self) -> None:
        """Told by the publisher each time the API server holds this node's pool."""
        self._published.set()

    def check(self) -> tuple[bool, str]:
        """(ready, why): the first unmet condition, in the order an operator should look at them."""
        if self._registration is None or not self._registration.registered:
            error = self._registration.error if self._registration is not None else ""
            return False, "not registered with the kubelet" + (f": the kubelet refused it ({error})" if error else "")
        if not self._published.is_set():
            return False, "registered, but this node's ResourceSlices are not published yet"
        return True, "ok"


def _handler(readiness: Readiness) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path in ("/livez", "/healthz"):
                self._reply(200, "ok")
            elif path == "/readyz":
                ready, why = readiness.check()
                self._reply(200 if ready else 503, why)
            else:
                self._reply(404, "not found: try /livez or /readyz")

        def _reply(self, code: int, text: str) -> None:
            body = (text + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # a line per probe is noise
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def serve(readiness: Readiness, address: str) -> ThreadingHTTPServer:
    """Serve the probes on ``address`` (HOST:PORT; port 0 picks one) in a daemon thread; shutdown() stops it."""
    host, port = parse_bind_address(address, "--health-bind-address")
    try:
        server = _Server((host, port), _handler(readiness))
    except OSError as err:
        raise listen_error("--health-bind-address", address, err) from None
    threading.Thread(target=server.serve_forever, name="probes-http", daemon=True).start()
    log.info("serving /livez and /readyz on %s:%d", host, server.server_address[1])
    return server
