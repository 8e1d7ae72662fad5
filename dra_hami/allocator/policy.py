"""The interface of a GPU-level placement policy, and the default it starts from (greedy first fit).

The allocator (``allocate.py``) walks the candidate nodes in node-policy order and, per node, searches device
sets; a ``GpuPolicy`` decides everything policy-specific on the way:

* ``device_order_key``: the order in which a node's devices are tried;
* ``device_groups`` and ``solutions_per_group``: which device subsets the search tries, and how many sets it
  takes from each (the candidates per node);
* ``set_effect``: sets with equal effects are scored once;
* ``describe``: what the policy keeps about a node shape's sets, computed once per shape and usage;
* ``node_score``: the best set on a node and its score (higher wins; the earlier node wins ties);
* ``stop_early``: whether no later node can beat the best found so far;
* ``score_epoch``: when node scores may be kept between pods (only changed nodes re-scored).

The default is greedy: one set per node, and the first node that fits wins. ``for_pod`` gives the policy as
it applies to one pod (a variant, or an object holding per-pod state).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .model import Device, DeviceKey
from .nodes import Node, Pod
from .ordering import SortKey
from .search import Solution
from .search_cache import Outcome, SearchCache

if TYPE_CHECKING:
    from .state import ClusterState


@dataclass(frozen=True, slots=True)
class PodSearch:
    """What a GPU policy may read while one pod is being placed."""

    state: ClusterState
    pod: Pod
    cache: SearchCache
    several_devices: bool  # the pod's pending requests take more than one device in all


class GpuPolicy(ABC):
    name: str = ""
    solutions_per_group: int = 1

    def for_pod(self, search: PodSearch) -> GpuPolicy:
        return self

    @property
    def cache_key(self) -> object:
        """Outcomes are cached per request signature and this key: variants that search differently differ."""
        return self.name

    @abstractmethod
    def device_order_key(self, device: Device, utilisation: float) -> SortKey:
        """Lower is tried first within a node; every policy orders devices its own way."""

    def device_groups(self, devices: Sequence[Device]) -> Sequence[frozenset[DeviceKey] | None]:
        """Device subsets to search, in order (None: all devices)."""
        return (None,)

    def set_effect(self, state: ClusterState, solution: Solution) -> SortKey:
        """Devices used alike, given the same amounts, make the same set."""
        return tuple((state.gpu_state(p.device), state.utilisation(p.device), _frozen(p.amounts)) for p in solution)

    def describe(  # noqa: B027 - an optional hook: greedy policies need nothing from it
        self, state: ClusterState, devices: Sequence[Device], kept: Sequence[Solution], outcome: Outcome
    ) -> None:
        """Fill in what ``node_score`` needs of a node shape (outcome.score/best/memo); nothing for greedy."""

    def node_score(self, node: Node, outcome: Outcome) -> tuple[SortKey, int]:
        """(score, index of the chosen set) on ``node``."""
        return outcome.score, outcome.best

    def stop_early(self, score: SortKey, feasible: int) -> bool:
        """Whether to stop scanning nodes after ``feasible`` feasible ones, the last scoring ``score``."""
        return True

    def score_epoch(self) -> object | None:
        """For a policy that scores every feasible node (``stop_early`` never true) and whose ``node_score``
        depends only on the node's outcome and free CPU (``ClusterState.cpu_free``), the pod's requests and
        resources, and this object: an object that is replaced (a new identity) whenever anything else
        ``node_score`` reads changes (e.g. the learnt demand). The allocator then keeps each node's score
        between pods with the same requests and re-scores only the nodes changed since, as long as the epoch
        is the same object; the choice is the one a full scan would make. None (the default): every pod
        scans every node."""
        return None


def packing_score(state: ClusterState, solution: Solution) -> float:
    """Tie-break among equally scored sets: prefer devices already in use (keeps whole GPUs free)."""
    return sum(state.utilisation(pick.device) for pick in solution)


def _frozen(amounts: Mapping[str, int] | None) -> tuple[tuple[str, int], ...] | None:
    return None if amounts is None else tuple(sorted(amounts.items()))
