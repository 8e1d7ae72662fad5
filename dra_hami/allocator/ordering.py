"""Orderings shared by the policies and the state's cached node order: the deterministic tie-breaks live here."""

from __future__ import annotations

import re

BINPACK = "binpack"
SPREAD = "spread"
FIRST_FIT = "first-fit"

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """hami-gpu-2 before hami-gpu-10."""
    return tuple(int(part) if part.isdigit() else part for part in _DIGITS.split(name))


def node_order_key(policy: str, name: str, utilisation: float) -> tuple:
    """Lower sorts first. binpack: most GPU capacity already allocated first; spread: least first; then name."""
    if policy == BINPACK:
        return (-utilisation, name)
    if policy == SPREAD:
        return (utilisation, name)
    return (name,)
