"""The reconciler against an in-memory API store with the server's concurrency rules (resourceVersion
preconditions, JSON-patch test of the gate list). The real API server is exercised by tests/e2e/test_policy_mode.py.
"""

from __future__ import annotations

import copy

import pytest
from controller_factories import GATE, NS, allocated, allocation_on, claim, pod, settings, view
from controller_store import StoreApi

from dra_hami.controller.api import CONDITION_TYPE
from dra_hami.controller.reconciler import NotLeader, Reconciler
from dra_hami.controller.view import CLAIMS, PODS, View
from dra_hami.kube.client import ApiError


def _setup(pods: list[dict], claims: list[dict], nodes=("n1",), **kwargs) -> tuple[View, StoreApi, Reconciler]:
    api = StoreApi(claims, pods)
    v = view(nodes=list(nodes), pods=list(api.pods.values()), claims=list(api.claims.values()))
    return v, api, Reconciler(v, api, settings(), orphan_grace=0.0, **kwargs)


def test_allocates_then_ungates_and_the_view_counts_it_at_once() -> None:
    pods = [pod(f"p{i}", claims={"gpu": f"c{i}"}) for i in (1, 2)]
    v, api, r = _setup(pods, [claim("c1", "30Gi"), claim("c2", "30Gi")])
    assert r.handle(f"{NS}/p1") == "allocated"
    assert r.handle(f"{NS}/p2") == "allocated"
    assert api.writes == [
        ("allocate", f"{NS}/c1"),
        ("ungate", f"{NS}/p1"),
        ("allocate", f"{NS}/c2"),
        ("ungate", f"{NS}/p2"),
    ]
    devices = [api.claims[f"{NS}/c{i}"]["status"]["allocation"]["devices"]["results"][0]["device"] for i in (1, 2)]
    assert devices == ["hami-gpu-0", "hami-gpu-1"]  # 30Gi + 30Gi do not fit one 40Gi GPU: no double allocation
    assert api.pods[f"{NS}/p1"]["spec"]["schedulingGates"] == []
    assert v.assumed_nodes == {f"{NS}/p1": "n1", f"{NS}/p2": "n1"}
    assert r.metrics.decisions.labels("allocated")._value.get() == 2


def test_conflict_rereads_the_claim_and_decides_again() -> None:
    p = pod("p1", claims={"gpu": "c1"})
    v, api, r = _setup([p], [claim("c1")])
    api.claims[f"{NS}/c1"]["metadata"]["labels"] = {"touched": "yes"}  # somebody else wrote meanwhile
    api._bump(api.claims[f"{NS}/c1"])
    assert r.handle(f"{NS}/p1") == "allocated"
    assert api.writes == [("allocate", f"{NS}/c1"), ("ungate", f"{NS}/p1")]
    assert v.claims[f"{NS}/c1"]["metadata"]["labels"] == {"touched": "yes"}
    assert r.metrics.decisions.labels("conflict")._value.get() == 1


def test_conflict_with_another_allocator_never_double_allocates() -> None:
    """Another replica allocated the claim between our read and our write: we only lift the gate."""
    p = pod("p1", claims={"gpu": "c1"})
    _v, api, r = _setup([p], [claim("c1")])
    theirs = allocation_on("n1", "hami-gpu-3")
    api.claims[f"{NS}/c1"]["status"] = {"allocation": theirs}
    api._bump(api.claims[f"{NS}/c1"])
    assert r.handle(f"{NS}/p1") == "ungated"
    assert api.writes == [("ungate", f"{NS}/p1")]
    assert api.claims[f"{NS}/c1"]["status"]["allocation"] == theirs


