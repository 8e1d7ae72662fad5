"""The work loop's event routing: informer events in, reconciled pods out (writes go to the in-memory store)."""

from __future__ import annotations

import copy

from controller_factories import DRIVER, NS, claim, node, pod, settings, slices
from controller_store import StoreApi

from dra_hami.controller.leader import LeaderElector
from dra_hami.controller.runtime import LIST, Controller, Options
from dra_hami.controller.view import CLAIMS, CLASSES, NODES, PODS, QUOTAS, SLICES
from dra_hami.kube.client import RawKubeApi
from dra_hami.publisher.slices import device_class


def _controller(api: StoreApi, leader_elect: bool = False, writes_in_flight: int = 0) -> Controller:
    options = Options(
        settings=settings(),
        kubeconfig=None,
        identity="t",
        leader_elect=leader_elect,
        metrics_address="0",
        writes_in_flight=writes_in_flight,
    )
    c = Controller(options, api_factory=lambda: RawKubeApi(api_client=None))  # never called: writes go to ``api``
    c.reconciler.api = api
    return c


def _list_everything(c: Controller, pods: list, claims: list, quotas: list = ()) -> None:
    c._apply(QUOTAS, LIST, list(quotas))
    c._apply(NODES, LIST, [node("n1")])
    c._apply(SLICES, LIST, slices("n1"))
    c._apply(CLASSES, LIST, [device_class(DRIVER)])
    c._apply(CLAIMS, LIST, copy.deepcopy(claims))
    c._apply(PODS, LIST, copy.deepcopy(pods))


def test_nothing_happens_before_every_kind_is_listed() -> None:
    p = pod("p1", claims={"gpu": "c1"})
    api = StoreApi([claim("c1")], [p])
    c = _controller(api)
    c._apply(PODS, LIST, [copy.deepcopy(p)])
    c.step()
    assert api.writes == []
    assert list(c.dirty) == [f"{NS}/p1"]


def test_listed_gated_pods_are_placed_and_a_template_claim_arriving_later_wakes_its_pod() -> None:
    ready = pod("ready", claims={"gpu": "c1"})
    later = pod("later", templates={"gpu": "later-gpu"})
    c1 = claim("c1")
    api = StoreApi([c1], [ready, later])
    c = _controller(api)
    _list_everything(c, [ready, later], [c1])
    c.step()
    assert api.writes == [("allocate", f"{NS}/c1"), ("ungate", f"{NS}/ready")]
    assert c.reconciler.waiting == {f"{NS}/later"}
    assert not c.dirty

    generated = claim("later-gpu", owner=later)
    api.claims[f"{NS}/later-gpu"] = copy.deepcopy(generated)
    c._apply(CLAIMS, "ADDED", generated)
    assert list(c.dirty) == [f"{NS}/later"]
    c.step()
    assert api.writes[-2:] == [("allocate", f"{NS}/later-gpu"), ("ungate", f"{NS}/later")]


def test_unplaceable_pod_is_retried_when_a_slice_adds_capacity() -> None:
    p = pod("big", claims={"gpu": "big"})
    big = claim("big", memory="60Gi")
    api = StoreApi([big], [p])
    c = _controller(api)
    _list_everything(c, [p], [big])
    c.step()
    assert c.reconciler.unplaceable == {f"{NS}/big"}
    assert api.writes == []
    (s,) = slices("n1", profile="h100x8")  # the node is re-published with 80Gi GPUs
    s["metadata"]["name"] = c.view.slices[next(iter(c.view.slices))]["metadata"]["name"]
    s["spec"]["pool"]["generation"] = 2
    s["metadata"]["resourceVersion"] = "999999999"
    c._apply(SLICES, "MODIFIED", s)
    assert f"{NS}/big" in c.dirty
    c.step()
    assert api.writes == [("allocate", f"{NS}/big"), ("ungate", f"{NS}/big")]


def test_a_follower_reconciles_nothing() -> None:
    p = pod("p1", claims={"gpu": "c1"})
    c1 = claim("c1")
    api = StoreApi([c1], [p])
    c = _controller(api, leader_elect=True)
    assert isinstance(c.elector, LeaderElector) and not c.leading()
    _list_everything(c, [p], [c1])
    c.step()
    assert api.writes == []
    assert list(c.dirty) == [f"{NS}/p1"]


def test_pipelined_work_loop_places_every_pod_with_two_writes_each() -> None:
    import time

    pods = [pod(f"p{i}", claims={"gpu": f"c{i}"}) for i in range(12)]
    claims = [claim(f"c{i}", memory="8Gi") for i in range(12)]
    api = StoreApi(claims, pods)
    c = _controller(api, writes_in_flight=4)
    _list_everything(c, pods, claims)
    deadline = time.monotonic() + 20
    while (c.dirty or c.pipeline.in_flight) and time.monotonic() < deadline:
        c.step()
        c._drain(timeout=0.05)
    c.pipeline.close()
    assert sorted(api.writes) == sorted([("allocate", f"{NS}/c{i}") for i in range(12)] +
                                        [("ungate", f"{NS}/p{i}") for i in range(12)])  # fmt: skip
    used: dict[str, int] = {}
    for stored in api.claims.values():
        device = stored["status"]["allocation"]["devices"]["results"][0]["device"]
        used[device] = used.get(device, 0) + 8
    assert max(used.values()) <= 40  # a100x4: 40Gi GPUs, never over
    assert c.reconciler.metrics.decisions.labels("allocated")._value.get() == 12
