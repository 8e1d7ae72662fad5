"""Device health end to end on fake GPUs: an injected XID reaches the kubelet's DRAResourceHealth stream over
the plugin's real unix socket and taints the ResourceSlice; removing it clears both, without a restart."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from plugin_harness import DRIVER, NODE, PluginProcess

from dra_hami.demo.apiserver import FakeApiServer
from dra_hami.kubeletapi import dra_health_v1alpha1_pb2 as pb2
from dra_hami.kubeletapi import dra_health_v1alpha1_pb2_grpc as pb2_grpc


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    yield server
    server.stop()


@pytest.fixture
def plugin(tmp_path, api) -> Iterator[PluginProcess]:
    process = PluginProcess(tmp_path, api).start()
    yield process
    process.cleanup()


class Stream:
    """The kubelet's side: one NodeWatchResources stream, responses collected by a thread."""

    def __init__(self, plugin: PluginProcess):
        self.channel = grpc.insecure_channel(f"unix://{plugin.dra_socket}")
        stub = pb2_grpc.DRAResourceHealthStub(self.channel)
        self.call = stub.NodeWatchResources(pb2.NodeWatchResourcesRequest())
        self.responses: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for response in self.call:
                self.responses.put(response)
        except grpc.RpcError as err:
            self.responses.put(err)

    def next_matching(self, want: Callable[[dict[str, Any]], bool], timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            item = self.responses.get(timeout=max(0.1, deadline - time.monotonic()))
            assert not isinstance(item, grpc.RpcError), item
            state = {d.device.device_name: d for d in item.devices}
            if want(state) or time.monotonic() > deadline:
                return state

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()


def slice_taints(api: FakeApiServer) -> dict[str, list[dict[str, Any]]]:
    return {d["name"]: d.get("taints") or [] for s in api.list("resourceslices") for d in s["spec"]["devices"]}


def wait_for(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def test_injected_xid_taints_and_streams_then_recovers(plugin: PluginProcess, api: FakeApiServer) -> None:
    assert "v1alpha1.DRAResourceHealth" in plugin.get_info().supported_versions
    stream = Stream(plugin)
    try:
        first = stream.next_matching(lambda s: len(s) == 2)
        assert {name: d.health for name, d in first.items()} == {"hami-gpu-0": pb2.HEALTHY, "hami-gpu-1": pb2.HEALTHY}
        assert all(d.device.pool_name == NODE and d.health_check_timeout_seconds > 0 for d in first.values())
        wait_for(lambda: set(slice_taints(api)) == {"hami-gpu-0", "hami-gpu-1"})

        health_file = plugin.plugin_dir / "fake-health.yaml"
        health_file.write_text("hami-gpu-1: {xid: 79}\n")
        sick = stream.next_matching(lambda s: s["hami-gpu-1"].health == pb2.UNHEALTHY)
        assert sick["hami-gpu-1"].health == pb2.UNHEALTHY and "XID 79" in sick["hami-gpu-1"].message
        assert sick["hami-gpu-0"].health == pb2.HEALTHY
        wait_for(lambda: bool(slice_taints(api)["hami-gpu-1"]))
        (taint,) = slice_taints(api)["hami-gpu-1"]
        assert (taint["key"], taint["value"], taint["effect"]) == (f"{DRIVER}/unhealthy", "xid-79", "NoSchedule")
        assert taint["timeAdded"].endswith("Z")
        assert slice_taints(api)["hami-gpu-0"] == []

        health_file.unlink()  # recovered
        well = stream.next_matching(lambda s: s["hami-gpu-1"].health == pb2.HEALTHY)
        assert well["hami-gpu-1"].health == pb2.HEALTHY
        wait_for(lambda: slice_taints(api)["hami-gpu-1"] == [])
        assert plugin.proc is not None and plugin.proc.poll() is None  # no restart
    finally:
        stream.close()


def test_no_device_health_flag_means_unimplemented(tmp_path, api: FakeApiServer) -> None:
    process = PluginProcess(tmp_path, api, extra_args=["--no-device-health"]).start()
    try:
        assert "v1alpha1.DRAResourceHealth" not in process.get_info().supported_versions
        with grpc.insecure_channel(f"unix://{process.dra_socket}") as channel:
            call = pb2_grpc.DRAResourceHealthStub(channel).NodeWatchResources(pb2.NodeWatchResourcesRequest())
            with pytest.raises(grpc.RpcError) as err:
                next(iter(call))
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        process.cleanup()
