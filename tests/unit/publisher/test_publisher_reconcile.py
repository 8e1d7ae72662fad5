"""SlicePublisher against an in-memory API server."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from slice_store import SliceStore

from dra_hami import wire
from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.discovery import FakeDiscovery, GpuInfo
from dra_hami.discovery.profile import profile_gpus
from dra_hami.kube.client import ApiError
from dra_hami.publisher.publisher import SlicePublisher
from dra_hami.publisher.slices import build_pool
from dra_hami.quantity import to_int

NODE = "node-a"
PREFIX = f"{NODE}-{wire.DEFAULT_DRIVER_NAME}-"


def gpus(count: int, memory: str = "15Gi") -> list[GpuInfo]:
    return profile_gpus({"gpus": [{"productName": "Tesla T4", "memory": memory, "count": count}]}, "t", "t")


def publisher(store: SliceStore, count: int = 2, **config: Any) -> tuple[SlicePublisher, FakeDiscovery]:
    discovery = FakeDiscovery(gpus(count))
    return SlicePublisher(store, discovery, PublisherConfig(node_name=NODE, **config), min_gap=0.01), discovery


def foreign(name: str, node: str = NODE, driver: str = "other.example.com") -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": name},
        "spec": {"driver": driver, "nodeName": node, "pool": {"name": node, "generation": 5, "resourceSliceCount": 1}},
    }


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


def test_first_publish() -> None:
    store = SliceStore()
    pub, _ = publisher(store)
    result = pub.reconcile()
    assert result.generation == 1
    assert result.created == (PREFIX + "0",)
    assert (result.updated, result.deleted) == ((), ())
    (stored,) = store.objects.values()
    assert [d["name"] for d in stored["spec"]["devices"]] == ["hami-gpu-0", "hami-gpu-1"]
    assert stored["spec"]["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 1}


def test_no_op_reconcile_writes_nothing() -> None:
    store = SliceStore()
    pub, _ = publisher(store, count=300)
    pub.reconcile()
    store.clear_writes()
    for _ in range(3):
        result = pub.reconcile()
        assert not result.changed
        assert result.generation == 1
    assert store.writes == []
    assert set(store.generations().values()) == {1}


def test_inventory_change_bumps_generation_on_every_slice() -> None:
    store = SliceStore()
    pub, discovery = publisher(store, count=300)
    pub.reconcile()
    changed = gpus(300)
    changed[299] = replace(changed[299], memory_bytes=8 << 30)
    discovery.set_gpus(changed)
    store.clear_writes()
    result = pub.reconcile()
    assert result.generation == 2
    assert sorted(result.updated) == [PREFIX + str(k) for k in range(3)]  # all slices, not only the changed one
    assert store.generations() == {PREFIX + str(k): 2 for k in range(3)}
    assert not pub.reconcile().changed


def test_deleted_slice_is_recreated() -> None:
    store = SliceStore()
    pub, _ = publisher(store, count=300)
    pub.reconcile()
    store.remove(PREFIX + "1")  # the kubelet wiped it
    result = pub.reconcile()
    assert result.created == (PREFIX + "1",)
    assert store.generations() == {PREFIX + str(k): 2 for k in range(3)}


def test_all_slices_wiped_by_a_kubelet_restart() -> None:
    store = SliceStore()
    pub, _ = publisher(store)
    pub.reconcile()
    for name in store.names():
        store.remove(name)
    result = pub.reconcile()
    assert result.created == (PREFIX + "0",)
    assert result.generation == 2  # never goes back below what this process published


def test_stale_slices_are_removed() -> None:
    store = SliceStore()
    pub, discovery = publisher(store, count=300)
    pub.reconcile()
    store.put(foreign("leftover", driver=wire.DEFAULT_DRIVER_NAME))  # ours by selector, unknown name
    discovery.set_gpus(gpus(100))
    result = pub.reconcile()
    assert sorted(result.deleted) == sorted([PREFIX + "1", PREFIX + "2", "leftover"])
    assert store.names() == [PREFIX + "0"]
    (stored,) = store.objects.values()
    assert stored["spec"]["pool"]["resourceSliceCount"] == 1
    assert stored["spec"]["pool"]["generation"] == 6  # above the leftover's 5


def test_other_drivers_and_nodes_are_never_touched() -> None:
    store = SliceStore()
    store.put(foreign("theirs"))
    store.put(foreign("other-node", node="node-b", driver=wire.DEFAULT_DRIVER_NAME))
    pub, _ = publisher(store)
    pub.reconcile()
    pub.remove_all()
    assert store.names() == ["other-node", "theirs"]
    assert [verb for verb, name in store.writes if name in ("theirs", "other-node")] == []


def test_mixed_generations_are_repaired() -> None:
    store = SliceStore()
    pub, _ = publisher(store, count=300)
    pub.reconcile()
    half_done = copy.deepcopy(store.objects[PREFIX + "2"])
    half_done["spec"]["pool"]["generation"] = 0
    store.objects[PREFIX + "2"] = half_done
    fresh, _ = publisher(store, count=300)  # a restarted process: no memory of generation 1
    result = fresh.reconcile()
    assert result.generation == 2
    assert set(store.generations().values()) == {2}


def test_conflict_is_retried_after_listing_again() -> None:
    store = SliceStore()
    pub, discovery = publisher(store)
    pub.reconcile()

    def concurrent_writer(body: dict[str, Any]) -> None:  # someone writes between our list and our update
        current = store.objects[body["metadata"]["name"]]
        current["metadata"]["annotations"] = {"someone": "else"}
        store.put(current)

    store.before["update"] = concurrent_writer
    discovery.set_gpus(gpus(3))
    result = pub.reconcile()
    assert result.attempts == 2
    assert result.updated == (PREFIX + "0",)
    stored = store.objects[PREFIX + "0"]
    assert len(stored["spec"]["devices"]) == 3
    assert stored["metadata"]["annotations"] == {"someone": "else"}  # the other writer's change survives


def test_persistent_conflict_gives_up() -> None:
    store = SliceStore()
    pub, discovery = publisher(store)
    pub.reconcile()
    store.failures["update"] = [ApiError(409, "conflict", "Conflict") for _ in range(10)]
    discovery.set_gpus(gpus(3))
    with pytest.raises(ApiError, match="conflict"):
        pub.reconcile()


def test_create_racing_with_a_wipe_and_recreate() -> None:
    store = SliceStore()
    pub, _ = publisher(store)
    store.failures["create"] = [ApiError(409, "already exists", "AlreadyExists")]
    result = pub.reconcile()
    assert result.attempts == 2
    assert store.names() == [PREFIX + "0"]


def test_update_of_a_vanished_slice_is_retried() -> None:
    store = SliceStore()
    pub, discovery = publisher(store)
    pub.reconcile()
    store.before["update"] = lambda body: store.remove(body["metadata"]["name"])
    discovery.set_gpus(gpus(1))
    result = pub.reconcile()
    assert (result.attempts, result.created) == (2, (PREFIX + "0",))


def test_immutable_difference_replaces_the_slice() -> None:
    store = SliceStore()
    squatter = foreign(PREFIX + "0", driver=wire.DEFAULT_DRIVER_NAME)
    squatter["spec"]["pool"]["name"] = "some-other-pool"
    store.put(squatter)
    pub, _ = publisher(store)
    pub.reconcile()
    stored = store.objects[PREFIX + "0"]
    assert stored["spec"]["pool"]["name"] == NODE
    assert [verb for verb, _ in store.writes] == ["delete", "create"]


def test_update_keeps_foreign_metadata() -> None:
    store = SliceStore()
    pub, discovery = publisher(store)
    pub.reconcile()
    current = store.objects[PREFIX + "0"]
    current["metadata"]["labels"]["team"] = "gpu"
    store.put(current)
    discovery.set_gpus(gpus(1))
    pub.reconcile()
    labels = store.objects[PREFIX + "0"]["metadata"]["labels"]
    assert labels["team"] == "gpu"
    assert labels["app.kubernetes.io/managed-by"] == "dra-hami"


def test_owner_reference_added_when_missing() -> None:
    store = SliceStore()
    pub, _ = publisher(store)
    pub.reconcile()
    with_owner = SlicePublisher(store, FakeDiscovery(gpus(2)), PublisherConfig(node_name=NODE, node_uid="n-uid"))
    result = with_owner.reconcile()
    assert result.updated == (PREFIX + "0",)
    assert store.objects[PREFIX + "0"]["metadata"]["ownerReferences"][0]["uid"] == "n-uid"


def to_plain_numbers(obj: dict[str, Any]) -> None:
    """A server that writes quantities back in another (equal) form: 15Gi -> "16106127360"."""
    for device in obj["spec"].get("devices") or []:
        for entry in device["capacity"].values():
            entry["value"] = str(to_int(entry["value"], "v"))
            policy = entry["requestPolicy"]
            policy["default"] = str(to_int(policy["default"], "d"))
            for key, value in (policy.get("validRange") or {}).items():
                policy["validRange"][key] = str(to_int(value, key))


def test_server_normalised_quantities_cause_no_churn() -> None:
    store = SliceStore(normalise=to_plain_numbers)
    pub, _ = publisher(store, count=2)
    pub.reconcile()
    memory = store.objects[PREFIX + "0"]["spec"]["devices"][0]["capacity"]["memory"]
    assert memory["value"] == str(15 << 30)  # the store really rewrote it
    store.clear_writes()
    assert not pub.reconcile().changed
    assert store.writes == []


def test_remove_all() -> None:
    store = SliceStore()
    pub, _ = publisher(store, count=300)
    pub.reconcile()
    assert pub.remove_all() == [PREFIX + str(k) for k in range(3)]
    assert store.names() == []


def test_discovery_failure_keeps_what_is_published() -> None:
    store = SliceStore()
    pub, discovery = publisher(store)
    pub.reconcile()
    discovery.discover = lambda: (_ for _ in ()).throw(RuntimeError("NVML gone"))  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        pub.reconcile()
    assert store.names() == [PREFIX + "0"]


def test_matches_build_pool_exactly() -> None:
    store = SliceStore()
    pub, discovery = publisher(store, reserved_memory=1 << 30, split_count=4)
    pub.reconcile()
    (stored,) = store.objects.values()
    (expected,) = build_pool(discovery.discover(), pub.config, generation=1)
    assert stored["spec"] == expected["spec"]


# -- the run loop --------------------------------------------------------------------------------------


class Loop:
    def __init__(self, pub: SlicePublisher, interval: float):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=pub.run, args=(self.stop, interval), daemon=True)

    def __enter__(self) -> Loop:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "run() did not stop"


def test_watch_event_triggers_an_immediate_reconcile() -> None:
    store = SliceStore()
    pub, _ = publisher(store)
    with Loop(pub, interval=60):  # the timer never fires during the test
        wait_for(lambda: PREFIX + "0" in store.objects)
        wait_for(lambda: store.watch_calls >= 1)
        time.sleep(0.05)  # let the watch subscribe
        store.remove(PREFIX + "0")
        wait_for(lambda: PREFIX + "0" in store.objects)


def test_loop_survives_api_errors() -> None:
    store = SliceStore()
    store.failures["list"] = [ApiError(500, "etcd is sad", "InternalError") for _ in range(3)]
    store.failures["create"] = [ApiError(0, "connection refused", "Unreachable")]
    pub, _ = publisher(store)
    with Loop(pub, interval=0.02) as loop:
        wait_for(lambda: PREFIX + "0" in store.objects)
        assert loop.thread.is_alive()


def test_loop_survives_unexpected_exceptions() -> None:
    store = SliceStore()
    pub, discovery = publisher(store)
    calls = {"n": 0}
    real = discovery.discover

    def flaky() -> list[GpuInfo]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("bug")
        return real()

    discovery.discover = flaky  # type: ignore[method-assign]
    with Loop(pub, interval=0.02):
        wait_for(lambda: PREFIX + "0" in store.objects)


def test_polling_continues_when_watch_fails() -> None:
    store = SliceStore()
    store.watch_error = ApiError(403, "watch is forbidden", "Forbidden")
    pub, _ = publisher(store)
    with Loop(pub, interval=0.05):
        wait_for(lambda: PREFIX + "0" in store.objects)
        store.remove(PREFIX + "0")
        wait_for(lambda: PREFIX + "0" in store.objects)
        assert store.watch_calls >= 1


def test_loop_does_not_churn() -> None:
    store = SliceStore()
    pub, _ = publisher(store)
    with Loop(pub, interval=0.02):
        wait_for(lambda: PREFIX + "0" in store.objects)
        time.sleep(0.3)  # many passes, and the watch sees our own write
    assert store.writes == [("create", PREFIX + "0")]


def test_fields_a_newer_api_server_defaults_cause_no_churn():
    """A server that adds fields we never set (new API defaults) must not make us rewrite the pool."""
    import copy

    from dra_hami.publisher.compare import same_content

    desired = {
        "spec": {
            "driver": "d",
            "pool": {"name": "n", "generation": 1, "resourceSliceCount": 1},
            "devices": [{"name": "hami-gpu-0", "attributes": {"type": {"string": "hami-gpu"}}, "capacity": {}}],
        }
    }
    stored = copy.deepcopy(desired)
    stored = {
        "spec": {
            **stored["spec"],
            "futureSpecField": True,
            "devices": [{**stored["spec"]["devices"][0], "futureDeviceField": {"x": 1}}],
        }
    }
    assert same_content(desired, stored)
    # ... but an attribute we no longer publish is a difference.
    stored["spec"]["devices"][0]["attributes"]["stale"] = {"int": 1}
    assert not same_content(desired, stored)


def test_a_slice_deleted_while_the_watch_was_down_comes_back_at_once() -> None:
    """An ERROR event ends the watch; the kubelet deletes the slice before the next watch opens. The old loop
    re-watched from "now" and missed the DELETED until its 30 s timer; the reflector lists again, which
    starts a pass at once, and watches from the listed version (never without one)."""
    store = SliceStore()
    pub, _ = publisher(store)
    with Loop(pub, interval=60):  # the timer never fires during the test
        wait_for(lambda: PREFIX + "0" in store.objects)
        wait_for(lambda: store.watch_calls >= 1)
        time.sleep(0.05)
        first = store.generations()[PREFIX + "0"]
        with store._lock:  # the ERROR event and the deletion land before any new watch can see the deletion
            store.error_open_watches()
            store.remove(PREFIX + "0")
        started = time.monotonic()
        wait_for(lambda: PREFIX + "0" in store.objects, timeout=5)
        assert time.monotonic() - started < 5
        assert store.generations()[PREFIX + "0"] > first
    assert "" not in store.watch_versions
