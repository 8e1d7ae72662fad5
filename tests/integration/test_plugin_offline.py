"""The kubelet plugin keeps its node working while the API server is away (a subprocess on real unix
sockets, the real Kubernetes client, the demo's in-memory API server stopped and started again)."""

from __future__ import annotations

import time

import pytest
from plugin_harness import DRIVER, PluginProcess, allocated_claim

from dra_hami.demo.apiserver import FakeApiServer


@pytest.fixture
def api():
    server = FakeApiServer().start()
    yield server
    server.stop()


@pytest.fixture
def make_plugin(tmp_path, api):
    made = []

    def make(**kwargs) -> PluginProcess:
        process = PluginProcess(tmp_path, api, **kwargs)
        made.append(process)
        return process

    yield make
    for process in made:
        process.cleanup()


def spec_path(plugin: PluginProcess, claim: dict) -> object:
    return plugin.cdi_dir / f"k8s.{DRIVER}-claim_{claim['metadata']['uid']}.json"


def wait_for(condition, timeout: float = 15.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition not reached in time"
        time.sleep(0.05)
    return time.monotonic() - started


def test_the_node_works_through_an_api_server_outage_and_catches_up(make_plugin, api):
    plugin = make_plugin().start()
    wait_for(lambda: api.list("resourceslices"))
    a, b = allocated_claim("a", memory="4Gi"), allocated_claim("b", memory="2Gi", device="hami-gpu-1")
    for claim in (a, b):
        api.put("resourceclaims", claim)
    first = plugin.prepare([a]).claims[a["metadata"]["uid"]]
    assert first.error == ""

    api.stop()
    started = time.monotonic()
    again = plugin.prepare([a, b])
    elapsed = time.monotonic() - started
    assert again.claims[a["metadata"]["uid"]] == first  # a repeat: from the checkpoint
    error = again.claims[b["metadata"]["uid"]].error
    assert error.startswith("API server unreachable: reading ResourceClaim default/b: "), error
    assert "refused" in error.lower()
    assert elapsed < 10, elapsed  # answered, not hung on the dead server
    assert plugin.unprepare([a]).claims[a["metadata"]["uid"]].error == ""
    assert not spec_path(plugin, a).exists()
    # the node's slices go while the plugin cannot see it (the kubelet deletes them when it restarts)
    for slice_ in api.list("resourceslices"):
        api.delete("resourceslices", slice_["metadata"]["name"])

    api.start()  # same port, same objects: the plugin catches up without a restart
    assert plugin.prepare([b]).claims[b["metadata"]["uid"]].error == ""
    assert spec_path(plugin, b).exists()
    wait_for(lambda: api.list("resourceslices"), timeout=40)
    assert plugin.proc is not None and plugin.proc.poll() is None
    log = plugin.log_path.read_text()
    assert "Traceback" not in log, log[-3000:]


def test_the_plugin_starts_registers_and_serves_with_no_api_server(make_plugin, api):
    claim = allocated_claim("c1")
    api.put("resourceclaims", claim)
    api.stop()  # the port now refuses connections
    plugin = make_plugin().start()  # registers: start() waits for GetInfo on the registration socket
    info = plugin.get_info()
    assert info.name == DRIVER
    error = plugin.prepare([claim]).claims[claim["metadata"]["uid"]].error
    assert error.startswith("API server unreachable: "), error
    assert plugin.unprepare([claim]).claims[claim["metadata"]["uid"]].error == ""

    api.start()
    wait_for(lambda: api.list("resourceslices"), timeout=40)  # the publisher got through on its own
    assert plugin.prepare([claim]).claims[claim["metadata"]["uid"]].error == ""
    assert plugin.proc is not None and plugin.proc.poll() is None


def test_prepare_uses_the_published_inventory_when_discovery_fails(make_plugin, api, tmp_path):
    profile = tmp_path / "gpus.yaml"
    profile.write_text(
        "gpus:\n"
        "  - {uuid: GPU-aaaaaaaa-0000-0000-0000-000000000000, pciBusID: '0000:3b:00.0', minor: 0,"
        " productName: Tesla T4, memory: 15360Mi, cudaComputeCapability: '7.5'}\n"
        "  - {uuid: GPU-bbbbbbbb-0000-0000-0000-000000000000, pciBusID: '0000:af:00.0', minor: 1,"
        " productName: Tesla T4, memory: 15360Mi, cudaComputeCapability: '7.5'}\n"
    )
    plugin = make_plugin(profile=str(profile)).start()
    wait_for(lambda: api.list("resourceslices"))
    wait_for(lambda: (plugin.plugin_dir / "inventory.json").exists())
    profile.write_text("gpus: [this is not a GPU]\n")  # discovery now fails as a whole (a GPU off the bus)
    claim = allocated_claim("c1", device="hami-gpu-1")
    api.put("resourceclaims", claim)
    assert plugin.prepare([claim]).claims[claim["metadata"]["uid"]].error == ""


def test_a_wiped_cdi_dir_is_rebuilt_at_start_and_by_the_sweep(make_plugin, api):
    plugin = make_plugin(extra_args=["--sweep-interval", "0.5"]).start()
    claim = allocated_claim("c1")
    api.put("resourceclaims", claim)
    assert plugin.prepare([claim]).claims[claim["metadata"]["uid"]].error == ""
    content = spec_path(plugin, claim).read_bytes()
    spec_path(plugin, claim).unlink()  # wiped while pods run: no prepare will come for them
    healed = wait_for(lambda: spec_path(plugin, claim).exists(), timeout=10)
    assert spec_path(plugin, claim).read_bytes() == content
    plugin.stop()
    spec_path(plugin, claim).unlink()
    plugin.start()  # rebuilt before the plugin registers
    assert spec_path(plugin, claim).read_bytes() == content
    assert healed < 10
