"""GpuQuota arithmetic: parsing, what a claim uses (worked answers), the decision and its message, and the
controller's allocation check."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "webhook"))
from webhook_fixtures import DRIVER, claim, fleet, quota, slice_spec

from dra_hami.quota import Accounting, QuotaError, Usage, check_allocation, check_request, claim_usage
from dra_hami.quota.model import Limits, parse_gpu_quota
from dra_hami.quota.usage import namespace_usage, spec_usage

GI, MI = 1 << 30, 1 << 20
T4 = Accounting.from_slices(DRIVER, fleet("t4x2"))  # largest 15360Mi, 2 GPUs


def test_accounting_from_slices() -> None:
    assert (T4.largest_memory, T4.gpu_count, T4.classes) == (15360 * MI, 2, frozenset({DRIVER}))
    mixed = Accounting.from_slices(DRIVER, fleet("t4x2", "l40sx2"))
    assert (mixed.largest_memory, mixed.gpu_count) == (46068 * MI, 4)
    assert Accounting.from_slices("other.example.com", fleet("t4x2")).gpu_count == 0


def test_usage_arithmetic_and_status_json() -> None:
    a = Usage(4 * GI, 30, 1)
    assert a + Usage(MI, 5, 1) == Usage(4 * GI + MI, 35, 2)
    assert a * 3 == Usage(12 * GI, 90, 3)
    assert a.max(Usage(GI, 50, 0)) == Usage(4 * GI, 50, 1)
    assert a.to_status() == {"memory": "4Gi", "cores": 30, "gpus": 1}
    assert Usage().to_status() == {"memory": "0", "cores": 0, "gpus": 0} and Usage().empty


def test_parse_quota_limits_and_status() -> None:
    q = parse_gpu_quota(quota(memory="24Gi", cores=150, used={"memory": "3Gi", "cores": 25, "gpus": 1}))
    assert q.hard == Limits(24 * GI, 150, None)
    assert q.used == Usage(3 * GI, 25, 1)
    assert q.label == "GpuQuota ns/budget"
    assert parse_gpu_quota(quota(gpus=0)).used is None


@pytest.mark.parametrize(
    ("hard", "message"),
    [
        ({"memory": "lots"}, r"GpuQuota ns/budget: spec.hard.memory: 'lots' is not a Kubernetes quantity"),
        ({"memory": "-1Gi"}, r"spec.hard.memory: '-1Gi' must not be negative"),
        ({"cores": "10"}, r"spec.hard.cores: '10' is not an integer"),
        ({"gpus": -2}, r"spec.hard.gpus: -2 must not be negative"),
    ],
)
def test_bad_quota_objects_name_the_field(hard: dict, message: str) -> None:
    with pytest.raises(QuotaError, match=message):
        parse_gpu_quota(quota(**hard))


@pytest.mark.parametrize(
    ("spec", "usage"),
    [
        (slice_spec("4Gi", "30"), Usage(4 * GI, 30, 1)),
        (slice_spec("1500Mi", "25", count=2), Usage(3000 * MI, 50, 2)),  # count multiplies
        (slice_spec("1000000", "5"), Usage(MI, 5, 1)),  # 1,000,000 bytes round up to the 1Mi step
        (slice_spec("100"), Usage(MI, 0, 1)),  # below the 1Mi minimum: the minimum
        (slice_spec(cores="10"), Usage(15360 * MI, 10, 1)),  # no memory: the whole (largest) card
        (slice_spec("1Gi", cls="nic.example.com"), Usage()),  # not our devices
    ],
)
def test_unallocated_claim_usage_worked_answers(spec: dict, usage: Usage) -> None:
    assert claim_usage(claim("c", spec), T4) == usage


def test_all_mode_and_first_available_take_the_worst_case() -> None:
    all_mode = {
        "devices": {
            "requests": [
                {
                    "name": "g",
                    "exactly": {
                        "deviceClassName": DRIVER,
                        "allocationMode": "All",
                        "capacity": {"requests": {"memory": "1Gi", "cores": "10"}},
                    },
                }
            ]
        }
    }
    assert spec_usage(all_mode, T4) == Usage(2 * GI, 20, 2)  # every published GPU
    first = {
        "devices": {
            "requests": [
                {
                    "name": "g",
                    "firstAvailable": [
                        {
                            "name": "big",
                            "deviceClassName": DRIVER,
                            "capacity": {"requests": {"memory": "8Gi", "cores": "10"}},
                        },
                        {
                            "name": "two",
                            "deviceClassName": DRIVER,
                            "count": 2,
                            "capacity": {"requests": {"memory": "2Gi", "cores": "20"}},
                        },
                    ],
                }
            ]
        }
    }
    assert spec_usage(first, T4) == Usage(8 * GI, 40, 2)  # per-dimension max: 8Gi / 2x20 / 2
    admin = slice_spec("1Gi")
    admin["devices"]["requests"][0]["exactly"]["adminAccess"] = True
    assert spec_usage(admin, T4) == Usage()


def test_allocated_claim_counts_its_consumed_capacity() -> None:
    allocation = {
        "devices": {
            "results": [
                {
                    "request": "gpu",
                    "driver": DRIVER,
                    "pool": "n",
                    "device": "hami-gpu-0",
                    "shareID": "s1",
                    "consumedCapacity": {"memory": "3Gi", "cores": "25", "shares": "1"},
                },
                {
                    "request": "gpu",
                    "driver": DRIVER,
                    "pool": "n",
                    "device": "hami-gpu-1",
                    "shareID": "s2",
                    "consumedCapacity": {"memory": "3Gi", "cores": "25", "shares": "1"},
                },
                {"request": "nic", "driver": "nic.example.com", "pool": "n", "device": "eth0"},
            ]
        }
    }
    assert claim_usage(claim("c", slice_spec("1Gi"), allocation=allocation), T4) == Usage(6 * GI, 50, 2)


def test_namespace_usage_sums_and_skips_excluded_and_unreadable_claims() -> None:
    claims = [
        claim("a", slice_spec("4Gi", "30")),
        claim("b", slice_spec("2Gi", "10")),
        claim("bad", {"devices": {"requests": [{"name": "x"}]}}),
    ]
    assert namespace_usage(claims, T4) == Usage(6 * GI, 40, 2)
    assert namespace_usage(claims, T4, exclude_uid="uid-a") == Usage(2 * GI, 10, 1)


def test_check_request_message_shows_used_requested_and_limit() -> None:
    q = parse_gpu_quota(quota(memory="8Gi", cores=100, gpus=4))
    assert check_request([q], Usage(4 * GI, 60, 1), Usage(4 * GI, 40, 1), "ResourceClaim ns/c") is None  # exactly full
    refusal = check_request([q], Usage(4 * GI, 60, 1), Usage(4 * GI + MI, 50, 1), "ResourceClaim ns/c")
    assert refusal is not None
    assert [(e.dimension, e.used, e.requested, e.limit) for e in refusal.excesses] == [
        ("memory", 4 * GI, 4 * GI + MI, 8 * GI),
        ("cores", 60, 50, 100),
    ]
    assert refusal.message.startswith(
        "ResourceClaim ns/c would exceed GpuQuota ns/budget: memory: used 4Gi + requested 4097Mi = 8193Mi exceeds "
        "the limit 8Gi; cores: used 60 + requested 50 = 110 exceeds the limit 100. Ask for less"
    )


def test_a_dimension_the_request_does_not_use_never_refuses() -> None:
    q = parse_gpu_quota(quota(memory="1Gi", cores=10))  # lowered below what is in use
    assert check_request([q], Usage(4 * GI, 50, 1), Usage(0, 5, 0), "x") is not None  # cores: it adds to them
    assert check_request([q], Usage(4 * GI, 50, 1), Usage(0, 0, 0), "x") is None


def test_every_quota_of_the_namespace_applies() -> None:
    loose, tight = parse_gpu_quota(quota("a-loose", gpus=10)), parse_gpu_quota(quota("b-tight", gpus=1))
    refusal = check_request([loose, tight], Usage(gpus=1), Usage(gpus=1), "x")
    assert refusal.quota.name == "b-tight"


def test_check_allocation_for_the_controller() -> None:
    quotas = [quota(memory="8Gi", gpus=2)]
    others = [claim("a", slice_spec("4Gi")), claim("self", slice_spec("4Gi"), uid="uid-self")]
    me = claim("self", slice_spec("4Gi"), uid="uid-self")
    fits = [
        {
            "request": "gpu",
            "driver": DRIVER,
            "pool": "n",
            "device": "hami-gpu-0",
            "shareID": "00000000-0000-4000-8000-000000000001",
            "consumedCapacity": {"memory": "4Gi", "cores": "0"},
        }
    ]
    assert check_allocation(quotas, others, me, fits, T4) is None  # the claim's own estimate is not counted twice
    too_big = [{**fits[0], "consumedCapacity": {"memory": "5Gi", "cores": "0"}}]
    refusal = check_allocation(quotas, others, me, too_big, T4)
    assert refusal is not None and refusal.message.startswith(
        "allocating ResourceClaim ns/self would exceed GpuQuota ns/budget: memory: used 4Gi + requested 5Gi = 9Gi"
    )
    assert check_allocation([], others, me, too_big, T4) is None
