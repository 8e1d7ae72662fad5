"""The node side without its control plane, the capacity guard (worked numbers), the lock table, healing."""

from __future__ import annotations

import json
import threading

import pytest
from plugin_factories import DRIVER, NODE, GiB, claim, result
from test_plugin_state import Api, Specs

from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.kube.client import ApiError
from dra_hami.plugin.capacity import admit, record_shares
from dra_hami.plugin.cdi_spec import CdiSettings, PreparedDevice
from dra_hami.plugin.checkpoint import Checkpoint, ClaimRecord, ClaimState, ShareUse
from dra_hami.plugin.claim import NodeDevice
from dra_hami.plugin.inventory import Inventory, InventoryError, node_devices
from dra_hami.plugin.state import ClaimLocks, PluginState
from dra_hami.publisher.slices import build_pool

MiB = 1 << 20


class DownApi(Api):
    """The API server is unreachable: what RawKubeApi raises then."""

    down = False

    def get_resource_claim(self, namespace, name):
        if self.down:
            raise ApiError(0, "MaxRetryError: connection refused", "Unreachable")
        return super().get_resource_claim(namespace, name)


@pytest.fixture
def node(tmp_path, devices):
    api, specs = DownApi(), Specs()
    libvgpu = tmp_path / "libvgpu.so"
    libvgpu.write_bytes(b"lib")
    settings = CdiSettings(DRIVER, tmp_path / "vgpu", libvgpu, injection="none")
    capped = {
        name: NodeDevice(d.name, d.uuid, d.minor, d.pci_bus_id, d.memory, shares=3) for name, d in devices.items()
    }

    def make(inventory=lambda: capped, boot="boot-1"):
        return PluginState(api, NODE, inventory, settings, specs, Checkpoint(tmp_path / "cp.json"), boot)

    return api, specs, settings, make


# ------------------------------------------------------------------------------------------ offline


def test_while_the_api_server_is_down_repeats_and_unprepares_work_and_new_claims_get_a_clear_error(node):
    api, specs, settings, make = node
    state = make()
    a, b = api.add(claim([result()], name="a")), api.add(claim([result()], name="b"))
    first = state.prepare([a])[a.uid]
    assert first.error == ""
    api.down = True
    again = state.prepare([a, b])
    assert again[a.uid] == first  # from the checkpoint
    assert again[b.uid].error.startswith("API server unreachable: reading ResourceClaim default/b: MaxRetryError")
    assert "the kubelet retries" in again[b.uid].error
    assert state.unprepare([a]) == {a.uid: ""}
    assert a.uid not in specs.files and not settings.claim_dir(a.uid).exists()
    api.down = False  # the server is back: the retry goes through, no restart
    assert state.prepare([b])[b.uid].error == ""


def test_a_failing_inventory_fails_each_claim_with_the_reason(node):
    api, _specs, _settings, make = node

    def broken():
        raise InventoryError("this node has not published its devices yet and GPU discovery failed (NVML gone)")

    state = make(inventory=broken)
    a = api.add(claim([result()]))
    assert "GPU discovery failed (NVML gone)" in state.prepare([a])[a.uid].error
    assert state.records() == {}


def test_the_claim_lock_table_does_not_grow(node):
    api, _specs, _settings, make = node
    state = make()
    refs = [api.add(claim([result(memory="1Gi", cores="1")], name=f"c{i}")) for i in range(3)]
    for ref in refs:
        state.prepare([ref])
    state.unprepare(refs)
    state.sweep()
    assert len(state._claim_locks) == 0


def test_claim_locks_exclude_and_then_forget() -> None:
    locks = ClaimLocks()
    inside, release = threading.Event(), threading.Event()
    order = []

    def holder():
        with locks.hold(["b", "a"]):
            inside.set()
            release.wait(5)
            order.append("first")

    thread = threading.Thread(target=holder)
    thread.start()
    inside.wait(5)
    assert len(locks) == 2
    waiter = threading.Thread(target=lambda: (locks.hold(["a"]).__enter__(), order.append("second")))
    waiter.start()
    waiter.join(0.1)
    assert order == []  # "a" is held
    release.set()
    thread.join(5)
    waiter.join(5)
    assert order == ["first", "second"]


# ------------------------------------------------------------------------------------------ healing


def test_a_wiped_cdi_dir_and_claim_dir_are_rebuilt_by_heal_and_by_the_sweep(node):
    api, specs, settings, make = node
    state = make()
    a = api.add(claim([result()]))
    state.prepare([a])
    spec = specs.files[a.uid]
    specs.files.clear()  # the CDI dir was wiped
    assert state.heal() == [a.uid]
    assert specs.files[a.uid] == spec
    assert state.heal() == []  # nothing to do
    for path in settings.claim_dir(a.uid).iterdir():
        path.unlink()
    specs.files.clear()
    api.down = True  # the sweep heals even when it cannot check claims against the API
    state.sweep()
    assert specs.files[a.uid] == spec
    assert settings.claim_dir(a.uid).is_dir() and settings.limits_file(a.uid).is_file()


def test_a_restarted_plugin_heals_at_start(node, tmp_path):
    api, specs, _settings, make = node
    a = api.add(claim([result()]))
    make().prepare([a])
    specs.files.clear()
    make().heal()  # what main runs before serving
    assert a.uid in specs.files


# ------------------------------------------------------------------------------------------ capacity guard


def record(uid: str, *shares: tuple[str, int, int], name: str = "") -> ClaimRecord:
    return ClaimRecord(
        uid, "team", name or uid, ClaimState.COMPLETED, "b", {}, [], [ShareUse(d, m, c) for d, m, c in shares]
    )


