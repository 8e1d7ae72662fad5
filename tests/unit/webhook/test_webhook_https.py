"""The real HTTPS server on 127.0.0.1 with a self-signed certificate (made by the openssl command), answering
AdmissionReviews the way the API server sends them."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from webhook_fixtures import FakeApi, claim, container, fleet, pod, quota, review, slice_spec

from dra_hami.cli_options import parse_bind_address as parse_bind
from dra_hami.webhook import labels as L
from dra_hami.webhook.admission import Admission, AdmissionOptions
from dra_hami.webhook.review import apply_patch
from dra_hami.webhook.server import WebhookServer

DRIVER = "hami-core-gpu.project-hami.io"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def make_cert(directory: Path, name: str = "tls") -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def served(tmp_path: Path):
    cert, key = make_cert(tmp_path)
    api = FakeApi(fleet("t4x2"))
    api.namespaces["ns"] = {L.LEGACY_LABEL: L.LEGACY_ENABLED}
    admission = Admission(api, AdmissionOptions(DRIVER, policy_mode=True), sleep=lambda _: None)
    server = WebhookServer(
        ("127.0.0.1", 0),
        cert,
        key,
        {"/mutate-pods": admission.mutate_pod, "/validate-claims": admission.validate_claim},
    )
    server.start()
    yield server, api, cert
    server.shutdown()


def post(port: int, ca: Path, path: str, body: bytes) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def admission_review(request: dict) -> bytes:
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}).encode()


def test_legacy_pod_is_translated_and_gated_over_https(served) -> None:
    server, api, ca = served
    original = pod(
        container("worker", {"nvidia.com/gpu": 1, "nvidia.com/gpumem-percentage": 20, "nvidia.com/gpucores": 25})
    )
    status, body = post(server.port, ca, "/mutate-pods", admission_review(review(original)))
    assert status == 200
    out = json.loads(body)
    assert (out["apiVersion"], out["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    response = out["response"]
    assert response["uid"] == review(original)["uid"] and response["allowed"] is True
    patched = apply_patch(original, json.loads(base64.b64decode(response["patch"])))
    assert patched["spec"]["schedulingGates"] == [{"name": f"{DRIVER}/allocation"}]
    (name,) = [k[1] for k in api.templates]
    assert patched["spec"]["resourceClaims"] == [{"name": "hami-worker", "resourceClaimTemplateName": name}]


def test_quota_refusal_over_https_and_keepalive(served) -> None:
    server, api, ca = served
    api.add_quota(quota(gpus=1))
    ctx = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=10)
    try:
        answers = []
        for name in ("a", "b"):  # two reviews on one connection, as the API server does
            conn.request(
                "POST", "/validate-claims", admission_review(review(claim(name, slice_spec("1Gi")), "ResourceClaim"))
            )
            resp = conn.getresponse()
            assert resp.status == 200
            answers.append(json.loads(resp.read())["response"])
            api.add_claim(claim(name, slice_spec("1Gi")))
    finally:
        conn.close()
    assert answers[0]["allowed"] is True
    assert answers[1]["allowed"] is False and answers[1]["status"]["code"] == 403
    assert "gpus: used 1 + requested 1 = 2 exceeds the limit 1" in answers[1]["status"]["message"]


def test_health_bad_requests_unknown_paths_and_handler_crash(served, tmp_path: Path) -> None:
    server, _, ca = served
    ctx = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=10)
    conn.request("GET", "/healthz")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"ok")
    conn.close()
    assert post(server.port, ca, "/validate-claims", b"{not json")[0] == 400
    assert post(server.port, ca, "/nope", admission_review({"uid": "x"}))[0] == 404

    def boom(_request: dict):
        raise RuntimeError("bug")

    server.httpd.handlers["/crash"] = boom
    assert post(server.port, ca, "/crash", admission_review({"uid": "x"})) == (500, b"internal error")


def test_plain_http_and_untrusted_clients_are_turned_away(served, tmp_path: Path) -> None:
    server, _, _ = served
    other_ca, _ = make_cert(tmp_path, "other")
    with pytest.raises(ssl.SSLError):
        post(server.port, other_ca, "/mutate-pods", b"{}")
    plain = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        plain.request("GET", "/healthz")
        plain.getresponse().read()
    plain.close()
    # the server still answers properly afterwards
    assert post(server.port, served[2], "/validate-claims", b"x")[0] == 400


def test_rotated_certificate_is_served_without_a_restart(served, tmp_path: Path) -> None:
    server, _, ca = served
    old = tmp_path / "old.crt"
    shutil.copy(ca, old)
    assert post(server.port, old, "/validate-claims", b"x")[0] == 400  # TLS fine with the first certificate
    server.tls.check_every = 0
    new_cert, new_key = make_cert(tmp_path, "rotated")
    shutil.copy(new_key, server.tls.key)
    shutil.copy(new_cert, server.tls.cert)
    os.utime(server.tls.cert, (1, 1))  # a distinct mtime even on coarse clocks
    assert post(server.port, new_cert, "/validate-claims", b"x")[0] == 400  # the new one is served...
    with pytest.raises(ssl.SSLError):
        post(server.port, old, "/validate-claims", b"x")  # ...and the old one is not


def test_parse_bind() -> None:
    assert parse_bind("0.0.0.0:9443", "--bind-address") == ("0.0.0.0", 9443)
    assert parse_bind(":9403", "--metrics-bind-address") == ("0.0.0.0", 9403)
    assert parse_bind("[::1]:8443", "x") == ("::1", 8443)
    with pytest.raises(ValueError, match=r"--bind-address: '9443' is not HOST:PORT"):
        parse_bind("9443", "--bind-address")
