"""The controller's pure core: what it decides for a gated pod, given a hand-made view."""

from __future__ import annotations

import copy

from controller_factories import (
    DRIVER,
    GATE,
    NS,
    allocated,
    allocation_on,
    claim,
    pod,
    settings,
    view,
)

from dra_hami.allocator import PolicyChoice
from dra_hami.controller.core import (
    Allocate,
    Fail,
    Release,
    Ungate,
    Wait,
    decide,
    orphaned_allocations,
    summarise,
)
from dra_hami.controller.view import CLAIMS, DELETED, MODIFIED, NODES, SLICES


def _commit(v, decision: Allocate) -> None:
    """What the reconciler does with the API's answer: the claim now carries the allocation."""
    for write in decision.writes:
        v.apply(CLAIMS, MODIFIED, allocated(v.claims[write.key], write.allocation))


# ------------------------------------------------------------------------------------------ gate and claims


def test_pod_without_our_gate_is_not_ours() -> None:
    c = claim("c1")
    p = pod("p1", claims={"gpu": "c1"}, gated=False)
    assert decide(view(pods=[p], claims=[c]), p, settings()) is None
    other_gate = pod("p2", claims={"gpu": "c1"})
    other_gate["spec"]["schedulingGates"] = [{"name": "example.com/other"}]
    assert decide(view(pods=[other_gate], claims=[c]), other_gate, settings()) is None


def test_deleting_pod_is_left_alone() -> None:
    c = claim("c1")
    p = pod("p1", claims={"gpu": "c1"})
    p["metadata"]["deletionTimestamp"] = "2026-12-03T09:00:00Z"
    assert decide(view(pods=[p], claims=[c]), p, settings()) is None


def test_waits_for_template_claim_until_status_names_it_and_it_exists() -> None:
    p = pod("p1", templates={"gpu": None})
    decision = decide(view(pods=[p]), p, settings())
    assert isinstance(decision, Wait)
    assert "'gpu'" in decision.reason and "template" in decision.reason

    p = pod("p1", templates={"gpu": "p1-gpu-abcde"})
    decision = decide(view(pods=[p]), p, settings())
    assert decision == Wait(f"waiting for ResourceClaim {NS}/p1-gpu-abcde")

    # A claim of that name that another pod owns is not this pod's (a stale generated claim).
    stranger = claim("p1-gpu-abcde", owner=pod("someone-else"))
    assert isinstance(decide(view(pods=[p], claims=[stranger]), p, settings()), Wait)

    mine = claim("p1-gpu-abcde", owner=p)
    assert isinstance(decide(view(pods=[p], claims=[mine]), p, settings()), Allocate)


def test_waits_for_standalone_claim() -> None:
    p = pod("p1", claims={"gpu": "shared"})
    assert decide(view(pods=[p]), p, settings()) == Wait(f"waiting for ResourceClaim {NS}/shared")


def test_gated_pod_without_claims_is_ungated() -> None:
    p = pod("p1")
    assert decide(view(pods=[p]), p, settings()) == Ungate(None)


# ------------------------------------------------------------------------------------------ allocation


def test_allocation_carries_everything_the_scheduler_needs() -> None:
    c = claim("c1", memory="4Gi", cores=30)
    p = pod("p1", claims={"gpu": "c1"})
    decision = decide(view(pods=[p], claims=[c]), p, settings())
    assert isinstance(decision, Allocate)
    assert decision.node_name == "n1"
    (write,) = decision.writes
    assert write.key == f"{NS}/c1"
    assert write.resource_version == c["metadata"]["resourceVersion"]  # optimistic concurrency
    alloc = write.allocation
    (result,) = alloc["devices"]["results"]
    assert result == {
        "request": "gpu",
        "driver": DRIVER,
        "pool": "n1",
        "device": "hami-gpu-0",
        "shareID": "00000000-0000-4000-8000-000000000001",
        "consumedCapacity": {"cores": "30", "memory": "4Gi", "shares": "1"},
    }
    assert alloc["nodeSelector"] == {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]
    }
    assert alloc["allocationTimestamp"] == "2026-12-03T09:00:00Z"  # without it the pod never binds (1.36)


def _place_two(policy: PolicyChoice, annotations: dict[str, str] | None = None) -> list[str]:
    pods = [pod(f"p{i}", claims={"gpu": f"c{i}"}, annotations=annotations) for i in (1, 2)]
    v = view(pods=pods, claims=[claim("c1", "4Gi", 10), claim("c2", "4Gi", 10)])
    s = settings(default_policy=policy)
    devices = []
    for p in pods:
        decision = decide(v, v.pods[f"{NS}/{p['metadata']['name']}"], s)
        assert isinstance(decision, Allocate), decision
        _commit(v, decision)
        devices.append(decision.writes[0].allocation["devices"]["results"][0]["device"])
    return devices