def test_unplaceable_keeps_the_gate_says_why_once_and_retries_when_capacity_frees() -> None:
    blocker = allocated(claim("blocker", "40Gi"), allocation_on("n1", "hami-gpu-0", memory="40Gi"))
    others = [
        allocated(claim(f"o{i}", "40Gi"), allocation_on("n1", f"hami-gpu-{i}", "40Gi", share=i)) for i in (1, 2, 3)
    ]
    users = [pod(f"u{i}", claims={"gpu": n}, gated=False, node_name="n1") for i, n in enumerate(["blocker", "o1"])]
    p = pod("p1", claims={"gpu": "c1"})
    v, api, r = _setup([p, *users], [claim("c1", "8Gi"), blocker, *others])
    assert r.handle(f"{NS}/p1") == "unplaceable"
    stored = api.pods[f"{NS}/p1"]
    assert stored["spec"]["schedulingGates"] == [{"name": GATE}]
    (condition,) = stored["status"]["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (CONDITION_TYPE, "False", "Unschedulable")
    assert "capacity memory" in condition["message"] and "n1" in condition["message"]
    assert [e[1] for e in api.events] == ["Unschedulable"]
    assert f"{NS}/p1" in r.unplaceable

    assert r.handle(f"{NS}/p1") == "unplaceable"
    assert len(api.events) == 1  # the same reason is not repeated on every retry

    # The scheduler's or the user's claim is deallocated: the next pass places the pod.
    freed = copy.deepcopy(v.claims[f"{NS}/o3"])
    freed["status"] = {}
    freed["metadata"]["resourceVersion"] = "99999999"
    change = v.apply(CLAIMS, "MODIFIED", freed)
    assert change is not None and change.frees_capacity
    assert r.handle(f"{NS}/p1") == "allocated"
    assert api.claims[f"{NS}/c1"]["status"]["allocation"]["devices"]["results"][0]["device"] == "hami-gpu-3"
    assert api.pods[f"{NS}/p1"]["status"]["conditions"][0]["status"] == "True"
    assert f"{NS}/p1" not in r.unplaceable


def test_permanent_gate_removal_failure_deallocates() -> None:
    p = pod("p1", claims={"gpu": "c1"})
    _v, api, r = _setup([p], [claim("c1")])
    api.gate_error = ApiError(403, "pods is forbidden", "Forbidden")
    assert r.handle(f"{NS}/p1") == "error"
    assert api.writes == [("allocate", f"{NS}/c1"), ("deallocate", f"{NS}/c1")]
    assert not api.claims[f"{NS}/c1"]["status"]
    assert api.pods[f"{NS}/p1"]["status"]["conditions"][0]["reason"] == "GateRemovalFailed"


def test_gate_list_changed_by_someone_else_is_retried_with_the_new_list() -> None:
    p = pod("p1", claims={"gpu": "c1"})
    _v, api, r = _setup([p], [claim("c1")])
    api.pods[f"{NS}/p1"]["spec"]["schedulingGates"].append({"name": "example.com/other"})
    api._bump(api.pods[f"{NS}/p1"])
    assert r.handle(f"{NS}/p1") == "ungated"  # second pass: the claim is allocated already
    assert api.pods[f"{NS}/p1"]["spec"]["schedulingGates"] == [{"name": "example.com/other"}]
    assert [w for w in api.writes if w[0] == "allocate"] == [("allocate", f"{NS}/c1")]


def test_pod_deleted_before_the_gate_came_off_leaves_an_orphan_the_sweep_removes() -> None:
    p = pod("p1", claims={"gpu": "c1"})
    v, api, r = _setup([p], [claim("c1")])
    del api.pods[f"{NS}/p1"]
    assert r.handle(f"{NS}/p1") == "gone"
    assert f"{NS}/p1" not in v.pods
    assert r.sweep() == [f"{NS}/c1"]
    assert api.writes[-1] == ("deallocate", f"{NS}/c1")
    assert not v.claims[f"{NS}/c1"]["status"].get("allocation")


def test_orphan_grace_waits_for_lagging_watches() -> None:
    clock = [100.0]
    c = allocated(claim("c1"), allocation_on("n1", "hami-gpu-0"))
    api = StoreApi([c], [])
    v = view(pods=[], claims=list(api.claims.values()))
    r = Reconciler(v, api, settings(), orphan_grace=5.0, clock=lambda: clock[0])
    assert r.next_sweep_in() is None
    assert r.sweep() == []
    assert r.next_sweep_in() == 5.0
    clock[0] += 4.9
    assert r.sweep() == []
    assert r.next_sweep_in() == pytest.approx(0.1)
    clock[0] += 0.2
    assert r.sweep() == [f"{NS}/c1"]


def test_restart_repairs_a_half_done_pod_from_the_api_alone() -> None:
    """The previous leader wrote the allocation and died before lifting the gate: a new view just ungates."""
    c = allocated(claim("c1"), allocation_on("n1", "hami-gpu-2"))
    p = pod("p1", claims={"gpu": "c1"})
    v, api, r = _setup([p], [c])
    assert r.handle(f"{NS}/p1") == "ungated"
    assert api.writes == [("ungate", f"{NS}/p1")]
    assert v.assumed_nodes == {f"{NS}/p1": "n1"}


def test_restart_releases_a_half_done_allocation_that_is_no_longer_valid() -> None:
    c = allocated(claim("c1"), allocation_on("vanished", "hami-gpu-2"))
    p = pod("p1", claims={"gpu": "c1"})
    _v, api, r = _setup([p], [c], nodes=("n1",))
    assert r.handle(f"{NS}/p1") == "allocated"
    assert api.writes == [("deallocate", f"{NS}/c1"), ("allocate", f"{NS}/c1"), ("ungate", f"{NS}/p1")]
    assert api.claims[f"{NS}/c1"]["status"]["allocation"]["nodeSelector"]["nodeSelectorTerms"][0]["matchFields"][0][
        "values"
    ] == ["n1"]


def test_follower_never_writes() -> None:
    p = pod("p1", claims={"gpu": "c1"})
    _v, api, r = _setup([p], [claim("c1")], may_write=lambda: False)
    with pytest.raises(NotLeader):
        r.handle(f"{NS}/p1")
    assert api.writes == []


def test_waiting_pod_is_remembered_until_its_claim_appears() -> None:
    p = pod("p1", templates={"gpu": "p1-gpu-x"})
    v, api, r = _setup([p], [])
    assert r.handle(f"{NS}/p1") == "waiting"
    assert r.waiting == {f"{NS}/p1"}
    generated = claim("p1-gpu-x", owner=p)
    api.claims[f"{NS}/p1-gpu-x"] = copy.deepcopy(generated)
    v.apply(CLAIMS, "ADDED", generated)
    assert r.handle(f"{NS}/p1") == "allocated"
    assert r.waiting == set()
    assert v.pods[f"{NS}/p1"]["spec"]["schedulingGates"] == []
    assert PODS in v.objects


def test_transient_api_failure_is_retried_and_never_gives_the_pod_up() -> None:
    p = pod("p1", claims={"gpu": "c1"})
    _v, api, r = _setup([p], [claim("c1")])
    api.gate_error = ApiError(503, "etcd leader changed", "ServiceUnavailable")
    with pytest.raises(ApiError):
        r.handle(f"{NS}/p1")
    assert api.writes == [("allocate", f"{NS}/c1")]  # kept: the next pass only lifts the gate
    assert "conditions" not in api.pods[f"{NS}/p1"]["status"]
    api.gate_error = None
    assert r.handle(f"{NS}/p1") == "ungated"
    assert api.writes == [("allocate", f"{NS}/c1"), ("ungate", f"{NS}/p1")]
