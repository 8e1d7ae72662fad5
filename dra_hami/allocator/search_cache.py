"""The allocator's memo of per-node search results, one per ``ClusterState``, owned by the allocator alone.

A node's search result depends on the pod's requests, the GPU policy, the node's static devices and how they
are used. Nodes whose devices the requests cannot tell apart get one *static shape id*; together with the
state's usage id of the node (``ClusterState.node_usage_id``) it names an ``Outcome`` that every node of that
shape shares. Keys change whenever usage changes, so nothing here is ever invalidated: entries are only
dropped to bound memory. The state's devices never change (a new state is built when slices do), which is why
the memo lives exactly as long as its state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from .fragmentation import DemandSnapshot, FragmentationScorer
from .ordering import Signature, SortKey

if TYPE_CHECKING:
    from .state import ClusterState

MAX_CACHED_SHAPES = 200_000  # outcomes per request signature and policy
MAX_CACHED_SIGNATURES = 1000  # request signatures (e.g. many claims with their own selectors)
MAX_CACHED_SCANS = 512  # kinds of pods whose per-node scores are kept (NodeScores)
# Node entries over all kept NodeScores (each ~3 dict items): about 100 MB at most. The openb replay keeps
# 151 kinds x 1,213 nodes; a large cluster with many pod sizes keeps fewer kinds rather than more memory.
MAX_CACHED_NODE_ENTRIES = 300_000

OutlinePick = tuple[int, int, int, Mapping[str, int] | None]  # slot, alternative, device position, amounts
Outline = tuple[OutlinePick, ...]


@dataclass(slots=True)
class Outcome:
    """What the search finds on a node of one shape, for one request signature and GPU policy.

    Device positions index ``ClusterState.devices_on(node)``: any node of the same shape has the same outcome,
    with its own devices at those positions.
    """

    reason: str | None = None  # why no set of devices fits (claim markers stand for the claims' names)
    solutions: tuple[Outline, ...] = ()
    packing: tuple[float, ...] = ()  # per solution: tie-break, devices already in use preferred
    score: SortKey = ()  # the best solution's score, for policies whose score depends on the shape only
    best: int = 0  # index of that solution
    memo: Any = None  # what the GPU policy keeps about this shape (GpuPolicy.describe)


@dataclass(slots=True)
class NodeScores:
    """Every feasible node's outcome and score for one kind of pod (``GpuPolicy.score_epoch``), as of ``mark``."""

    epoch: object  # the policy's score epoch ``scores`` were computed in (compared with ``is``)
    mark: int  # ``ClusterState.change_mark()`` when feasibility and scores were last brought up to date
    passing: frozenset[str]  # nodes that pass the pod's static filter
    feasible: dict[str, tuple[Outcome, int | None]]  # node that can take the pod -> (its outcome, its free CPU)
    scores: dict[str, SortKey]  # feasible node -> its score
    indices: dict[str, int]  # feasible node -> index of its best set in the outcome


class SearchCache:
    def __init__(self) -> None:
        self._static_ids: dict[Signature, dict[str, int]] = {}  # request signature -> node -> static shape id
        self._shape_ids: dict[Signature, int] = {}  # static fingerprint -> id
        self._outcomes: dict[Signature, dict[tuple[int, int], Outcome]] = {}  # (signature, policy) -> shape -> outcome
        self._scorer: FragmentationScorer | None = None
        self._node_scores: dict[Signature, NodeScores] = {}
        self._node_entries = 0  # nodes passing the filters, summed over _node_scores

    def share_static_shapes(self, other: SearchCache) -> None:
        """Use (and fill) ``other``'s static shape ids. Only for states over the very same devices, device
        classes and selector results (a simulation's fresh states over one parsed cluster): static ids depend
        on nothing else, so later replays skip fingerprinting every node again."""
        self._static_ids = other._static_ids
        self._shape_ids = other._shape_ids

    def node_scores(self, key: Signature) -> NodeScores | None:
        """The scores kept for pods of ``key`` (requests, policies and the pod's filters and resources)."""
        return self._node_scores.get(key)

    def keep_node_scores(self, key: Signature, scores: NodeScores) -> None:
        entries = len(scores.passing)
        if key not in self._node_scores and (
            len(self._node_scores) >= MAX_CACHED_SCANS or self._node_entries + entries > MAX_CACHED_NODE_ENTRIES
        ):
            self._node_scores.clear()  # bound memory: each holds up to one entry per node
            self._node_entries = 0
        old = self._node_scores.get(key)
        self._node_entries += entries - (len(old.passing) if old is not None else 0)
        self._node_scores[key] = scores

    def for_requests(
        self, signature: Signature, policy_key: object
    ) -> tuple[dict[str, int], dict[tuple[int, int], Outcome]]:
        """(node -> static shape id, (static id, usage id) -> outcome) for one request signature and GPU policy."""
        if len(self._static_ids) > MAX_CACHED_SIGNATURES:
            self._static_ids.clear()
            self._outcomes.clear()
        static_ids = self._static_ids.setdefault(signature, {})
        key = (signature, policy_key)
        outcomes = self._outcomes.get(key)
        if outcomes is None or len(outcomes) > MAX_CACHED_SHAPES:
            outcomes = self._outcomes[key] = {}
        return static_ids, outcomes

    def shape_id(self, fingerprint: Signature) -> int:
        """The id of a static fingerprint: equal fingerprints, equal ids."""
        shape_id = self._shape_ids.get(fingerprint)
        if shape_id is None:
            shape_id = self._shape_ids[fingerprint] = len(self._shape_ids)
        return shape_id

    def scorer(self, snapshot: DemandSnapshot) -> FragmentationScorer:
        """One fragmentation scorer per demand snapshot, so per-GPU profiles stay cached across pods."""
        if self._scorer is None or self._scorer.snapshot is not snapshot:
            self._scorer = FragmentationScorer(snapshot)
        return self._scorer

    def static_ids(self) -> dict[Signature, dict[str, int]]:
        """Request signature -> node -> static shape id (for tests and debugging)."""
        return self._static_ids


_CACHES: WeakKeyDictionary[ClusterState, SearchCache] = WeakKeyDictionary()


def search_cache(state: ClusterState) -> SearchCache:
    """The memo of ``state``, made on first use and dropped with the state."""
    cache = _CACHES.get(state)
    if cache is None:
        cache = _CACHES[state] = SearchCache()
    return cache
