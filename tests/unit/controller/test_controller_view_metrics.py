"""The view's event handling and the HAMi allocation gauges computed from it."""

from __future__ import annotations

import copy

from controller_factories import DRIVER, NS, GiB, allocated, allocation_on, claim, pod, view
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dra_hami.controller.metrics import ControllerMetrics, device_usage
from dra_hami.controller.view import CLAIMS, DELETED, MODIFIED, PODS, SLICES


def test_stale_watch_event_after_our_own_write_is_dropped() -> None:
    c = claim("c1")
    v = view(claims=[c])
    newer = allocated(c, allocation_on("n1", "hami-gpu-0"))
    v.apply(CLAIMS, MODIFIED, newer)
    assert v.state.is_allocated(f"{NS}/c1")
    assert v.apply(CLAIMS, MODIFIED, c) is None  # the watch delivers the older version late
    assert v.state.is_allocated(f"{NS}/c1")


def test_deallocation_and_deletion_free_capacity() -> None:
    c = allocated(claim("c1"), allocation_on("n1", "hami-gpu-0"))
    v = view(claims=[c])
    assert v.state.usage(next(k for k in v.state.devices if k.device == "hami-gpu-0")).shares == 1
    released = copy.deepcopy(c)
    released["status"] = {}
    released["metadata"]["resourceVersion"] = str(int(c["metadata"]["resourceVersion"]) + 1)
    change = v.apply(CLAIMS, MODIFIED, released)
    assert change.frees_capacity
    assert not v.state.is_allocated(f"{NS}/c1")
    assert v.apply(CLAIMS, DELETED, released).frees_capacity is False  # nothing was allocated any more


def test_slice_change_rebuilds_the_state_and_keeps_allocations() -> None:
    c = allocated(claim("c1"), allocation_on("n1", "hami-gpu-0"))
    v = view(nodes=["n1"], claims=[c])
    before = v.state
    (s,) = v.slices.values()
    smaller = copy.deepcopy(s)
    smaller["spec"]["devices"] = smaller["spec"]["devices"][:2]
    smaller["metadata"]["resourceVersion"] = "9999999"
    assert v.apply(SLICES, MODIFIED, smaller).frees_capacity
    assert v.state is not before
    assert len(v.state.devices) == 2
    assert v.state.is_allocated(f"{NS}/c1")


def test_bad_object_is_left_out_with_its_error_and_the_rest_still_works() -> None:
    bad = claim("bad")
    bad["spec"]["devices"]["requests"][0]["exactly"]["count"] = "many"
    c = allocated(claim("c1"), allocation_on("n1", "hami-gpu-0"))
    v = view(claims=[bad, c])
    assert v.state.is_allocated(f"{NS}/c1")
    assert "ResourceClaim team/bad" in v.bad[f"resourceclaims {NS}/bad"]


def test_ungated_pod_counts_on_its_node_until_bound() -> None:
    p = pod("p1", gated=False)
    p["spec"]["containers"][0]["resources"]["requests"] = {"cpu": "15"}
    v = view(pods=[p])
    assert v.state.load("n1").milli_cpu == 0
    v.assume_pod_on(f"{NS}/p1", "n1")
    assert v.state.load("n1").milli_cpu == 15000
    later = copy.deepcopy(p)
    later["metadata"]["resourceVersion"] = "99999999"
    v.apply(PODS, MODIFIED, later)  # still unbound: stays assumed
    assert v.state.load("n1").milli_cpu == 15000
    bound = copy.deepcopy(later)
    bound["spec"]["nodeName"] = "n1"
    bound["metadata"]["resourceVersion"] = "100000000"
    v.apply(PODS, MODIFIED, bound)
    assert v.assumed_nodes == {}
    assert v.state.load("n1").milli_cpu == 15000
    v.apply(PODS, DELETED, bound)
    assert v.state.load("n1").milli_cpu == 0


def test_hami_gauges_count_every_allocation_on_our_devices() -> None:
    a = allocated(claim("a"), allocation_on("n1", "hami-gpu-0", memory="4Gi", cores="30", share=1))
    b = allocated(claim("b"), allocation_on("n1", "hami-gpu-0", memory="8Gi", cores="20", share=2), scheduler=True)
    whole = allocated(claim("w"), allocation_on("n1", "hami-gpu-1"))
    del whole["status"]["allocation"]["devices"]["results"][0]["shareID"]  # a dedicated device: all of it
    pa = pod("pa", claims={"gpu": "a"}, gated=False, node_name="n1")
    pb = pod("pb", claims={"gpu": "b"}, gated=False, node_name="n1")
    v = view(pods=[pa, pb], claims=[a, b, whole])
    per_device, per_pod = device_usage(v, DRIVER)
    gpu0 = next(k for k in per_device if k.device == "hami-gpu-0")
    gpu1 = next(k for k in per_device if k.device == "hami-gpu-1")
    assert per_device[gpu0] == [2, 12 * GiB, 50]
    assert per_device[gpu1] == [1, 40 * GiB, 100]
    assert per_pod[(gpu0, NS, "pa")] == [4 * GiB, 30]
    assert per_pod[(gpu0, NS, "pb")] == [8 * GiB, 20]

    metrics = ControllerMetrics()
    metrics.watch_view(v, DRIVER)
    metrics.count("allocated")
    text = generate_latest(metrics.registry).decode()
    uuid = v.state.devices[gpu0].attributes[f"{DRIVER}/uuid"]
    assert f'GPUDeviceSharedNum{{deviceuuid="{uuid}",nodeid="n1"}} 2.0' in text
    samples = {
        (m.name, tuple(sorted(s.labels.items()))): s.value
        for m in text_string_to_metric_families(text)
        for s in m.samples
    }
    assert samples[("GPUDeviceMemoryAllocated", (("deviceuuid", uuid), ("nodeid", "n1")))] == 12 * GiB
    assert f'GPUDeviceCoreAllocated{{deviceuuid="{uuid}",nodeid="n1"}} 50.0' in text
    assert f'vGPUMemoryAllocated{{deviceuuid="{uuid}",nodeid="n1",podname="pa",podnamespace="{NS}"}}' in text
    assert f'vGPUCoreAllocated{{deviceuuid="{uuid}",nodeid="n1",podname="pb",podnamespace="{NS}"}} 20.0' in text
    assert 'dra_hami_controller_decisions_total{result="allocated"} 1.0' in text
    assert "dra_hami_controller_decision_seconds_bucket" in text