def test_binpack_puts_two_small_claims_on_one_gpu() -> None:
    assert _place_two(PolicyChoice("binpack", "binpack")) == ["hami-gpu-0", "hami-gpu-0"]


def test_spread_puts_two_small_claims_on_two_gpus() -> None:
    assert _place_two(PolicyChoice("binpack", "spread")) == ["hami-gpu-0", "hami-gpu-1"]


def test_pod_annotation_overrides_the_cluster_default() -> None:
    spread = {"hami.io/gpu-scheduler-policy": "spread"}
    assert _place_two(PolicyChoice("binpack", "binpack"), spread) == ["hami-gpu-0", "hami-gpu-1"]


def test_node_level_spread_and_binpack() -> None:
    pods = [pod(f"p{i}", claims={"gpu": f"c{i}"}) for i in (1, 2)]
    for policy, expected in (("binpack", ["n1", "n1"]), ("spread", ["n1", "n2"])):
        v = view(nodes=["n1", "n2"], pods=pods, claims=[claim("c1"), claim("c2")])
        nodes = []
        for p in pods:
            decision = decide(v, v.pods[f"{NS}/{p['metadata']['name']}"], settings(default_policy=PolicyChoice(policy)))
            _commit(v, decision)
            nodes.append(decision.node_name)
        assert nodes == expected, policy


def test_allocations_of_the_scheduler_count() -> None:
    """30Gi of 40Gi on gpu-0 taken by a claim the scheduler allocated: binpack still prefers gpu-0 if the rest fits."""
    theirs = allocated(claim("theirs"), allocation_on("n1", "hami-gpu-0", memory="30Gi", share=7), scheduler=True)
    small, big = claim("small", "8Gi"), claim("big", "12Gi")
    p_small, p_big = pod("ps", claims={"gpu": "small"}), pod("pb", claims={"gpu": "big"})
    v = view(pods=[p_small, p_big], claims=[theirs, small, big])
    decision = decide(v, p_big, settings())
    assert decision.writes[0].allocation["devices"]["results"][0]["device"] == "hami-gpu-1"  # 10Gi left on gpu-0
    decision = decide(v, p_small, settings())
    assert decision.writes[0].allocation["devices"]["results"][0]["device"] == "hami-gpu-0"


def test_unplaceable_says_why_per_node() -> None:
    c = claim("huge", memory="100Gi")
    p = pod("p1", claims={"gpu": "huge"})
    decision = decide(view(nodes=["n1", "n2"], pods=[p], claims=[c]), p, settings())
    assert isinstance(decision, Fail)
    assert decision.reason == "Unschedulable"
    assert decision.message.startswith(f"0/2 nodes can take pod {NS}/p1: ")
    assert "capacity memory" in decision.message and "100Gi" in decision.message
    assert "n1" in decision.message and "n2" in decision.message


def test_unknown_policy_annotation_fails_with_the_field() -> None:
    c = claim("c1")
    p = pod("p1", claims={"gpu": "c1"}, annotations={"hami.io/gpu-scheduler-policy": "tightest"})
    decision = decide(view(pods=[p], claims=[c]), p, settings())
    assert isinstance(decision, Fail) and decision.reason == "InvalidPolicy"
    assert "tightest" in decision.message and "binpack" in decision.message


def test_bad_claim_fails_naming_object_and_field() -> None:
    c = claim("c1")
    c["spec"]["devices"]["requests"][0]["exactly"]["capacity"]["requests"]["memory"] = "lots"
    p = pod("p1", claims={"gpu": "c1"})
    decision = decide(view(pods=[p], claims=[c]), p, settings())
    assert isinstance(decision, Fail) and decision.reason == "InvalidClaim"
    assert "ResourceClaim team/c1" in decision.message and "memory" in decision.message


# ------------------------------------------------------------------------------------------ repair


def test_half_done_pod_with_all_claims_allocated_is_just_ungated() -> None:
    c = allocated(claim("c1"), allocation_on("n1", "hami-gpu-2"))
    p = pod("p1", claims={"gpu": "c1"})
    assert decide(view(pods=[p], claims=[c]), p, settings()) == Ungate("n1")


def test_half_done_pod_keeps_its_allocated_claim_and_places_the_rest_on_that_node() -> None:
    done = allocated(claim("c1"), allocation_on("n2", "hami-gpu-2"))
    p = pod("p1", claims={"a": "c1", "b": "c2"})
    decision = decide(view(nodes=["n1", "n2"], pods=[p], claims=[done, claim("c2")]), p, settings())
    assert isinstance(decision, Allocate)
    assert decision.node_name == "n2"
    assert [w.key for w in decision.writes] == [f"{NS}/c2"]


