"""GpuQuota on the controller's allocations (policy mode): the pure check, the reconciler's pass over several pods,
the work loop's retries when quotas or claims change, and the informer when the CRD is not installed.

Worked answers: the a100x4 profile has four 40Gi GPUs per node; a claim of ``memory=6Gi`` consumes 6Gi.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller_factories import (
    DRIVER,
    GATE,
    NS,
    allocated,
    allocation_on,
    claim,
    node,
    pod,
    rv,
    settings,
    slices,
    view,
)
from controller_store import StoreApi

from dra_hami.controller.api import CONDITION_TYPE
from dra_hami.controller.core import Allocate, Fail, decide
from dra_hami.controller.quota import check_pod
from dra_hami.controller.reconciler import Reconciler
from dra_hami.controller.runtime import LIST, Controller, Informer, Options
from dra_hami.controller.view import CLAIMS, CLASSES, DELETED, MODIFIED, NODES, PODS, QUOTAS, SLICES, View
from dra_hami.demo.apiserver import FakeApiServer
from dra_hami.kube.client import ApiError, RawKubeApi
from dra_hami.publisher.slices import device_class


def gpu_quota(name: str = "budget", namespace: str = NS, **hard: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dra-hami.project-hami.io/v1alpha1",
        "kind": "GpuQuota",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv(), "generation": 1},
        "spec": {"hard": dict(hard)},
    }


def with_quotas(v: View, *quotas: dict[str, Any]) -> View:
    v.replace(QUOTAS, [copy.deepcopy(q) for q in quotas])
    return v


def running(name: str, claim_name: str) -> dict[str, Any]:
    return pod(name, claims={"gpu": claim_name}, gated=False, node_name="n1")


# ----------------------------------------------------------------------------------------------- the pure decision


def test_within_quota_the_pod_is_allocated() -> None:
    held = allocated(claim("held", "4Gi"), allocation_on("n1", "hami-gpu-0", memory="4Gi"))
    p = pod("p1", claims={"gpu": "c1"})
    v = with_quotas(
        view(pods=[p, running("user", "held")], claims=[held, claim("c1", "6Gi")]), gpu_quota(memory="10Gi")
    )
    assert isinstance(decide(v, v.pods[f"{NS}/p1"], settings()), Allocate)  # 4Gi + 6Gi = 10Gi: exactly the limit


def test_over_quota_keeps_the_gate_with_used_requested_and_limit() -> None:
    held = allocated(claim("held", "30Gi"), allocation_on("n1", "hami-gpu-0", memory="30Gi"))
    p = pod("p1", claims={"gpu": "c1"})
    v = with_quotas(
        view(pods=[p, running("user", "held")], claims=[held, claim("c1", "8Gi")]), gpu_quota(memory="32Gi")
    )
    decision = decide(v, v.pods[f"{NS}/p1"], settings())
    assert isinstance(decision, Fail) and decision.reason == "QuotaExceeded" and decision.waits_for_capacity
    assert decision.message.startswith(
        f"Pod {NS}/p1 stays gated: allocating ResourceClaim {NS}/c1 would exceed GpuQuota {NS}/budget: "
        "memory: used 30Gi + requested 8Gi = 38Gi exceeds the limit 32Gi."
    ), decision.message


def test_cores_and_gpu_count_are_limited_too() -> None:
    held = allocated(claim("held", "4Gi", cores=40), allocation_on("n1", "hami-gpu-0", memory="4Gi", cores="40"))
    p = pod("p1", claims={"gpu": "c1"})
    base = view(pods=[p, running("user", "held")], claims=[held, claim("c1", "4Gi", cores=20)])
    cores = decide(with_quotas(base, gpu_quota(cores=50)), base.pods[f"{NS}/p1"], settings())
    assert isinstance(cores, Fail) and "cores: used 40 + requested 20 = 60 exceeds the limit 50" in cores.message
    gpus = decide(with_quotas(base, gpu_quota(gpus=1)), base.pods[f"{NS}/p1"], settings())
    assert isinstance(gpus, Fail) and "gpus: used 1 + requested 1 = 2 exceeds the limit 1" in gpus.message
    roomy = decide(with_quotas(base, gpu_quota(cores=60, gpus=2)), base.pods[f"{NS}/p1"], settings())
    assert isinstance(roomy, Allocate)


def test_the_claims_of_one_pod_count_against_each_other() -> None:
    p = pod("p1", claims={"a": "c1", "b": "c2"})
    v = with_quotas(view(pods=[p], claims=[claim("c1", "6Gi"), claim("c2", "6Gi")]), gpu_quota(memory="10Gi"))
    decision = decide(v, v.pods[f"{NS}/p1"], settings())
    assert isinstance(decision, Fail)
    assert f"allocating ResourceClaim {NS}/c2" in decision.message  # c1 alone fits; c2 after it does not
    assert "memory: used 6Gi + requested 6Gi = 12Gi exceeds the limit 10Gi" in decision.message


def test_pending_claims_not_waiting_for_us_count_as_the_quota_library_estimates_them() -> None:
    """A pending claim of an ungated pod (the scheduler allocates it) or of no pod at all holds quota."""
    p = pod("p1", claims={"gpu": "c1"})
    scheduler_pod = pod("sched", claims={"gpu": "theirs"}, gated=False)
    v = with_quotas(
        view(pods=[p, scheduler_pod], claims=[claim("c1", "4Gi"), claim("theirs", "5Gi"), claim("loose", "2Gi")]),
        gpu_quota(memory="10Gi"),
    )
    decision = decide(v, v.pods[f"{NS}/p1"], settings())
    assert isinstance(decision, Fail)
    assert "memory: used 7Gi + requested 4Gi = 11Gi exceeds the limit 10Gi" in decision.message


def test_pending_claims_of_other_gated_pods_do_not_block_each_other() -> None:
    """Two gated pods of 6Gi under a 10Gi quota: one of them must run (counting both would block both)."""
    pods = [pod(f"p{i}", claims={"gpu": f"c{i}"}) for i in (1, 2)]
    v = with_quotas(view(pods=pods, claims=[claim("c1", "6Gi"), claim("c2", "6Gi")]), gpu_quota(memory="10Gi"))
    assert isinstance(decide(v, v.pods[f"{NS}/p1"], settings()), Allocate)
    assert isinstance(decide(v, v.pods[f"{NS}/p2"], settings()), Allocate)


def test_quotas_of_other_namespaces_and_other_drivers_results_do_not_apply() -> None:
    p = pod("p1", claims={"gpu": "c1"})
    v = with_quotas(view(pods=[p], claims=[claim("c1", "8Gi")]), gpu_quota(namespace="elsewhere", memory="1Gi"))
    assert isinstance(decide(v, v.pods[f"{NS}/p1"], settings()), Allocate)
    other = {"devices": {"results": [{"driver": "gpu.example.com", "pool": "n1", "device": "x", "request": "gpu"}]}}
    v = with_quotas(v, gpu_quota(gpus=0))
    assert check_pod(v, NS, [(f"{NS}/c1", other)], DRIVER, GATE) is None


def test_a_broken_quota_is_reported_and_ignored() -> None:
    p = pod("p1", claims={"gpu": "c1"})
    broken = gpu_quota("broken", memory="lots")
    v = with_quotas(view(pods=[p], claims=[claim("c1", "8Gi")]), broken, gpu_quota(memory="4Gi"))
    decision = decide(v, v.pods[f"{NS}/p1"], settings())
    assert isinstance(decision, Fail) and f"GpuQuota {NS}/budget" in decision.message
    assert "spec.hard.memory" in v.bad[f"{QUOTAS} {NS}/broken"]


# ----------------------------------------------------------------------------------------------- view changes


def test_only_new_limits_or_a_deleted_quota_free_anything() -> None:
    v = view()
    q = gpu_quota(memory="4Gi")
    assert v.apply(QUOTAS, "ADDED", q).frees_capacity is False
    status_only = copy.deepcopy(q) | {"status": {"used": {"memory": "2Gi", "cores": 0, "gpus": 1}}}
    status_only["metadata"] = {**q["metadata"], "resourceVersion": rv()}
    assert v.apply(QUOTAS, MODIFIED, status_only).frees_capacity is False
    raised = copy.deepcopy(status_only)
    raised["metadata"]["resourceVersion"] = rv()
    raised["spec"]["hard"]["memory"] = "8Gi"
    assert v.apply(QUOTAS, MODIFIED, raised).frees_capacity is True
    assert v.apply(QUOTAS, DELETED, raised).frees_capacity is True
    assert v.quotas == {}


def test_accounting_follows_the_published_slices() -> None:
    v = view()
    assert (v.accounting(DRIVER).largest_memory, v.accounting(DRIVER).gpu_count) == (40 << 30, 4)
    v.replace(SLICES, slices("n1", profile="h100x8"))  # an H100 80GB publishes 81559Mi
    assert (v.accounting(DRIVER).largest_memory, v.accounting(DRIVER).gpu_count) == (81559 << 20, 8)


# ----------------------------------------------------------------------------------------------- the reconciler


def _setup(pods: list[dict], claims: list[dict], *quotas: dict) -> tuple[View, StoreApi, Reconciler]:
    api = StoreApi(claims, pods)
    v = view(pods=list(api.pods.values()), claims=list(api.claims.values()))
    with_quotas(v, *quotas)
    return v, api, Reconciler(v, api, settings(), orphan_grace=0.0)


def test_two_pods_in_one_pass_cannot_both_take_the_last_of_the_quota() -> None:
    pods = [pod(f"p{i}", claims={"gpu": f"c{i}"}) for i in (1, 2)]
    _v, api, r = _setup(pods, [claim("c1", "6Gi"), claim("c2", "6Gi")], gpu_quota(memory="10Gi"))
    assert r.handle(f"{NS}/p1") == "allocated"
    assert r.handle(f"{NS}/p2") == "unplaceable"
    assert api.writes == [("allocate", f"{NS}/c1"), ("ungate", f"{NS}/p1")]
    stored = api.pods[f"{NS}/p2"]
    assert stored["spec"]["schedulingGates"] == [{"name": GATE}]
    (condition,) = stored["status"]["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (CONDITION_TYPE, "False", "QuotaExceeded")
    assert "memory: used 6Gi + requested 6Gi = 12Gi exceeds the limit 10Gi" in condition["message"]
    assert [(e[0], e[1]) for e in api.events] == [("p2", "QuotaExceeded")]
    assert api.events[0][2] == condition["message"]
    assert r.unplaceable == {f"{NS}/p2"}
    assert r.handle(f"{NS}/p2") == "unplaceable"  # retried with nothing changed: no second event
    assert len(api.events) == 1


# ----------------------------------------------------------------------------------------------- the work loop


def _controller(api: StoreApi) -> Controller:
    options = Options(
        settings=settings(), kubeconfig=None, identity="t", leader_elect=False, metrics_address="0", writes_in_flight=0
    )
    c = Controller(options, api_factory=lambda: RawKubeApi(api_client=None))  # never called: writes go to ``api``
    c.reconciler.api = api
    return c


def _list_everything(c: Controller, api: StoreApi, quotas: list[dict]) -> None:
    c._apply(QUOTAS, LIST, copy.deepcopy(quotas))
    c._apply(NODES, LIST, [node("n1")])
    c._apply(SLICES, LIST, slices("n1"))
    c._apply(CLASSES, LIST, [device_class(DRIVER)])
    c._apply(CLAIMS, LIST, copy.deepcopy(list(api.claims.values())))
    c._apply(PODS, LIST, copy.deepcopy(list(api.pods.values())))


def _quota_blocked() -> tuple[Controller, StoreApi, dict]:
    pods = [pod(f"p{i}", claims={"gpu": f"c{i}"}) for i in (1, 2)]
    api = StoreApi([claim("c1", "6Gi"), claim("c2", "6Gi")], pods)
    quota = gpu_quota(memory="10Gi")
    c = _controller(api)
    _list_everything(c, api, [quota])
    c.step()
    assert api.writes == [("allocate", f"{NS}/c1"), ("ungate", f"{NS}/p1")]
    assert c.reconciler.unplaceable == {f"{NS}/p2"} and not c.dirty
    for key in ("p1", "p2"):  # the watch brings our own writes back
        c._apply(PODS, MODIFIED, copy.deepcopy(api.pods[f"{NS}/{key}"]))
    assert not c.dirty
    return c, api, quota


def test_raising_the_quota_lets_the_waiting_pod_through_but_a_status_write_does_not_wake_it() -> None:
    c, api, quota = _quota_blocked()
    status = copy.deepcopy(quota) | {"status": {"used": {"memory": "6Gi", "cores": 0, "gpus": 1}}}
    status["metadata"] = {**quota["metadata"], "resourceVersion": rv()}
    c._apply(QUOTAS, MODIFIED, status)
    assert not c.dirty
    raised = copy.deepcopy(status)
    raised["metadata"]["resourceVersion"] = rv()
    raised["spec"]["hard"]["memory"] = "12Gi"
    c._apply(QUOTAS, MODIFIED, raised)
    assert list(c.dirty) == [f"{NS}/p2"]
    c.step()
    assert api.writes[-2:] == [("allocate", f"{NS}/c2"), ("ungate", f"{NS}/p2")]


def test_deleting_a_claim_frees_the_quota() -> None:
    c, api, _ = _quota_blocked()
    gone = api.claims.pop(f"{NS}/c1")
    c._apply(PODS, DELETED, api.pods.pop(f"{NS}/p1"))
    c.step()
    c._apply(CLAIMS, DELETED, gone)  # the garbage collector deletes the first pod's claim
    assert f"{NS}/p2" in c.dirty
    c.step()
    assert api.writes[-2:] == [("allocate", f"{NS}/c2"), ("ungate", f"{NS}/p2")]


# ----------------------------------------------------------------------------------------------- the informer


def test_a_missing_crd_is_an_empty_list_said_once_and_looked_for_again(caplog, tmp_path: Path) -> None:
    """The demo API server serves no GpuQuota (a real 404 over HTTP)."""
    server = FakeApiServer().start()
    stop = threading.Event()
    seen: list[tuple] = []
    try:
        api = RawKubeApi.from_config(str(server.write_kubeconfig(tmp_path / "kubeconfig")))
        informer = Informer(api, QUOTAS, seen.append, stop, absent_recheck=0.02)
        with caplog.at_level(logging.WARNING, logger="dra_hami.controller.runtime"):
            informer.start()
            _wait(lambda: sum("gpuquotas" in path for _, path in server.requests) >= 3)
            stop.set()
            informer.join(5)
    finally:
        stop.set()
        server.stop()
    assert seen == [(QUOTAS, LIST, [])]
    assert informer.absent
    warnings = [r.getMessage() for r in caplog.records if "is not installed" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "/apis/dra-hami.project-hami.io/v1alpha1/gpuquotas is not installed" in warnings[0]


class _LaterInstalled:
    """list_objects: 404 twice (no CRD yet), then one quota; the watch then ends the test."""

    def __init__(self, stop: threading.Event) -> None:
        self.calls, self.stop = 0, stop

    def list_objects(self, path: str, query=None, first_page_only=False) -> tuple[list[dict], str]:
        self.calls += 1
        if self.calls <= 2:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        return [gpu_quota(memory="1Gi")], "7"

    def watch(self, path: str, version: str, timeout: int, query=None):
        self.stop.set()
        return iter(())


def test_a_crd_installed_later_is_listed_and_watched() -> None:
    stop = threading.Event()
    seen: list[tuple] = []
    informer = Informer(_LaterInstalled(stop), QUOTAS, seen.append, stop, absent_recheck=0.0)  # type: ignore[arg-type]
    informer.run()
    assert [(k, t, [o["metadata"]["name"] for o in items]) for k, t, items in seen] == [
        (QUOTAS, LIST, []),
        (QUOTAS, LIST, ["budget"]),
    ]
    assert not informer.absent


def test_a_required_kind_is_never_treated_as_absent() -> None:
    stop = threading.Event()
    seen: list[tuple] = []

    class Missing:
        def list_objects(self, path: str, query=None, first_page_only=False):
            stop.set()
            raise ApiError(404, "not found", "NotFound")

    Informer(Missing(), CLAIMS, seen.append, stop, backoff=0.0).run()  # type: ignore[arg-type]
    assert seen == []


def _wait(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
