"""The slices and DeviceClass we publish: schema-valid, typed, exact arithmetic, split at 128."""

from __future__ import annotations

from dataclasses import replace

import kubernetes_validate
import pytest
from pydantic import ValidationError

from dra_hami import wire
from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.discovery import GpuInfo, builtin_profiles, load_discovery
from dra_hami.discovery.profile import profile_gpus
from dra_hami.publisher.device import PoolError, build_device, memory_capacity, to_semver
from dra_hami.publisher.slices import build_pool, device_class, slice_name
from dra_hami.quantity import to_int

MiB = 1 << 20
GiB = 1 << 30
K8S = "1.36"  # kubernetes-validate ships 1.34-1.37 schemas; the oldest with consumable capacity beta on


def gpu(**changes) -> GpuInfo:
    base = GpuInfo(
        uuid="GPU-00000000-0000-0000-0000-000000000000",
        minor=0,
        index=0,
        name="Tesla T4",
        memory_bytes=15 * GiB,
        pci_bus_id="0000:3b:00.0",
        brand="Tesla",
        architecture="Turing",
        cuda_compute_capability="7.5",
        driver_version="535.104.05",
        cuda_driver_version="12.2",
        numa_node=0,
        pcie_root="pci0000:3a",
        nvlink_group=None,
        sm_count=40,
    )
    return replace(base, **changes)


def config(**changes) -> PublisherConfig:
    return PublisherConfig(node_name="node-a", **changes)


def many(count: int) -> list[GpuInfo]:
    return profile_gpus({"gpus": [{"productName": "G", "memory": "16Gi", "count": count}]}, "many", "many")


def valid(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S, strict=True)


@pytest.mark.parametrize("profile", sorted(builtin_profiles()))
def test_builtin_pools_are_schema_valid(profile: str) -> None:
    for slice_ in build_pool(load_discovery(profile).discover(), config(node_uid="1234"), generation=1):
        valid(slice_)


def test_device_class_is_schema_valid_and_selects_our_type() -> None:
    cls = device_class(wire.DEFAULT_DRIVER_NAME)
    valid(cls)
    assert cls["metadata"]["name"] == wire.DEFAULT_DRIVER_NAME
    assert cls["spec"]["selectors"] == [{"cel": {"expression": wire.device_class_selector(wire.DEFAULT_DRIVER_NAME)}}]