GPU = {"g0": NodeDevice("g0", "GPU-0", 0, "0000:01:00.0", 15360 * MiB, shares=3)}


def test_memory_past_capacity_is_refused_naming_the_claims() -> None:
    held = [record("u1", ("g0", 8 * GiB, 0), name="a"), record("u2", ("g0", 4 * GiB, 0), name="b")]
    # 8192Mi + 4096Mi prepared = 12288Mi; 4096Mi more = 16384Mi > 15360Mi
    error = admit(record("u3", ("g0", 4 * GiB, 0)), held, GPU)
    assert "refusing to over-commit GPU g0: memory 12288Mi prepared + 4096Mi asked > 15360Mi" in error
    assert "team/a (u1), team/b (u2)" in error
    # 3072Mi fits exactly: 12288 + 3072 = 15360
    assert admit(record("u3", ("g0", 3 * GiB, 0)), held, GPU) == ""


def test_cores_and_shares_past_capacity_are_refused() -> None:
    held = [record("u1", ("g0", GiB, 60)), record("u2", ("g0", GiB, 30))]
    assert "cores 90 prepared + 20 asked > 100" in admit(record("u3", ("g0", GiB, 20)), held, GPU)
    assert admit(record("u3", ("g0", GiB, 10)), held, GPU) == ""  # 100 exactly
    held.append(record("u3", ("g0", GiB, 0)))
    assert "shares 3 prepared + 1 asked > 3" in admit(record("u4", ("g0", GiB, 0)), held, GPU)


def test_a_re_prepare_of_the_same_claim_does_not_count_itself() -> None:
    held = [record("u1", ("g0", 15 * GiB, 100))]
    assert admit(record("u1", ("g0", 15 * GiB, 100)), held, GPU) == ""


def test_the_plugin_refuses_the_second_of_two_allocations_of_the_same_memory(node):
    """Two controllers both gave 10Gi of a 15Gi T4 away: the second prepare is refused, nothing is written."""
    api, specs, _settings, make = node
    state = make()
    a = api.add(claim([result(memory="10Gi", cores="50")], name="a"))
    b = api.add(claim([result(memory="10Gi", cores="50")], name="b"))
    assert state.prepare([a])[a.uid].error == ""
    error = state.prepare([b])[b.uid].error
    assert "memory 10240Mi prepared + 10240Mi asked > 15360Mi" in error and f"default/a ({a.uid})" in error
    assert b.uid not in specs.files and b.uid not in state.records()
    # both in one batch: the first is admitted, the second refused
    state.unprepare([a])
    both = state.prepare([a, b])
    assert sorted(bool(r.error) for r in both.values()) == [False, True]


def test_shares_of_records_from_older_versions_are_read_from_their_spec(node):
    api, _specs, _settings, make = node
    state = make()
    a = api.add(claim([result(memory="2Gi", cores="40")]))
    state.prepare([a])
    old = state.records()[a.uid]
    old.shares = None  # as a record written before shares were kept
    assert record_shares(old) == [ShareUse("hami-gpu-0", 2 * GiB, 40)]


def test_the_guard_survives_a_restart(node):
    api, _specs, _settings, make = node
    a = api.add(claim([result(memory="10Gi")], name="a"))
    b = api.add(claim([result(memory="10Gi")], name="b"))
    make().prepare([a])
    assert "over-commit" in make().prepare([b])[b.uid].error


# ------------------------------------------------------------------------------------------ inventory


def test_the_inventory_is_what_was_published_and_survives_a_restart(tmp_path) -> None:
    from dra_hami.discovery.fake import FakeDiscovery

    config = PublisherConfig(node_name=NODE, driver_name=DRIVER, split_count=4)
    pool = build_pool(FakeDiscovery.from_profile("t4x2").discover(), config, generation=3)
    calls = []

    def discovery_now():
        calls.append(1)
        raise RuntimeError("NVML: GPU is lost")

    inventory = Inventory(tmp_path / "inventory.json", discovery_now)
    with pytest.raises(InventoryError, match="GPU is lost"):
        inventory.devices()
    inventory.published(pool)
    assert inventory.devices() == node_devices(pool)
    assert inventory.devices()["hami-gpu-0"].shares == 4
    restarted = Inventory(tmp_path / "inventory.json", discovery_now)
    assert restarted.devices() == node_devices(pool)
    assert len(calls) == 1  # discovery was asked only before the first publish
    document = json.loads((tmp_path / "inventory.json").read_text())
    assert document["kind"] == "DraHamiInventory"


def test_a_damaged_inventory_file_falls_back_to_discovery(tmp_path) -> None:
    from dra_hami.discovery.fake import FakeDiscovery

    (tmp_path / "inventory.json").write_text("{not json")
    pool = build_pool(FakeDiscovery.from_profile("t4x2").discover(), PublisherConfig(node_name=NODE), generation=0)
    assert Inventory(tmp_path / "inventory.json", lambda: pool).devices() == node_devices(pool)


def test_prepared_device_json_round_trip_keeps_shares(tmp_path) -> None:
    prepared = [PreparedDevice(("gpu",), NODE, "g", ("x",), None)]
    rec = ClaimRecord("u", "ns", "n", ClaimState.COMPLETED, "b", {}, prepared, [ShareUse("g", GiB, 5)])
    Checkpoint(tmp_path / "cp.json").save({"u": rec})
    assert Checkpoint(tmp_path / "cp.json").load()["u"].shares == [ShareUse("g", GiB, 5)]
