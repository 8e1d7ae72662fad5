"""Kubernetes resource quantities as exact integers (parsing delegated to the official client)."""

from __future__ import annotations

from decimal import Decimal

from kubernetes.utils import parse_quantity

_BINARY = (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10))


class QuantityError(ValueError):
    pass


def to_int(value: str | int, what: str) -> int:
    """Parse a quantity that must be a whole number (bytes, cores, shares); ``what`` names the field."""
    try:
        parsed = parse_quantity(value)
    except (ValueError, TypeError) as err:
        raise QuantityError(f"{what}: {value!r} is not a Kubernetes quantity") from err
    if parsed != parsed.to_integral_value():
        raise QuantityError(f"{what}: {value!r} is not a whole number")
    return int(parsed)


def to_decimal(value: str | int, what: str) -> Decimal:
    try:
        return parse_quantity(value)
    except (ValueError, TypeError) as err:
        raise QuantityError(f"{what}: {value!r} is not a Kubernetes quantity") from err


def format_bytes(value: int) -> str:
    """Shortest exact binary form, e.g. 4294967296 -> '4Gi', 1500 MiB -> '1500Mi'."""
    for suffix, unit in _BINARY:
        if value and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)
