"""One reading of allocation results: the exporter's HAMi allocation gauges, GpuQuota usage and the
allocator's accounting count a result the same way. The case that used to diverge: a result of our driver
without a shareID (the whole device in the gauges, 0 memory in quota)."""

from __future__ import annotations

import pytest
from controller_factories import DRIVER, GiB, allocated, allocation_on, claim, view

from dra_hami.allocator.model import claim_results
from dra_hami.discovery import load_discovery
from dra_hami.exporter.allocation import node_allocation
from dra_hami.exporter.identity import ClaimUsers
from dra_hami.quota import Accounting, Usage, claim_usage

GPUS = load_discovery("a100x4").discover()  # what the view's slices publish


def device_usage(claim: dict) -> list[list[int]]:
    """The exporter's per-GPU rows [shares, memory, cores] of the GPUs the claim uses."""
    users = ClaimUsers(results=claim_results(claim, DRIVER))
    devices = node_allocation([("uid", "ns", users)], GPUS).devices.values()
    return [[d.shares, d.memory, d.cores] for d in devices if d.shares]


def without_share_id(consumed: dict | None) -> dict:
    allocation = allocation_on("n1", "hami-gpu-1")
    result = allocation["devices"]["results"][0]
    del result["shareID"]
    if consumed is None:
        del result["consumedCapacity"]
    else:
        result["consumedCapacity"] = consumed
    return allocation


@pytest.mark.parametrize("consumed", [None, {"memory": "4Gi", "cores": "10", "shares": "1"}])
def test_a_result_without_share_id_is_the_whole_device_for_every_reader(consumed) -> None:
    c = allocated(claim("w"), without_share_id(consumed))
    v = view(claims=[c])  # a100x4: 40Gi GPUs
    (row,) = device_usage(c)
    assert row == [1, 40 * GiB, 100]
    accounting = Accounting.from_slices(DRIVER, v.slices.values())
    assert claim_usage(c, accounting) == Usage(memory=40 * GiB, cores=100, gpus=1)
    device = next(d for d in v.state.devices.values() if d.name == "hami-gpu-1")
    usage = v.state.usage(device.key)
    assert (usage.exclusive, usage.shares, usage.consumed) == (1, 0, {})  # held whole, nothing shared
    assert v.state.utilisation(device) == 1.0


def test_a_shared_result_counts_its_consumed_capacity_for_every_reader() -> None:
    c = allocated(claim("s"), allocation_on("n1", "hami-gpu-1", memory="4Gi", cores="10"))
    v = view(claims=[c])
    (row,) = device_usage(c)
    assert row == [1, 4 * GiB, 10]
    assert claim_usage(c, Accounting.from_slices(DRIVER, v.slices.values())) == Usage(4 * GiB, 10, 1)


def test_quota_counts_an_unpublished_whole_device_as_the_largest_gpu() -> None:
    c = allocated(claim("w"), without_share_id(None))
    c["status"]["allocation"]["devices"]["results"][0]["device"] = "hami-gpu-99"
    v = view(claims=[c])
    assert claim_usage(c, Accounting.from_slices(DRIVER, v.slices.values())) == Usage(40 * GiB, 100, 1)
    # The node's gauges count only the node's own GPUs; quota assumes the worst.
    assert device_usage(c) == []
