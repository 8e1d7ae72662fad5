"""Node updates reach the allocator's state in place: a heartbeat changes nothing, a taint changes only the node
(rebuilding the whole state re-parsed every claim in the cluster on every Node status update)."""

from __future__ import annotations

import copy

from controller_factories import NS, claim, pod, settings, view

from dra_hami.controller.core import Allocate, Fail, decide
from dra_hami.controller.view import NODES


def _bumped(node: dict, **changes) -> dict:
    new = copy.deepcopy(node)
    new["metadata"]["resourceVersion"] = str(int(new["metadata"].get("resourceVersion") or "1") + 1)
    for path, value in changes.items():
        section, field = path.split("__")
        new.setdefault(section, {})[field] = value
    return new


def test_a_heartbeat_keeps_the_state_and_frees_nothing() -> None:
    v = view(nodes=["n1", "n2"], claims=[claim("c1")], pods=[pod("p1", claims={"gpu": "c1"})])
    state = v.state
    node = v.nodes["n1"]
    change = v.apply(NODES, "MODIFIED", _bumped(node, status__conditions=[{"type": "Ready", "status": "False"}]))
    assert change is not None and not change.frees_capacity
    assert v.state is state


def test_a_taint_updates_the_node_in_place_and_decisions_follow_it() -> None:
    p = pod("p1", claims={"gpu": "c1"})
    v = view(nodes=["n1"], claims=[claim("c1")], pods=[p])
    state = v.state
    taint = {"key": "maintenance", "value": "", "effect": "NoSchedule"}
    change = v.apply(NODES, "MODIFIED", _bumped(v.nodes["n1"], spec__taints=[taint]))
    assert change is not None and change.frees_capacity
    assert v.state is state  # updated, not rebuilt
    decision = decide(v, v.pods[f"{NS}/p1"], settings())
    assert isinstance(decision, Fail) and "maintenance" in decision.message
    change = v.apply(NODES, "MODIFIED", _bumped(v.nodes["n1"], spec__taints=[]))
    assert isinstance(decide(v, v.pods[f"{NS}/p1"], settings()), Allocate)


def test_a_new_node_still_rebuilds() -> None:
    v = view(nodes=["n1"])
    state = v.state
    extra = copy.deepcopy(v.nodes["n1"])
    extra["metadata"]["name"] = "n2"
    v.apply(NODES, "ADDED", extra)
    assert v.state is not state and "n2" in v.state.nodes
