"""Node-level policies (the order in which nodes are tried) and the deterministic tie-breaks of every ordering."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any

BINPACK = "binpack"
SPREAD = "spread"
FIRST_FIT = "first-fit"

_DIGITS = re.compile(r"(\d+)")

# A sort key (lower sorts first). Each policy chooses its own shape, so all they share is "a tuple".
SortKey = tuple[Any, ...]
# A hashable summary of a request, pod or node shape: the key of the allocator's caches.
Signature = tuple[Hashable, ...]


def natural_key(name: str) -> tuple[int | str, ...]:
    """hami-gpu-2 before hami-gpu-10."""
    return tuple(int(part) if part.isdigit() else part for part in _DIGITS.split(name))


class NodePolicy(ABC):
    """Which node to try first. ``ClusterState.in_policy_order`` keeps the nodes sorted by ``order_key``
    incrementally (per policy name), so the key must depend only on the node's name and mean GPU utilisation.
    """

    name: str = ""

    @abstractmethod
    def order_key(self, node_name: str, utilisation: float) -> SortKey:
        """Lower sorts first; the key ends with the node name, the deterministic tie-break."""


class BinpackNodes(NodePolicy):
    """Most GPU capacity already allocated first: fills nodes before opening new ones."""

    name = BINPACK

    def order_key(self, node_name: str, utilisation: float) -> SortKey:
        return (-utilisation, node_name)


class SpreadNodes(NodePolicy):
    """Least GPU capacity allocated first: spreads pods over the nodes."""

    name = SPREAD

    def order_key(self, node_name: str, utilisation: float) -> SortKey:
        return (utilisation, node_name)


class FirstFitNodes(NodePolicy):
    """By name only, like the stock scheduler's stable order."""

    name = FIRST_FIT

    def order_key(self, node_name: str, utilisation: float) -> SortKey:
        return (node_name,)
