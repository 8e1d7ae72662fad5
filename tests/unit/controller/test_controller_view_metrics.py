"""The view's event handling and the HAMi allocation gauges computed from it."""

from __future__ import annotations

import copy

from controller_factories import NS, allocated, allocation_on, claim, pod, view
from prometheus_client import generate_latest

from dra_hami.controller.metrics import ControllerMetrics
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


def test_controller_metrics_count_decisions_and_carry_no_allocation_gauges() -> None:
    metrics = ControllerMetrics()
    metrics.count("allocated")
    text = generate_latest(metrics.registry).decode()
    assert 'dra_hami_controller_decisions_total{result="allocated"} 1.0' in text
    assert "dra_hami_controller_decision_seconds_bucket" in text
    # HAMi's allocation gauges come from the exporter in both modes; here they would be counted twice
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert all(name.startswith("dra_hami_controller_") for name in names), names
