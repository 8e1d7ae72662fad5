"""Is a stored slice what we would publish? Compared by meaning, not by text (pure).

The API server rewrites quantities (``15360Mi`` comes back as ``15Gi``) and may leave out empty fields; a
textual comparison would rewrite the slice, and bump the pool generation, on every pass.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from dra_hami.kube import objects as k8s
from dra_hami.quantity import QuantityError, to_decimal


def same_content(desired: dict[str, Any], stored: dict[str, Any]) -> bool:
    """Equal specs ignoring the pool generation, our labels present, our owner references present."""
    want_spec = _canonical_spec(desired.get("spec") or {})
    if want_spec != _only_our_fields(want_spec, _canonical_spec(stored.get("spec") or {})):
        return False
    want, have = k8s.meta(desired), k8s.meta(stored)
    labels = have.get("labels") or {}
    if any(labels.get(key) != value for key, value in (want.get("labels") or {}).items()):
        return False
    owners = {_owner_key(ref) for ref in have.get("ownerReferences") or []}
    return all(_owner_key(ref) in owners for ref in want.get("ownerReferences") or [])


def _canonical_spec(spec: dict[str, Any]) -> Any:
    spec = dict(spec)
    pool = dict(spec.get("pool") or {})
    pool.pop("generation", None)
    spec["pool"] = pool
    spec["devices"] = [_canonical_device(device) for device in spec.get("devices") or []]
    return _prune(spec)


def _canonical_device(device: dict[str, Any]) -> dict[str, Any]:
    device = dict(device)
    device["capacity"] = {key: _canonical_capacity(entry) for key, entry in (device.get("capacity") or {}).items()}
    return device


def _canonical_capacity(entry: dict[str, Any]) -> dict[str, Any]:
    entry = dict(entry)
    entry["value"] = _number(entry.get("value"))
    policy = dict(entry.get("requestPolicy") or {})
    if policy:
        policy["default"] = _number(policy.get("default"))
        if policy.get("validValues") is not None:
            policy["validValues"] = [_number(value) for value in policy["validValues"]]
        if policy.get("validRange") is not None:
            policy["validRange"] = {key: _number(value) for key, value in policy["validRange"].items()}
        entry["requestPolicy"] = policy
    return entry


def _number(value: Any) -> Any:
    if value is None:
        return None
    try:
        return to_decimal(value, "quantity")
    except QuantityError:
        return value  # compared as given: different text means different content


def _prune(value: Any) -> Any:
    """Drop None and empty containers: the server omits what we sent empty, and vice versa."""
    if isinstance(value, dict):
        pruned = {key: _prune(item) for key, item in value.items()}
        return {key: item for key, item in pruned.items() if item is not None and item != {} and item != []}
    if isinstance(value, list):
        return [_prune(item) for item in value]
    if isinstance(value, Decimal):
        return value.normalize()
    return value


def _only_our_fields(want: dict[str, Any], have: dict[str, Any]) -> dict[str, Any]:
    """``have`` without fields we never set (a newer API server may default new ones); devices and their
    attribute and capacity maps are ours whole, so an entry we dropped still counts as a difference.
    Taints are ours even when we want none: a taint left on a recovered GPU must be removed."""
    projected = {key: value for key, value in have.items() if key in want}
    if "devices" in projected and len(want.get("devices") or []) == len(projected["devices"]):
        projected["devices"] = [
            {key: value for key, value in device.items() if key in wanted or key == "taints"}
            for wanted, device in zip(want["devices"], projected["devices"], strict=True)
        ]
    return projected


def _owner_key(ref: k8s.OwnerReference) -> tuple[Any, ...]:
    return ref.get("kind"), ref.get("name"), ref.get("uid")
