"""The kubelet-plugin container's /livez and /readyz, over real HTTP on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from dra_hami.cli_options import ListenError
from dra_hami.kubeletapi import pluginregistration_pb2
from dra_hami.plugin.probes import Readiness, serve
from dra_hami.plugin.server import Registration, RegistrationStatus


def get(server, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def status():
    return RegistrationStatus()


@pytest.fixture
def readiness(status):
    return Readiness(status)


@pytest.fixture
def server(readiness):
    server = serve(readiness, "127.0.0.1:0")
    yield server
    server.shutdown()
    server.server_close()


def kubelet_says(status: RegistrationStatus, registered: bool, error: str = "") -> None:
    """What the kubelet's plugin watcher calls on the registration socket after GetInfo."""
    service = Registration("gpu.example.com", "/plugins/dra.sock", status)  # type: ignore[arg-type]
    service.NotifyRegistrationStatus(
        pluginregistration_pb2.RegistrationStatus(plugin_registered=registered, error=error), None
    )


def test_not_registered_is_unready_but_alive(server):
    assert get(server, "/readyz") == (503, "not registered with the kubelet\n")
    assert get(server, "/livez") == (200, "ok\n")


def test_a_refused_registration_says_what_the_kubelet_said(server, status):
    kubelet_says(status, False, "version v9 not supported")
    code, text = get(server, "/readyz")
    assert code == 503
    assert "the kubelet refused it (version v9 not supported)" in text


def test_registered_but_unpublished_is_unready(server, status):
    kubelet_says(status, True)
    assert get(server, "/readyz") == (503, "registered, but this node's ResourceSlices are not published yet\n")


def test_published_but_unregistered_is_unready(server, readiness):
    readiness.published()
    assert get(server, "/readyz")[0] == 503


def test_registered_and_published_is_ready(server, status, readiness):
    kubelet_says(status, True)
    readiness.published()
    assert get(server, "/readyz") == (200, "ok\n")
    assert get(server, "/livez") == (200, "ok\n")


def test_a_registration_status_attached_later_counts(status):
    readiness = Readiness()
    readiness.published()
    assert readiness.check() == (False, "not registered with the kubelet")
    readiness.watch(status)
    kubelet_says(status, True)
    assert readiness.check() == (True, "ok")


def test_unknown_path_is_404(server):
    assert get(server, "/metrics")[0] == 404


def test_a_taken_port_names_the_option(server, readiness):
    with pytest.raises(ListenError, match=r"--health-bind-address 127\.0\.0\.1:.*another process listens there"):
        serve(readiness, f"127.0.0.1:{server.server_address[1]}")
