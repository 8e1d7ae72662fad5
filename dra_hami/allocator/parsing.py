"""Small helpers shared by the parsers: typed field access with errors that name object and field."""

from __future__ import annotations

import functools
import json
from typing import Any

from dra_hami.kube import objects as k8s
from dra_hami.quantity import QuantityError, ceil_int, ceil_milli

from .errors import ParseError


def object_label(kind: str, obj: dict[str, Any]) -> str:
    """``ResourceClaim default/c1`` or ``Node node-a``: how error messages name an object."""
    meta = k8s.meta(obj)
    name = meta.get("name") or "<unnamed>"
    namespace = meta.get("namespace")
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def fail(label: str, path: str, message: str) -> ParseError:
    return ParseError(f"{label}: {path}: {message}")


# Parsed quantity texts: the controller parses every claim on every event about it, and the same few texts
# ("8Gi", "10") recur; the exact parser costs about 10 us each. lru_cache keeps only successful parses.
@functools.lru_cache(maxsize=4096)
def _ceil_int_text(text: str) -> int:
    return ceil_int(text, "quantity")


@functools.lru_cache(maxsize=4096)
def _ceil_milli_text(text: str) -> int:
    return ceil_milli(text, "quantity")


def quantity(value: Any, label: str, path: str) -> int:
    """A quantity as an exact integer (bytes, cores, shares); fractions round up like Quantity.Value()."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise fail(label, path, f"{json.dumps(value)} is not a quantity")
    try:
        return _ceil_int_text(value) if isinstance(value, str) else ceil_int(value, "quantity")
    except QuantityError as err:
        raise fail(label, path, _reason(err)) from None


def milli_quantity(value: Any, label: str, path: str) -> int:
    """A quantity in thousandths (cpu), rounded up like Quantity.MilliValue()."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise fail(label, path, f"{json.dumps(value)} is not a quantity")
    try:
        return _ceil_milli_text(value) if isinstance(value, str) else ceil_milli(value, "quantity")
    except QuantityError as err:
        raise fail(label, path, _reason(err)) from None


def _reason(err: QuantityError) -> str:
    """The parser's message without its own field prefix (``fail`` names object and path)."""
    return str(err).removeprefix("quantity: ")


def mapping(value: Any, label: str, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(label, path, f"expected an object, got {type(value).__name__}")
    return value


def sequence(value: Any, label: str, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(label, path, f"expected a list, got {type(value).__name__}")
    return value


def string(value: Any, label: str, path: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise fail(
            label, path, "required string missing" if value in (None, "") else f"{json.dumps(value)} is not a string"
        )
    return value


def integer(value: Any, label: str, path: str, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(label, path, f"{json.dumps(value)} is not an integer")
    return value


def boolean(value: Any, label: str, path: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise fail(label, path, f"{json.dumps(value)} is not a boolean")
    return value