def test_slice_shape() -> None:
    (slice_,) = build_pool([gpu()], config(), generation=3)
    valid(slice_)
    assert slice_["metadata"]["name"] == "node-a-hami-core-gpu.project-hami.io-0"
    assert slice_["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "dra-hami"
    assert "ownerReferences" not in slice_["metadata"]
    spec = slice_["spec"]
    assert spec["driver"] == wire.DEFAULT_DRIVER_NAME
    assert spec["nodeName"] == "node-a"
    assert spec["pool"] == {"name": "node-a", "generation": 3, "resourceSliceCount": 1}
    (device,) = spec["devices"]
    assert device["name"] == "hami-gpu-0"
    assert device["allowMultipleAllocations"] is True


def test_owner_reference_to_the_node() -> None:
    (slice_,) = build_pool([gpu()], config(node_uid="a-b-c"), generation=1)
    assert slice_["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "a-b-c", "controller": True}
    ]


def test_attributes_are_typed_per_the_wire_contract() -> None:
    attributes = build_device(gpu(minor=1, index=0), config())["attributes"]
    assert attributes == {
        "type": {"string": "hami-gpu"},
        "uuid": {"string": "GPU-00000000-0000-0000-0000-000000000000"},
        "minor": {"int": 1},
        "index": {"int": 0},
        "productName": {"string": "Tesla T4"},
        "brand": {"string": "Tesla"},
        "architecture": {"string": "Turing"},
        "cudaComputeCapability": {"version": "7.5.0"},
        "driverVersion": {"version": "535.104.5"},
        "cudaDriverVersion": {"version": "12.2.0"},
        "pcieBusID": {"string": "0000:3b:00.0"},
        "numaNode": {"int": 0},
        "resource.kubernetes.io/pcieRoot": {"string": "pci0000:3a"},
        "resource.kubernetes.io/pciBusID": {"string": "0000:3b:00.0"},
    }


def test_unknown_values_are_omitted() -> None:
    unknown = gpu(
        brand=None,
        architecture=None,
        cuda_compute_capability=None,
        driver_version="weird",
        cuda_driver_version=None,
        numa_node=None,
        pcie_root=None,
    )
    (slice_,) = build_pool([unknown], config(), generation=1)
    valid(slice_)
    assert set(slice_["spec"]["devices"][0]["attributes"]) == {
        "type",
        "uuid",
        "minor",
        "index",
        "productName",
        "pcieBusID",
        "resource.kubernetes.io/pciBusID",
    }


def test_long_strings_are_cut_to_64() -> None:
    (slice_,) = build_pool([gpu(name="N" * 100)], config(), generation=1)
    valid(slice_)
    assert slice_["spec"]["devices"][0]["attributes"]["productName"] == {"string": "N" * 64}


@pytest.mark.parametrize(
    ("raw", "semver"),
    [
        ("7.5", "7.5.0"),
        ("12.9", "12.9.0"),
        ("535.104.05", "535.104.5"),
        ("550.54.15", "550.54.15"),
        ("10", "10.0.0"),
        ("v1.2.3", "1.2.3"),
        ("1.2.3.4", "1.2.3+4"),
        ("r535", None),
        ("", None),
        (None, None),
    ],
)
def test_to_semver(raw: str | None, semver: str | None) -> None:
    assert to_semver(raw) == semver


def test_capacity_per_the_wire_contract() -> None:
    capacity = build_device(gpu(), config())["capacity"]
    assert capacity == {
        "memory": {
            "value": "15Gi",
            "requestPolicy": {"default": "15Gi", "validRange": {"min": "1Mi", "max": "15Gi", "step": "1Mi"}},
        },
        "cores": {
            "value": "100",
            "requestPolicy": {"default": "0", "validRange": {"min": "0", "max": "100", "step": "1"}},
        },
        "shares": {"value": "10", "requestPolicy": {"default": "1", "validValues": ["1"]}},
    }


@pytest.mark.parametrize(
    ("total", "reserved", "scaling", "expected"),
    [
        (15 * GiB, 0, 1.0, 15 * GiB),
        (15 * GiB + 123_457, 0, 1.0, 15 * GiB),  # not MiB-aligned: rounded down to the step
        (15 * GiB, 512 * MiB, 1.0, 15 * GiB - 512 * MiB),
        (15 * GiB, 1000, 1.0, 15 * GiB - MiB),  # 1000 bytes reserved cost the whole last MiB
        (10 * GiB, 0, 1.5, 15 * GiB),  # HAMi deviceMemoryScaling oversubscribes
        (10 * GiB, 0, 1.1, 11 * GiB),  # 1.1 is 11/10 exactly, not the binary float
        (10 * GiB, 0, 0.5, 5 * GiB),
    ],
)
def test_memory_arithmetic(total: int, reserved: int, scaling: float, expected: int) -> None:
    cfg = config(reserved_memory=reserved, memory_scaling=scaling)
    assert memory_capacity(gpu(memory_bytes=total), cfg) == expected
    (slice_,) = build_pool([gpu(memory_bytes=total)], cfg, generation=1)
    valid(slice_)
    memory = slice_["spec"]["devices"][0]["capacity"]["memory"]
    assert to_int(memory["value"], "value") == expected
    assert to_int(memory["requestPolicy"]["default"], "default") == expected
    assert to_int(memory["requestPolicy"]["validRange"]["max"], "max") == expected


def test_odd_totals_are_exact() -> None:
    # 81559 MiB (an H100) scaled by 1.25: 101948.75 MiB -> 101948 MiB.
    assert memory_capacity(gpu(memory_bytes=81559 * MiB), config(memory_scaling=1.25)) == 101948 * MiB
    # Reserved given as a quantity.
    assert memory_capacity(gpu(memory_bytes=16 * GiB), config(reserved_memory="1Gi")) == 15 * GiB


@pytest.mark.parametrize(
    ("total", "reserved", "scaling", "message"),
    [
        (GiB, GiB, 1.0, "reserved_memory"),
        (GiB, 2 * GiB, 1.0, "reserved_memory"),
        (3 * MiB, 0, 0.5, "less than 2Mi"),
    ],
)
def test_memory_that_cannot_be_published(total: int, reserved: int, scaling: float, message: str) -> None:
    with pytest.raises(PoolError, match=message):
        build_pool([gpu(memory_bytes=total)], config(reserved_memory=reserved, memory_scaling=scaling), 1)


def test_split_count_sets_shares() -> None:
    (slice_,) = build_pool([gpu()], config(split_count=4), generation=1)
    assert slice_["spec"]["devices"][0]["capacity"]["shares"]["value"] == "4"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"split_count": 0}, "split_count"),
        ({"memory_scaling": 0}, "memory_scaling"),
        ({"memory_scaling": -1.5}, "memory_scaling"),
        ({"reserved_memory": -1}, "reserved_memory"),
        ({"reserved_memory": "lots"}, "reserved_memory"),
        ({"max_devices_per_slice": 129}, "max_devices_per_slice"),
        ({"max_devices_per_slice": 0}, "max_devices_per_slice"),
        ({"driver_name": "Not_A.Domain"}, "driver_name"),
        ({"driver_name": "a" * 64}, "driver_name"),
        ({"node_name": "Node_A"}, "node_name"),
        ({"splitCount": 3}, "splitCount"),
    ],
)
def test_config_errors_name_the_field(changes: dict, field: str) -> None:
    changes = {"node_name": "node-a", **changes}
    with pytest.raises(ValidationError, match=field):
        PublisherConfig(**changes)