def test_half_done_pod_whose_rest_does_not_fit_there_is_released() -> None:
    done = allocated(claim("c1"), allocation_on("n2", "hami-gpu-2", memory="40Gi"))
    p = pod("p1", claims={"a": "c1", "b": "c2"})
    filler = [allocated(claim(f"f{i}"), allocation_on("n2", f"hami-gpu-{i}", memory="40Gi")) for i in (0, 1, 3)]
    v = view(nodes=["n1", "n2"], pods=[p], claims=[done, claim("c2", "40Gi"), *filler])
    decision = decide(v, p, settings())
    assert isinstance(decision, Release)
    assert decision.claims == (f"{NS}/c1",)


def test_allocation_on_a_vanished_node_or_device_is_released() -> None:
    c = allocated(claim("c1"), allocation_on("n2", "hami-gpu-1"))
    p = pod("p1", claims={"gpu": "c1"})
    v = view(nodes=["n1", "n2"], pods=[p], claims=[c])
    n2 = v.nodes["n2"]
    v.apply(NODES, DELETED, n2)
    decision = decide(v, p, settings())
    assert isinstance(decision, Release) and decision.claims == (f"{NS}/c1",)
    assert "node n2 no longer exists" in decision.why

    v = view(nodes=["n1", "n2"], pods=[p], claims=[c])
    for s in [s for s in v.slices.values() if s["spec"]["nodeName"] == "n2"]:
        v.apply(SLICES, DELETED, s)
    decision = decide(v, p, settings())
    assert isinstance(decision, Release) and "no longer published" in decision.why


def test_invalid_allocation_of_the_scheduler_is_not_ours_to_release() -> None:
    c = allocated(claim("c1"), allocation_on("gone", "hami-gpu-1"), scheduler=True)
    p = pod("p1", claims={"gpu": "c1"})
    decision = decide(view(pods=[p], claims=[c]), p, settings())
    assert isinstance(decision, Fail) and decision.reason == "AllocationInvalid"


# ------------------------------------------------------------------------------------------ orphans


def test_orphans_are_our_unreserved_allocations_without_a_live_pod() -> None:
    ours = allocated(claim("ours"), allocation_on("n1", "hami-gpu-0"))
    theirs = allocated(claim("theirs"), allocation_on("n1", "hami-gpu-0", share=5), scheduler=True)
    used = allocated(claim("used"), allocation_on("n1", "hami-gpu-1", share=6))
    finished = allocated(claim("finished"), allocation_on("n1", "hami-gpu-1", share=8))
    other_driver = allocated(claim("other"), allocation_on("n1", "hami-gpu-1", share=9))
    other_driver["status"]["allocation"]["devices"]["results"][0]["driver"] = "gpu.example.com"
    live = pod("live", claims={"gpu": "used"}, gated=False, node_name="n1")
    done = pod("done", claims={"gpu": "finished"}, gated=False, node_name="n1")
    done["status"]["phase"] = "Succeeded"
    v = view(pods=[live, done], claims=[ours, theirs, used, finished, other_driver])
    assert orphaned_allocations(v, DRIVER) == [f"{NS}/finished", f"{NS}/ours"]

    reserved = copy.deepcopy(v.claims[f"{NS}/ours"])
    reserved["status"]["reservedFor"] = [{"resource": "pods", "name": "live", "uid": "uid-live"}]
    reserved["metadata"]["resourceVersion"] = "999999"
    v.apply(CLAIMS, MODIFIED, reserved)
    assert orphaned_allocations(v, DRIVER) == [f"{NS}/finished"]


def test_gated_pod_keeps_its_allocation_from_being_an_orphan() -> None:
    c = allocated(claim("c1"), allocation_on("n1", "hami-gpu-0"))
    p = pod("p1", claims={"gpu": "c1"})
    assert orphaned_allocations(view(pods=[p], claims=[c]), DRIVER) == []
    assert GATE in str(p["spec"]["schedulingGates"])


def test_summary_groups_nodes_by_reason() -> None:
    reasons = {"a": "too small", "b": "too small", "c": "tainted", "d": "too small", "e": "too small"}
    message = summarise("ns/p", 5, reasons, "fallback")
    assert message == "0/5 nodes can take pod ns/p: 4 nodes (a, b, d, ...): too small; 1 node (c): tainted"
    assert summarise("ns/p", 0, {}, "no nodes at all") == "no nodes at all"
