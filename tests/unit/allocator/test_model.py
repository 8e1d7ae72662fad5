"""Parsing: pools and generations, typed attributes, claims, allocations, and error messages."""

import pytest
from allocator_factories import DRIVER, GiB, claim, gpu, request, resource_slice

from dra_hami.allocator import ParseError, parse_claim, parse_device_class, parse_node, parse_pod, parse_slices
from dra_hami.allocator.model import claim_results
from dra_hami.allocator.semver import Version


def test_only_the_newest_generation_of_a_pool_counts():
    old = resource_slice("n", [gpu("old-0")], generation=1, name="a")
    new = resource_slice("n", [gpu("new-0")], generation=2, name="b")
    assert [d.name for d in parse_slices([old, new])] == ["new-0"]


def test_incomplete_pools_are_skipped():
    part1 = resource_slice("n", [gpu("g0")], count=2, name="n-1")
    other = resource_slice("m", [gpu("g0")], name="m-1")
    assert [d.key.pool for d in parse_slices([part1, other])] == ["m"]
    part2 = resource_slice("n", [gpu("g1")], count=2, name="n-2")
    assert [str(d.key) for d in parse_slices([part2, part1])] == [f"{DRIVER}/n/g0", f"{DRIVER}/n/g1"]


def test_device_fields_are_typed_and_qualified():
    raw = gpu(
        "hami-gpu-0",
        attributes={
            "minor": {"int": 0},
            "healthy": {"bool": True},
            "driverVersion": {"version": "550.54.15"},
            "resource.kubernetes.io/pcieRoot": {"string": "pci0000:00"},
        },
        taints=[{"key": "maintenance", "value": "soon", "effect": "NoSchedule"}],
    )
    (device,) = parse_slices([resource_slice("node-a", [raw], generation=3)])
    assert device.node_name == "node-a" and device.generation == 3
    assert device.attributes[f"{DRIVER}/minor"] == 0
    assert device.attributes[f"{DRIVER}/healthy"] is True
    assert device.attributes[f"{DRIVER}/driverVersion"] == Version(550, 54, 15)
    assert device.attributes["resource.kubernetes.io/pcieRoot"] == "pci0000:00"
    assert device.capacity["memory"].value == 15 * GiB
    assert device.capacity["memory"].policy.range_step == 1 << 20
    assert device.capacity["shares"].policy.valid_values == (1,)
    assert device.allow_multiple_allocations
    assert str(device.taints[0]) == "maintenance=soon:NoSchedule"


def test_bad_quantity_names_object_and_field():
    bad = claim("c1", request(memory="4Gx"))
    with pytest.raises(ParseError) as err:
        parse_claim(bad)
    assert str(err.value).startswith(
        "ResourceClaim default/c1: spec.devices.requests[0].exactly.capacity.requests[memory]: "
        "'4Gx' is not a Kubernetes quantity; use a number with an optional suffix (Ki, Mi"
    )


def test_bad_version_names_the_field():
    raw = gpu("g", attributes={"cc": {"version": "7.5"}})
    with pytest.raises(ParseError, match=r"ResourceSlice n-.*: spec.devices\[0\].attributes\[cc\].version"):
        parse_slices([resource_slice("n", [raw])])


def test_claim_requests_constraints_config_and_allocation():
    obj = claim(
        "c",
        request("a", memory="1Gi", count=2, tolerations=[{"key": "k", "operator": "Exists"}]),
        {
            "name": "b",
            "firstAvailable": [
                {"name": "big", "deviceClassName": DRIVER, "capacity": {"requests": {"memory": "8Gi"}}},
                {"name": "small", "deviceClassName": DRIVER, "allocationMode": "All"},
            ],
        },
        constraints=[{"requests": ["a"], "matchAttribute": f"{DRIVER}/productName"}],
        config=[{"requests": ["a"], "opaque": {"driver": DRIVER, "parameters": {"kind": "VGpuConfig"}}}],
        allocation={
            "devices": {
                "results": [
                    {
                        "request": "a",
                        "driver": DRIVER,
                        "pool": "n",
                        "device": "g0",
                        "shareID": "00000000-0000-4000-8000-000000000001",
                        "consumedCapacity": {"memory": "-2Gi", "cores": "10"},
                    }
                ]
            }
        },
    )
    parsed = parse_claim(obj)
    a, b = parsed.requests
    assert (a.alternatives[0].count, a.alternatives[0].capacity_requests["memory"]) == (2, GiB)
    assert a.alternatives[0].tolerations[0].operator == "Exists"
    assert [alt.name for alt in b.alternatives] == ["b/big", "b/small"]
    assert b.alternatives[1].allocation_mode == "All"
    assert parsed.constraints[0].applies_to("a") and not parsed.constraints[0].applies_to("b/big")
    assert parsed.config[0].configuration["opaque"]["driver"] == DRIVER
    (result,) = parsed.allocation.results
    assert result.consumed == {"memory": -2 * GiB, "cores": 10}  # as written
    # A negative amount is not allowed to free capacity (the real scheduler overcommitted on one).
    assert result.taken() == {"memory": 0, "cores": 10}


