"""How much of a GpuQuota one ResourceClaim (or one claim a template would create) uses.

An allocated claim counts what its allocation takes, by the rule every reader of allocation results shares
(``AllocatedDevice.taken``): one GPU per result of our driver; a result with a shareID its consumedCapacity, one
without a shareID the whole device (its published memory and all cores; the largest published GPU when the
device is not published), an adminAccess result nothing. A claim that is not allocated yet counts what it asks
for: ``count`` x the requested memory (rounded up to the 1Mi step, as the scheduler does) and cores. Where the
claim leaves a number open the estimate takes the worst case, so admission never lets a namespace overrun its
budget once the claim is allocated: no memory request = the whole card (the largest published GPU),
``allocationMode: All`` = every published GPU, ``firstAvailable`` = the per-dimension maximum of its
alternatives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dra_hami import wire
from dra_hami.allocator.errors import ParseError
from dra_hami.allocator.model import (
    ALLOCATION_MODE_ALL,
    AllocatedDevice,
    DeviceKey,
    ExactRequest,
    claim_results,
    parse_claim,
    parse_result,
)
from dra_hami.kube import objects as k8s
from dra_hami.quantity import QuantityError, to_int
from dra_hami.quota.model import QuotaError, Usage


@dataclass(frozen=True)
class Accounting:
    """What turning requests into usage needs to know about the cluster."""

    driver: str = wire.DEFAULT_DRIVER_NAME
    classes: frozenset[str] = field(default_factory=frozenset)  # DeviceClasses that hand out our GPUs
    largest_memory: int = 0  # bytes of the largest published GPU: what a request without memory takes
    gpu_count: int = 0  # published GPUs: what allocationMode All takes
    device_memory: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (pool, device) -> bytes

    def __post_init__(self) -> None:
        if not self.classes:
            object.__setattr__(self, "classes", frozenset({self.driver}))

    @classmethod
    def from_slices(cls, driver: str, slices: Iterable[dict[str, Any]], classes: Iterable[str] = ()) -> Accounting:
        largest, count, memories = 0, 0, {}
        for slice_ in slices:
            spec = slice_.get("spec") or {}
            if spec.get("driver") != driver:
                continue
            pool = (spec.get("pool") or {}).get("name") or ""
            for device in spec.get("devices") or []:
                count += 1
                memory = ((device.get("capacity") or {}).get(wire.CAPACITY_MEMORY) or {}).get("value")
                if memory is not None:
                    try:
                        value = to_int(memory, "capacity.memory")
                    except QuantityError:
                        continue
                    largest = max(largest, value)
                    memories[(pool, device.get("name") or "")] = value
        return cls(driver=driver, classes=frozenset(classes) or frozenset({driver}), largest_memory=largest,
                   gpu_count=count, device_memory=memories)  # fmt: skip

    def whole_device(self, device: DeviceKey) -> dict[str, int]:
        """The capacity a result without a shareID takes: the device's memory (the largest GPU's when it is
        not published) and all its cores."""
        memory = self.device_memory.get((device.pool, device.device), self.largest_memory)
        return {wire.CAPACITY_MEMORY: memory, wire.CAPACITY_CORES: wire.CORES_TOTAL}


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def _exact_usage(request: ExactRequest, acct: Accounting) -> Usage:
    if request.class_name not in acct.classes or request.admin_access:
        return Usage()  # other drivers' devices; adminAccess results do not consume (as in the scheduler)
    count = acct.gpu_count if request.allocation_mode == ALLOCATION_MODE_ALL else request.count
    memory = request.capacity_requests.get(wire.CAPACITY_MEMORY)
    memory = acct.largest_memory if memory is None else _round_up(max(memory, wire.MEMORY_STEP), wire.MEMORY_STEP)
    cores = request.capacity_requests.get(wire.CAPACITY_CORES, 0)
    return Usage(memory=memory, cores=cores, gpus=1) * count


def spec_usage(claim_spec: dict[str, Any], acct: Accounting, label: str = "ResourceClaim") -> Usage:
    """What a claim spec asks for (``spec`` of a ResourceClaim, ``spec.spec`` of a template)."""
    try:
        claim = parse_claim({"metadata": {"name": label}, "spec": claim_spec})
    except ParseError as err:
        raise QuotaError(str(err)) from None
    total = Usage()
    for request in claim.requests:
        worst = Usage()
        for alternative in request.alternatives:
            worst = worst.max(_exact_usage(alternative, acct))
        total = total + worst
    return total


def results_usage(results: Iterable[AllocatedDevice], acct: Accounting) -> Usage:
    """What allocation results of our driver take (see the module doc for the rule)."""
    total = Usage()
    for result in results:
        if result.device.driver != acct.driver or result.admin_access:
            continue
        capacity = acct.whole_device(result.device) if result.whole_device else None
        memory = result.amount(wire.CAPACITY_MEMORY, capacity)
        cores = result.amount(wire.CAPACITY_CORES, capacity)
        total = total + Usage(memory=memory, cores=cores, gpus=1)
    return total


def allocation_usage(results: Iterable[dict[str, Any]], acct: Accounting) -> Usage:
    """What allocation results (the controller is about to write, or has written) of our driver take."""
    try:
        parsed = [
            parse_result(r, "allocation", f"results[{i}]")
            for i, r in enumerate(results)
            if not isinstance(r, dict) or r.get("driver") == acct.driver
        ]
    except ParseError as err:
        raise QuotaError(str(err)) from None
    return results_usage(parsed, acct)


def claim_usage(claim: dict[str, Any], acct: Accounting) -> Usage:
    if k8s.allocation(claim):
        try:
            return results_usage(claim_results(claim, acct.driver), acct)
        except ParseError as err:
            raise QuotaError(str(err)) from None
    meta = k8s.meta(claim)
    return spec_usage(claim.get("spec") or {}, acct, f"{meta.get('namespace')}/{meta.get('name')}")


def namespace_usage(claims: Iterable[dict[str, Any]], acct: Accounting, exclude_uid: str = "") -> Usage:
    """Sum over the claims of one namespace; claims being deleted still hold their devices and count."""
    total = Usage()
    for claim in claims:
        if exclude_uid and k8s.meta(claim).get("uid") == exclude_uid:
            continue
        try:
            total = total + claim_usage(claim, acct)
        except QuotaError:
            continue  # the API server validated it; a claim we cannot read must not block every other one
    return total