def test_split_at_128_devices() -> None:
    gpus = many(300)
    slices = build_pool(gpus, config(), generation=7)
    assert [len(s["spec"]["devices"]) for s in slices] == [128, 128, 44]
    assert [s["metadata"]["name"] for s in slices] == [f"node-a-hami-core-gpu.project-hami.io-{k}" for k in range(3)]
    for slice_ in slices:
        valid(slice_)
        assert slice_["spec"]["pool"] == {"name": "node-a", "generation": 7, "resourceSliceCount": 3}
    names = [device["name"] for s in slices for device in s["spec"]["devices"]]
    assert names == [f"hami-gpu-{minor}" for minor in range(300)]  # PCI order, nothing lost or repeated


def test_split_at_a_configured_size() -> None:
    slices = build_pool(many(5), config(max_devices_per_slice=2), generation=1)
    assert [len(s["spec"]["devices"]) for s in slices] == [2, 2, 1]


def test_node_without_gpus_publishes_one_empty_slice() -> None:
    (slice_,) = build_pool([], config(), generation=1)
    valid(slice_)
    assert slice_["spec"]["devices"] == []
    assert slice_["spec"]["pool"]["resourceSliceCount"] == 1


def test_long_names_stay_valid_and_distinct() -> None:
    node = ".".join(["n" * 63] * 3) + ".nodes"  # 197 characters, a valid node name
    names = {slice_name(node, wire.DEFAULT_DRIVER_NAME, k) for k in range(3)}
    assert len(names) == 3
    for name in names:
        assert len(name) <= 253
    cfg = PublisherConfig(node_name=node)
    for slice_ in build_pool(many(200), cfg, generation=1):
        valid(slice_)
    other = slice_name(node[:-1] + "t", wire.DEFAULT_DRIVER_NAME, 0)
    assert other not in names


def test_generation_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        build_pool([gpu()], config(), generation=-1)
