"""Consumable capacity arithmetic, exactly as kube-scheduler's structured allocator does it (KEP 5075).

All amounts are integers (Quantity.Value()); rounding and checks follow
docs/design/consumable-capacity.md#how-the-scheduler-computes-consumption.
"""

from __future__ import annotations

from collections.abc import Mapping

from dra_hami.quantity import format_bytes

from .model import Capacity, Device

SHARES = "shares"


def base_name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def format_amount(key: str, value: int) -> str:
    """Memory in binary form ("4Gi", "1500Mi"), every other key as a plain integer."""
    return format_bytes(value) if base_name(key) == "memory" and value > 0 else str(value)


def _rounded(key: str, capacity: Capacity, requested: int | None) -> tuple[int, str | None]:
    """The amount one allocation consumes of one key, and why the policy rejects it (None: accepted)."""
    policy = capacity.policy
    if requested is None:
        # Unrequested: the default, or the whole value when there is no default.
        if policy is not None and policy.default is not None:
            return policy.default, None
        return capacity.value, None
    if policy is None:
        return requested, None
    if policy.valid_values is not None:
        amount = next((v for v in policy.valid_values if v >= requested), requested)
        if amount != policy.default and amount not in policy.valid_values:
            allowed = ", ".join(format_amount(key, v) for v in policy.valid_values)
            return amount, f"capacity {key}: {format_amount(key, requested)} is not one of the valid values [{allowed}]"
        return amount, None
    if policy.range_min is not None:
        amount = max(requested, policy.range_min)
        step = policy.range_step
        if step:
            amount = policy.range_min + -(-(amount - policy.range_min) // step) * step
        if amount == policy.default:
            return amount, None
        if policy.range_max is not None and amount > policy.range_max:
            return amount, (
                f"capacity {key}: needs {format_amount(key, amount)}, "
                f"more than one allocation may take ({format_amount(key, policy.range_max)})"
            )
        return amount, None
    return requested, None


def consumption(device: Device, requests: Mapping[str, int]) -> tuple[dict[str, int] | None, str | None]:
    """What one allocation of ``device`` for a request with ``requests`` consumes, per capacity key of the device.

    Returns ``(amounts, None)``, or ``(None, reason)`` when the device can never serve the request. The result
    only depends on the device and the request, so callers cache it.
    """
    for key in requests:
        if key not in device.capacity:
            return None, f"capacity {key}: requested, but the device has no such capacity"
    amounts: dict[str, int] = {}
    for key, capacity in device.capacity.items():
        amount, reason = _rounded(key, capacity, requests.get(key))
        if reason is not None:
            return None, reason
        if amount > capacity.value:
            return None, (
                f"capacity {key}: needs {format_amount(key, amount)}, "
                f"the device has {format_amount(key, capacity.value)}"
            )
        amounts[key] = amount
    return amounts, None


def shortfall(
    device: Device, amounts: Mapping[str, int], used: Mapping[str, int], pending: Mapping[str, int] | None
) -> str | None:
    """Why (already used) + (pending in this allocation) + ``amounts`` exceeds a key's value; None when it fits."""
    for key, amount in amounts.items():
        total = device.capacity[key].value
        taken = used.get(key, 0) + (pending.get(key, 0) if pending else 0)
        if taken + amount > total:
            if base_name(key) == SHARES:
                return f"shares exhausted ({taken} of {total} in use)"
            free = max(0, total - taken)
            return f"capacity {key}: needs {format_amount(key, amount)}, {format_amount(key, free)} free"
    return None


def consumed_capacity_field(amounts: Mapping[str, int]) -> dict[str, str]:
    """``consumedCapacity`` of a result: every capacity key of the device, zero values included."""
    return {key: format_amount(key, value) for key, value in sorted(amounts.items())}
