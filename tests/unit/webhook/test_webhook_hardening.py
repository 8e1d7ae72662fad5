"""The webhook's HTTPS server against hostile callers, over real sockets on 127.0.0.1 (issue 18 item 7):
only a client certificate the configured CA signed gets an answer, a slow client is cut off by the request
deadline, an oversized body is refused unread, and connections beyond the pool and its queue are closed."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from webhook_fixtures import FakeApi, claim, fleet, quota, review, slice_spec

from dra_hami.webhook.admission import Admission, AdmissionOptions
from dra_hami.webhook.server import MAX_BODY, REFUSED_CONNECTIONS, ClientAuth, ServerLimits, WebhookServer

DRIVER = "hami-core-gpu.project-hami.io"
pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    crt, key = d / f"{name}.crt", d / f"{name}.key"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            str(key), "-out", str(crt), "-days", "1", "-subj", f"/CN={name}",
            "-addext", "subjectAltName=IP:127.0.0.1")  # fmt: skip
    return crt, key


def sign(d: Path, ca: tuple[Path, Path], cn: str) -> tuple[Path, Path]:
    stem = f"{cn}-by-{ca[0].stem}"
    crt, key, csr = d / f"{stem}.crt", d / f"{stem}.key", d / f"{stem}.csr"
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
            "-out", str(csr), "-subj", f"/CN={cn}")  # fmt: skip
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
            "-out", str(crt), "-days", "1")  # fmt: skip
    return crt, key


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    client_ca = make_ca(tmp_path, "client-ca")
    return {
        "serving": make_ca(tmp_path, "serving"),  # self-signed serving certificate, trusted directly
        "client_ca": client_ca,
        "apiserver": sign(tmp_path, client_ca, "kube-apiserver"),
        "other": sign(tmp_path, client_ca, "someone-else"),
        "forged": sign(tmp_path, make_ca(tmp_path, "attacker-ca"), "kube-apiserver"),
    }


def serve(pki, limits: ServerLimits, names: frozenset[str] = frozenset(), api: FakeApi | None = None):
    api = api or FakeApi(fleet("t4x2"))
    admission = Admission(api, AdmissionOptions(DRIVER), sleep=lambda _: None)
    server = WebhookServer(("127.0.0.1", 0), *pki["serving"], {"/validate-claims": admission.validate_claim},
                           limits, ClientAuth(pki["client_ca"][0], names))  # fmt: skip
    server.start()
    return server, api


def context(pki, client: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["serving"][0]))
    if client:
        ctx.load_cert_chain(*(str(p) for p in pki[client]))
    return ctx


def charge_review() -> bytes:
    """The attack of item 7: a forged review that makes the webhook charge a victim namespace's quota."""
    request = review(claim("forged", slice_spec("15Gi", "100")), "ResourceClaim")
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}).encode()


def post(server, ctx, body: bytes) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=10)
    try:
        conn.request("POST", "/validate-claims", body, {"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def get_health(server, ctx) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


def connect(server, ctx) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed the connection (whatever it still had to say is read first)."""
    try:
        while sock.recv(4096):
            pass
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    return True


def test_only_a_client_certificate_the_ca_signed_gets_an_answer(pki) -> None:
    api = FakeApi(fleet("t4x2"))
    api.add_quota(quota(gpus=2))
    server, _ = serve(pki, ServerLimits(), api=api)
    try:
        with pytest.raises((ssl.SSLError, ConnectionError)):  # a foreign CA's certificate: the handshake fails
            post(server, context(pki, "forged"), charge_review())
        assert post(server, context(pki, None), charge_review()) == 403  # none: refused before the body
        assert "status" not in api.quotas[("ns", "budget")]  # nothing was charged
        assert get_health(server, context(pki, None)) == 200  # the kubelet's probes need no certificate
        assert post(server, context(pki, "apiserver"), charge_review()) == 200
        assert api.quotas[("ns", "budget")]["status"]["used"]["gpus"] == 1
    finally:
        server.shutdown()


def test_an_allowed_common_name_can_be_required(pki) -> None:
    server, _ = serve(pki, ServerLimits(), names=frozenset({"kube-apiserver"}))
    try:
        assert post(server, context(pki, "other"), charge_review()) == 403
        assert post(server, context(pki, "apiserver"), charge_review()) == 200
    finally:
        server.shutdown()


def test_a_slow_client_is_cut_off_at_the_request_deadline(pki) -> None:
    server, _ = serve(pki, ServerLimits(request_deadline=0.5))
    try:
        ctx = context(pki, "apiserver")
        idle = connect(server, ctx)  # handshake done, never sends a request
        dribble = connect(server, ctx)
        dribble.sendall(b"POST /validate-claims HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        sent, cut = 0, False
        started = time.monotonic()
        while time.monotonic() - started < 8:  # 1 byte every 50 ms: each read is quick, the whole is not
            try:
                dribble.sendall(b"{")
                sent += 1
            except OSError:
                cut = True
                break
            time.sleep(0.05)
        assert cut and sent < 1000, "a dribbling client kept its worker"
        assert closed_by_server(idle)
        assert post(server, ctx, b"x") == 400  # the server still answers others
    finally:
        server.shutdown()


def test_an_oversized_or_unsized_body_is_refused_unread(pki) -> None:
    server, _ = serve(pki, ServerLimits())
    try:
        sock = connect(server, context(pki, "apiserver"))
        sock.sendall(f"POST /validate-claims HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode())
        reply = sock.recv(4096)  # answered without waiting for (or reading) the 3 MiB body
        assert reply.startswith(b"HTTP/1.1 413 ")
        assert closed_by_server(sock)
        sock = connect(server, context(pki, "apiserver"))
        sock.sendall(b"POST /validate-claims HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 411 ")
    finally:
        server.shutdown()


def test_the_worker_pool_and_its_queue_are_bounded(pki) -> None:
    server, _ = serve(pki, ServerLimits(workers=1, queue=1, request_deadline=30))
    try:
        ctx = context(pki, "apiserver")
        holder = connect(server, ctx)  # takes the only worker (idle keep-alive connection)
        queued = socket.create_connection(("127.0.0.1", server.port), timeout=10)  # waits for the worker
        time.sleep(0.2)
        before = REFUSED_CONNECTIONS.labels("busy")._value.get()
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        assert closed_by_server(extra)  # beyond workers + queue: closed at once, nothing parsed
        assert REFUSED_CONNECTIONS.labels("busy")._value.get() == before + 1
        holder.close()  # the worker frees up: the queued connection is served
        queued_tls = ctx.wrap_socket(queued, server_hostname="127.0.0.1")
        queued_tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert queued_tls.recv(4096).startswith(b"HTTP/1.1 200 ")
        queued_tls.close()
    finally:
        server.shutdown()


def test_an_idle_kept_alive_connection_gives_its_worker_back(pki) -> None:
    server, _ = serve(pki, ServerLimits(workers=1, queue=1, request_deadline=30, idle_timeout=0.3))
    try:
        ctx = context(pki, "apiserver")
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b"ok"  # kept alive, then idle: closed after idle_timeout...
        assert get_health(server, ctx) == 200  # ...so the next caller gets the only worker (not after 30 s)
        conn.close()
    finally:
        server.shutdown()
