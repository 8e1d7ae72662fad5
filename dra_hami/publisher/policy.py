"""Checks on our own devices before they are published (pure).

The 1.36 API server panics on a request policy with step 0 and accepts negative min/step
(docs/design/observed-1.36.md#slices), and a rejected slice means a node with no GPUs at all. So every rule
the server enforces, and the ones it should, are checked here first, with messages naming the device.
"""

from __future__ import annotations

import re
from decimal import Decimal
from itertools import pairwise
from typing import Any

from dra_hami.quantity import QuantityError, to_decimal

MAX_ATTRIBUTES_AND_CAPACITIES = 32
MAX_STRING = 64
MAX_VALID_VALUES = 10
_QUALIFIED = re.compile(
    r"^(?:[a-z0-9]([-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z_][A-Za-z0-9_]{0,31}$"
)
# semver.org 2.0.0, the form the API server parses version attributes with.
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_ATTRIBUTE_TYPES = ("int", "bool", "string", "version")


class PolicyError(ValueError):
    """A device we were about to publish breaks a resource.k8s.io/v1 rule."""


def is_semver(text: str) -> bool:
    return bool(_SEMVER.match(text)) and len(text) <= MAX_STRING


def check_device(device: dict[str, Any]) -> None:
    where = f"device {device.get('name')!r}"
    attributes = device.get("attributes") or {}
    capacity = device.get("capacity") or {}
    if len(attributes) + len(capacity) > MAX_ATTRIBUTES_AND_CAPACITIES:
        raise PolicyError(f"{where}: more than {MAX_ATTRIBUTES_AND_CAPACITIES} attributes and capacities")
    for key, attribute in attributes.items():
        _check_name(where, "attribute", key)
        _check_attribute(f"{where} attribute {key}", attribute)
    for key, entry in capacity.items():
        _check_name(where, "capacity", key)
        check_capacity(f"{where} capacity {key}", entry, bool(device.get("allowMultipleAllocations")))


def check_capacity(where: str, capacity: dict[str, Any], allow_multiple: bool) -> None:
    value = _quantity(where, "value", capacity.get("value"))
    if value < 0:
        raise PolicyError(f"{where}: value {value} is negative")
    policy = capacity.get("requestPolicy")
    if policy is None:
        return
    if not allow_multiple:
        raise PolicyError(f"{where}: a requestPolicy needs allowMultipleAllocations: true")
    if "default" not in policy:
        raise PolicyError(f"{where}: requestPolicy.default is required")
    default = _quantity(where, "requestPolicy.default", policy["default"])
    valid_values, valid_range = policy.get("validValues"), policy.get("validRange")
    if (valid_values is None) == (valid_range is None):
        raise PolicyError(f"{where}: requestPolicy needs exactly one of validValues and validRange")
    if valid_values is not None:
        _check_valid_values(where, valid_values, default, value)
    else:
        _check_valid_range(where, valid_range, default, value)


def _check_valid_values(where: str, raw: list[Any], default: Decimal, value: Decimal) -> None:
    values = [_quantity(where, f"validValues[{i}]", item) for i, item in enumerate(raw)]
    if not values or len(values) > MAX_VALID_VALUES:
        raise PolicyError(f"{where}: validValues needs 1 to {MAX_VALID_VALUES} entries")
    if any(b <= a for a, b in pairwise(values)):
        raise PolicyError(f"{where}: validValues must be strictly ascending")
    if values[0] < 0 or values[-1] > value:
        raise PolicyError(f"{where}: validValues must lie in [0, {value}]")
    if default not in values:
        raise PolicyError(f"{where}: default {default} is not one of validValues")


def _check_valid_range(where: str, raw: dict[str, Any], default: Decimal, value: Decimal) -> None:
    if "min" not in raw:
        raise PolicyError(f"{where}: validRange.min is required")
    low = _quantity(where, "validRange.min", raw["min"])
    high = _quantity(where, "validRange.max", raw["max"]) if "max" in raw else value
    step = _quantity(where, "validRange.step", raw["step"]) if "step" in raw else None
    if low < 0:
        raise PolicyError(f"{where}: validRange.min {low} is negative")
    if not low <= default <= high <= value:
        raise PolicyError(f"{where}: need min {low} <= default {default} <= max {high} <= value {value}")
    if step is None:
        return
    if step <= 0:  # the API server divides by it
        raise PolicyError(f"{where}: validRange.step {step} must be positive")
    if low + step > value:
        raise PolicyError(f"{where}: min {low} + step {step} exceeds value {value}")
    for name, point in (("max", high), ("default", default)):
        if (point - low) % step:
            raise PolicyError(f"{where}: {name} {point} is not min {low} plus a multiple of step {step}")


def _check_attribute(where: str, attribute: dict[str, Any]) -> None:
    kinds = [kind for kind in _ATTRIBUTE_TYPES if attribute.get(kind) is not None]
    if len(kinds) != 1 or len(attribute) != 1:
        raise PolicyError(f"{where}: needs exactly one of {', '.join(_ATTRIBUTE_TYPES)}")
    kind, content = kinds[0], attribute[kinds[0]]
    expected = {"int": int, "bool": bool, "string": str, "version": str}[kind]
    if not isinstance(content, expected) or (kind == "int" and isinstance(content, bool)):
        raise PolicyError(f"{where}: {kind} value {content!r} has the wrong type")
    if kind == "string" and isinstance(content, str) and len(content) > MAX_STRING:
        raise PolicyError(f"{where}: string longer than {MAX_STRING} characters")
    if kind == "version" and isinstance(content, str) and not is_semver(content):
        raise PolicyError(f"{where}: {content!r} is not a semver 2.0.0 version")


def _check_name(where: str, what: str, key: str) -> None:
    if not _QUALIFIED.match(key):
        raise PolicyError(f"{where}: {what} name {key!r} is not a C identifier, optionally with a domain")


def _quantity(where: str, field: str, raw: Any) -> Decimal:
    if raw is None:
        raise PolicyError(f"{where}: {field} is required")
    try:
        return to_decimal(raw, f"{where} {field}")
    except QuantityError as err:
        raise PolicyError(str(err)) from None
