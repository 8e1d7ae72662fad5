"""Read what the node needs from a ResourceClaim (a plain dict from the API server), checking it hard.

Allocations written by a controller are not validated by the API server
(docs/design/observed-1.36.md#what-the-api-server-accepts-in-an-allocation), so every amount is checked here
before it reaches a CDI spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dra_hami import wire
from dra_hami.allocator.errors import ParseError
from dra_hami.allocator.model import AllocatedDevice, parse_result
from dra_hami.api.vgpu_config import ConfigError, VGpuConfig, parse_vgpu_config
from dra_hami.kube import objects as k8s
from dra_hami.quantity import QuantityError, to_int


class ClaimError(ValueError):
    """The claim cannot be prepared on this node; the message is shown to the user in pod events."""


@dataclass(frozen=True)
class Share:
    """One allocation result of our driver: a slice of one GPU (or the whole GPU for admin access)."""

    request: str
    device: str
    share_id: str | None
    memory: int | None  # bytes; None means no memory limit (admin access)
    cores: int  # 0 means no compute cap


@dataclass(frozen=True)
class ClaimAllocation:
    uid: str
    namespace: str
    name: str
    shares: tuple[Share, ...]
    configs: dict[str, VGpuConfig] = field(default_factory=dict)  # effective config per request name


@dataclass(frozen=True)
class NodeDevice:
    """What preparing needs to know about a device this node publishes."""

    name: str
    uuid: str
    minor: int
    pci_bus_id: str
    memory: int  # published memory capacity in bytes
    shares: int = 0  # published share capacity (how many claims may share it); 0: not known, not checked


def read_allocation(
    claim: dict[str, Any],
    expected_uid: str,
    driver: str,
    pool: str,
    devices: dict[str, NodeDevice],
) -> ClaimAllocation:
    meta = k8s.meta(claim)
    ref = f"ResourceClaim {meta.get('namespace')}/{meta.get('name')}"
    if meta.get("uid") != expected_uid:
        raise ClaimError(
            f"{ref}: UID is {meta.get('uid')}, the kubelet asked for {expected_uid} (deleted and re-created?)"
        )
    status = claim.get("status") or {}
    allocation = status.get("allocation")
    if not allocation:
        raise ClaimError(f"{ref}: status.allocation is empty; the claim is not allocated")
    if not status.get("reservedFor"):
        raise ClaimError(f"{ref}: status.reservedFor is empty; the claim is not reserved for a pod")
    results = (allocation.get("devices") or {}).get("results") or []
    shares = []
    for i, result in enumerate(results):
        if not isinstance(result, dict) or result.get("driver") != driver:
            continue
        path = f"status.allocation.devices.results[{i}]"
        try:
            parsed = parse_result(result, ref, path)  # the one reading of a result all components share
        except ParseError as err:
            raise ClaimError(str(err)) from None
        shares.append(_read_share(parsed, result, f"{ref}: {path}", pool, devices))
    if not shares:
        raise ClaimError(f"{ref}: no allocation result of driver {driver}")
    configs = _effective_configs(allocation, driver, {s.request for s in shares}, ref)
    return ClaimAllocation(expected_uid, meta.get("namespace", ""), meta.get("name", ""), tuple(shares), configs)


def _read_share(
    parsed: AllocatedDevice, result: dict[str, Any], where: str, pool: str, devices: dict[str, NodeDevice]
) -> Share:
    """Stricter than the shared reading: the amounts become hard limits, so they must be exact and in range."""
    if parsed.device.pool != pool:
        raise ClaimError(f"{where}.pool: allocated from pool {parsed.device.pool!r}, this node serves {pool!r}")
    name = parsed.device.device
    device = devices.get(name)
    if device is None:
        known = ", ".join(sorted(devices)) or "none"
        raise ClaimError(f"{where}.device: {name!r} is not published by this node (it has {known})")
    request, share_id = parsed.request, parsed.share_id
    if parsed.admin_access:
        return Share(request, name, share_id, memory=None, cores=0)
    # Without a shareID the result holds the whole device (AllocatedDevice.taken), but limits are only
    # enforced as recorded: a result without its amounts is refused rather than guessed.
    consumed = result.get("consumedCapacity")
    if not consumed:
        raise ClaimError(
            f"{where}.consumedCapacity: missing; the allocator must record memory and cores "
            "(is the DRAConsumableCapacity feature gate on?)"
        )
    amounts: dict[str, int] = {}
    for key, value in consumed.items():
        short = key.split("/", 1)[1] if key.startswith(f"{result.get('driver')}/") else key
        if short not in wire.CAPACITY_KEYS:
            raise ClaimError(
                f"{where}.consumedCapacity[{key}]: this driver publishes only {', '.join(wire.CAPACITY_KEYS)}"
            )
        try:
            amounts[short] = to_int(value, f"{where}.consumedCapacity[{key}]")
        except QuantityError as err:
            raise ClaimError(str(err)) from None
        if amounts[short] < 0:
            raise ClaimError(f"{where}.consumedCapacity[{key}]: {value} is negative")
    if wire.CAPACITY_MEMORY not in amounts:
        raise ClaimError(f"{where}.consumedCapacity: has no {wire.CAPACITY_MEMORY!r} entry")
    memory = amounts[wire.CAPACITY_MEMORY]
    if memory == 0 or memory > device.memory:
        raise ClaimError(f"{where}.consumedCapacity[memory]: {memory} bytes is outside 1..{device.memory} of {name}")
    cores = amounts.get(wire.CAPACITY_CORES, 0)
    if cores > wire.CORES_TOTAL:
        raise ClaimError(f"{where}.consumedCapacity[cores]: {cores} is above {wire.CORES_TOTAL}")
    return Share(request, name, share_id, memory, cores)


def _effective_configs(allocation: dict[str, Any], driver: str, requests: set[str], ref: str) -> dict[str, VGpuConfig]:
    """Merge opaque configs per request in API order (class configs first, then the claim's); fields a class
    config pins keep the class's value (the admin's word wins even when the webhook did not refuse the claim)."""
    effective: dict[str, VGpuConfig] = {}
    for i, entry in enumerate((allocation.get("devices") or {}).get("config") or []):
        opaque = entry.get("opaque") or {}
        if opaque.get("driver") != driver:
            continue
        try:
            config = parse_vgpu_config(opaque.get("parameters"), f"{ref}: config[{i}].opaque.parameters")
        except ConfigError as err:
            raise ClaimError(str(err)) from None
        if config.pinned and entry.get("source") != "FromClass":
            raise ClaimError(f"{ref}: config[{i}].opaque.parameters.pinned: only a DeviceClass's config may pin "
                             "fields; remove it from the claim")  # fmt: skip
        targets = set(entry.get("requests") or ())
        for request in requests:
            # A config for "gpu" also covers the subrequest "gpu/small" chosen from firstAvailable.
            if not targets or request in targets or request.split("/", 1)[0] in targets:
                effective[request] = config.merged_over(effective.get(request))
    return effective
