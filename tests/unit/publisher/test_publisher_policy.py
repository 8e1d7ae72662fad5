"""Our own request policies are checked before publishing: the 1.36 API server panics on step 0."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dra_hami.publisher.compare import same_content
from dra_hami.publisher.policy import PolicyError, check_capacity, check_device

GOOD_RANGE = {
    "value": "15Gi",
    "requestPolicy": {"default": "15Gi", "validRange": {"min": "1Mi", "max": "15Gi", "step": "1Mi"}},
}
GOOD_VALUES = {"value": "10", "requestPolicy": {"default": "1", "validValues": ["1"]}}


def with_policy(base: dict[str, Any], **policy: Any) -> dict[str, Any]:
    entry = copy.deepcopy(base)
    entry["requestPolicy"].update(policy)
    return entry


def with_range(**values: Any) -> dict[str, Any]:
    entry = copy.deepcopy(GOOD_RANGE)
    entry["requestPolicy"]["validRange"].update(values)
    return entry


@pytest.mark.parametrize("entry", [GOOD_RANGE, GOOD_VALUES, {"value": "100"}, with_range(min="0", step="1Mi")])
def test_good_policies_pass(entry: dict[str, Any]) -> None:
    check_capacity("cap", entry, allow_multiple=True)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (with_range(step="0"), "step 0 must be positive"),  # the API server panics on this
        (with_range(step="-1Mi"), "must be positive"),
        (with_range(min="-1"), "min -1 is negative"),
        (with_range(max="16Gi"), "max 17179869184 <= value"),
        (with_policy(GOOD_RANGE, default="16Gi"), "default"),
        (with_range(max="8Gi"), "default 16106127360 <= max 8589934592"),
        (with_range(step="1Gi"), "max 16106127360 is not min 1048576 plus a multiple of step"),
        (with_policy(GOOD_RANGE, default="1500Ki"), "default 1536000 is not min"),
        (with_range(min="15Gi", step="1Gi"), "exceeds value"),
        ({"value": "-1"}, "negative"),
        ({"value": "lots"}, "not a Kubernetes quantity"),
        ({"value": "10", "requestPolicy": {"validValues": ["1"]}}, "default is required"),
        (with_policy(GOOD_VALUES, default="2"), "not one of validValues"),
        (with_policy(GOOD_VALUES, validValues=["2", "1"]), "strictly ascending"),
        (with_policy(GOOD_VALUES, validValues=["1", "11"]), r"lie in \[0, 10\]"),
        (with_policy(GOOD_VALUES, validValues=[]), "1 to 10 entries"),
        (with_policy(GOOD_VALUES, validValues=[str(i) for i in range(1, 12)]), "1 to 10 entries"),
        (with_policy(GOOD_VALUES, validRange={"min": "1"}), "exactly one of validValues and validRange"),
        ({"value": "10", "requestPolicy": {"default": "1"}}, "exactly one"),
        ({"value": "10", "requestPolicy": {"default": "1", "validRange": {}}}, "validRange.min is required"),
    ],
)
def test_bad_policies_are_refused(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        check_capacity("device 'hami-gpu-0' capacity x", entry, allow_multiple=True)


def test_policy_needs_multiple_allocations() -> None:
    with pytest.raises(PolicyError, match="allowMultipleAllocations"):
        check_capacity("cap", GOOD_VALUES, allow_multiple=False)


def device(**attributes: Any) -> dict[str, Any]:
    return {"name": "hami-gpu-0", "allowMultipleAllocations": True, "attributes": attributes, "capacity": {}}


@pytest.mark.parametrize(
    ("dev", "message"),
    [
        (device(minor={"int": "1"}), "wrong type"),
        (device(minor={"int": True}), "wrong type"),
        (device(uuid={"string": "x" * 65}), "longer than 64"),
        (device(cc={"version": "7.5"}), "not a semver"),
        (device(cc={"version": "7.5.0", "string": "x"}), "exactly one"),
        (device(**{"bad name": {"int": 1}}), "not a C identifier"),
        (device(**{f"a{i}": {"int": i} for i in range(33)}), "more than 32"),
    ],
)
def test_bad_attributes_are_refused(dev: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        check_device(dev)


def test_qualified_attribute_names_pass() -> None:
    check_device(device(**{"resource.kubernetes.io/pcieRoot": {"string": "pci0000:00"}, "numaNode": {"int": 0}}))


def slice_with(memory: str, generation: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "s", "labels": {"app.kubernetes.io/managed-by": "dra-hami"}, **extra},
        "spec": {
            "driver": "d",
            "nodeName": "n",
            "pool": {"name": "n", "generation": generation, "resourceSliceCount": 1},
            "devices": [
                {
                    "name": "hami-gpu-0",
                    "capacity": {
                        "memory": {
                            "value": memory,
                            "requestPolicy": {
                                "default": memory,
                                "validRange": {"min": "1Mi", "max": memory, "step": "1Mi"},
                            },
                        }
                    },
                }
            ],
        },
    }


def test_compare_quantities_by_value() -> None:
    assert same_content(slice_with("15360Mi"), slice_with("15Gi"))
    assert same_content(slice_with("15Gi"), slice_with(str(15 << 30)))
    assert not same_content(slice_with("15Gi"), slice_with("16Gi"))


def test_compare_ignores_generation_and_server_fields() -> None:
    stored = slice_with("15Gi", generation=9, resourceVersion="7", uid="u", managedFields=[{}])
    stored["metadata"]["labels"]["someone.else/label"] = "x"
    stored["spec"]["devices"][0]["attributes"] = {}  # the server leaves out what was empty
    assert same_content(slice_with("15Gi"), stored)


def test_compare_notices_missing_label_or_owner() -> None:
    stored = slice_with("15Gi")
    stored["metadata"]["labels"] = {}
    assert not same_content(slice_with("15Gi"), stored)
    owner = {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "1", "controller": True}
    assert not same_content(slice_with("15Gi", ownerReferences=[owner]), slice_with("15Gi"))
    assert same_content(slice_with("15Gi", ownerReferences=[owner]), slice_with("15Gi", ownerReferences=[owner]))