def test_device_class_config_is_kept():
    cls = parse_device_class(
        {
            "metadata": {"name": "x"},
            "spec": {"selectors": [{"cel": {"expression": "true"}}], "config": [{"opaque": {"driver": DRIVER}}]},
        }
    )
    assert cls.selectors == ("true",) and cls.config[0]["opaque"]["driver"] == DRIVER


def test_node_and_pod():
    node = parse_node(
        {
            "metadata": {"name": "n", "labels": {"zone": "a"}},
            "spec": {"unschedulable": True},
            "status": {"allocatable": {"cpu": "3500m", "memory": "8Gi", "pods": "10"}},
        }
    )
    assert (node.allocatable_milli_cpu, node.allocatable_memory, node.allocatable_pods) == (3500, 8 * GiB, 10)
    assert str(node.taints[0]) == "node.kubernetes.io/unschedulable:NoSchedule"
    pod = parse_pod(
        {
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
                ],
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "4"}}}],
                "overhead": {"cpu": "100m"},
            },
        }
    )
    # max(0.5 + 1 (limits stand in for requests), 4 init) + 0.1 overhead
    assert (pod.milli_cpu, pod.memory, pod.key) == (4100, 2 * GiB, "ns/p")


def test_semver_ordering():
    assert Version.parse("1.2.3-alpha") < Version.parse("1.2.3") < Version.parse("1.10.0")
    assert Version.parse("1.0.0-alpha.2") < Version.parse("1.0.0-alpha.10") < Version.parse("1.0.0-beta")
    assert Version.parse("1.0.0+build") == Version.parse("1.0.0")
    with pytest.raises(ValueError):
        Version.parse("7.5")


def test_allocation_results_one_rule_for_what_a_result_takes():
    def result(**extra):
        return {"request": "gpu", "driver": DRIVER, "pool": "n", "device": "hami-gpu-0", **extra}

    consumed = {"consumedCapacity": {"memory": "4Gi", f"{DRIVER}/cores": "10"}}
    obj = {
        "metadata": {"name": "c", "namespace": "ns"},
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        result(shareID="00000000-0000-4000-8000-000000000001", **consumed),
                        result(**consumed),  # no shareID: the whole device, whatever it says it consumed
                        result(adminAccess=True, **consumed),
                        {"driver": "other.example.com", "consumedCapacity": {"memory": "not read"}},
                    ]
                }
            }
        },
    }
    capacity = {"memory": 15 * GiB, "cores": 100}
    shared, whole, admin = claim_results(obj, DRIVER)
    assert (shared.taken(capacity), shared.amount("cores")) == ({"memory": 4 * GiB, f"{DRIVER}/cores": 10}, 10)
    assert whole.whole_device and whole.taken(capacity) == capacity and whole.amount("memory", capacity) == 15 * GiB
    assert whole.taken() == {}  # an unknown device: nothing known of its size
    assert not admin.whole_device and admin.taken(capacity) == {}
    with pytest.raises(
        ParseError, match=r"ResourceClaim ns/c: status.allocation.devices.results\[3\].consumedCapacity\[memory\]"
    ):
        claim_results(obj)  # every driver's results: the foreign one is malformed
    assert claim_results({"metadata": {"name": "c"}}) == ()
