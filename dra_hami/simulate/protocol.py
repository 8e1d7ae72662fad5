"""The FGD (ATC'23) artifact's replay protocol, run through our allocator (pure apart from the clock).

Per seed: the trace's pods, sorted by name, are shuffled with ``random.Random(seed)``; then pods drawn uniformly
with replacement from the trace (same generator) are appended until the requested GPU-milli reaches
``inflation`` (1.3) x the cluster's GPU capacity. Pods arrive one at a time and never leave; a pod that fits
nowhere is skipped. After every pod the (arrived, allocated) GPU-milli pair is sampled.

Metric (the artifact's): GPU allocation ratio = allocated GPU-milli / capacity, as a function of the arrived
workload = requested GPU-milli of every pod offered so far (skipped ones included) / capacity. The value "at X%"
is the mean allocation over the samples whose arrived % rounds to X (the artifact's integer bins); when no
sample falls in the bin (tiny traces), the allocation of the last sample at or below X%.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dra_hami.allocator import ClusterState, Placement, PolicyChoice, allocate_pod
from dra_hami.allocator.ordering import BINPACK, FIRST_FIT, SPREAD
from dra_hami.allocator.policies import FRAGMENTATION, TOPOLOGY
from dra_hami.allocator.search_cache import SearchCache, search_cache

from .cluster import DRIVER, SELECTORS, memory_by_model, parse_cluster, pod_shapes, shape_key
from .selectors import FastSelectors, class_selector, product_selector
from .trace import TraceNode, TracePod, gpu_capacity_milli

DEFAULT_SEEDS = tuple(range(42, 52))
INFLATION = 1.3
REPORT_POINTS = (100, 130)

# CLI policy name -> (node policy, GPU policy). Any "NODE/GPU" pair of the allocator's policies works too.
POLICIES: dict[str, PolicyChoice] = {
    "binpack": PolicyChoice(BINPACK, BINPACK),
    "spread": PolicyChoice(SPREAD, SPREAD),
    "first-fit": PolicyChoice(FIRST_FIT, FIRST_FIT),
    "topology": PolicyChoice(BINPACK, TOPOLOGY),
    "fragmentation": PolicyChoice(BINPACK, FRAGMENTATION),
}


class ProtocolError(ValueError):
    """Bad arguments to the protocol (policy name, seeds)."""


def policy_choice(name: str) -> PolicyChoice:
    if name in POLICIES:
        return POLICIES[name]
    if "/" in name:
        node, gpu = name.split("/", 1)
        try:
            return PolicyChoice(node, gpu)
        except ValueError as err:
            raise ProtocolError(f"policy {name!r}: {err}") from None
    valid = ", ".join([*POLICIES, "all"])
    raise ProtocolError(f"unknown policy {name!r}; valid: {valid} (or NODE/GPU, e.g. spread/binpack)")


def policy_names(spec: str) -> list[str]:
    """``all``, one name, or a comma-separated list."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ProtocolError("no policy given")
    out: list[str] = []
    for name in names:
        for n in POLICIES if name == "all" else [name]:
            policy_choice(n)
            if n not in out:
                out.append(n)
    return out


def parse_seeds(spec: str) -> list[int]:
    """``42..51`` (inclusive), ``42,43,50``, ``42`` or a mix: ``1..3,7``."""
    seeds: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            raise ProtocolError(f"seeds {spec!r}: empty item")
        low_text, dots, high_text = part.partition("..")
        try:
            low = int(low_text)
            high = int(high_text) if dots else low
        except ValueError:
            raise ProtocolError(f"seeds {spec!r}: {part!r} is not an integer or LOW..HIGH range") from None
        if high < low:
            raise ProtocolError(f"seeds {spec!r}: range {part} is empty ({high} < {low})")
        if high - low >= 10_000:
            raise ProtocolError(f"seeds {spec!r}: range {part} has more than 10000 seeds")
        seeds.extend(range(low, high + 1))
    if any(s < 0 for s in seeds):
        raise ProtocolError(f"seeds {spec!r}: seeds must be non-negative")
    return list(dict.fromkeys(seeds))


def workload(pods: Sequence[TracePod], capacity_milli: int, seed: int, inflation: float = INFLATION) -> list[TracePod]:
    """The arrival order for one seed: shuffled trace, then resampled pods until >= inflation x capacity."""
    rng = random.Random(seed)
    base = sorted(pods, key=lambda p: p.name)  # file order does not matter
    order = list(base)
    rng.shuffle(order)
    target = inflation * capacity_milli
    total = sum(p.total_gpu_milli for p in order)
    if total < target and not any(p.total_gpu_milli for p in pods):
        raise ProtocolError("the trace has no GPU pods: it cannot be inflated to a share of GPU capacity")
    while total < target:
        pod = base[rng.randrange(len(base))]
        order.append(pod)
        total += pod.total_gpu_milli
    return order


@dataclass(slots=True)
class SeedResult:
    seed: int
    capacity_milli: int
    arrived: list[int] = field(default_factory=list)  # cumulative requested GPU-milli after each pod
    allocated: list[int] = field(default_factory=list)  # cumulative allocated GPU-milli after each pod
    decision_s: list[float] = field(default_factory=list)  # allocate_pod CPU time (thread) per call
    decision_wall_s: list[float] = field(default_factory=list)  # the same, wall clock
    placed: int = 0
    skipped: int = 0
    known_unplaceable: int = 0  # skipped without asking the allocator: the same shape already fit nowhere
    wall_s: float = 0.0
    cpu_s: float = 0.0  # CPU time of the replay's thread (the load of other processes does not count)

    def allocation_at(self, percent: float) -> float:
        """Allocation % at arrived = ``percent`` (the artifact's integer bin; see the module doc)."""
        cap = self.capacity_milli
        values = [
            a for r, a in zip(self.arrived, self.allocated, strict=True) if math.floor(100 * r / cap + 0.5) == percent
        ]
        if values:
            return 100 * sum(values) / len(values) / cap
        below = [a for r, a in zip(self.arrived, self.allocated, strict=True) if 100 * r / cap <= percent]
        return 100 * below[-1] / cap if below else 0.0

    def curve(self) -> list[tuple[int, float]]:
        """(arrived % bin, mean allocation %) for every bin with samples."""
        bins: dict[int, list[int]] = {}
        for r, a in zip(self.arrived, self.allocated, strict=True):
            bins.setdefault(math.floor(100 * r / self.capacity_milli + 0.5), []).append(a)
        return [(b, 100 * sum(v) / len(v) / self.capacity_milli) for b, v in sorted(bins.items())]


class Simulation:
    """One trace, ready to replay any policy and seed. Builds the empty cluster once per replay."""

    def __init__(self, nodes: Sequence[TraceNode], pods: Sequence[TracePod]) -> None:
        self.nodes = list(nodes)
        self.pods = list(pods)
        self.capacity_milli = gpu_capacity_milli(self.nodes)
        if not self.capacity_milli:
            raise ProtocolError("the cluster has no GPUs")
        self.memory = memory_by_model(self.nodes)
        self.shapes = pod_shapes(self.pods, self.memory)
        self.selectors = FastSelectors()  # results are per device and pool generation: safe across replays
        self.selectors.register(*class_selector(DRIVER))
        for expression, models in SELECTORS.items():
            self.selectors.register(*product_selector(DRIVER, expression, models))
        self.cluster = parse_cluster(self.nodes, [n.name for n in self.nodes])
        self._static_shapes = SearchCache()

    def state(self) -> ClusterState:
        """An empty cluster: a fresh state over the parsed devices and nodes (immutable, so shared by replays)."""
        state = self.cluster.state(self.selectors)
        # Same devices, classes and selectors in every replay: node fingerprints are computed once.
        search_cache(state).share_static_shapes(self._static_shapes)
        return state

    def replay(
        self,
        policy: PolicyChoice,
        seed: int,
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> SeedResult:
        start, cpu_start = clock(), cpu_clock()
        state = self.state()
        result = SeedResult(seed, self.capacity_milli)
        arrived = allocated = 0
        ids = _ShareIds()
        # Arrival-only: free capacity only shrinks, so a pod shape that fit nowhere never fits again. Such
        # pods are skipped without asking the allocator (same outcome, not counted in decision times).
        unplaceable: set[tuple] = set()
        for index, pod in enumerate(workload(self.pods, self.capacity_milli, seed)):
            arrived += pod.total_gpu_milli
            key = shape_key(pod)
            if key in unplaceable:
                result.skipped += 1
                result.known_unplaceable += 1
                result.arrived.append(arrived)
                result.allocated.append(allocated)
                continue
            p, claims = self.shapes[key].instance(index)
            t0, c0 = clock(), cpu_clock()
            outcome = allocate_pod(state, p, claims, policy, share_ids=ids)
            result.decision_s.append(cpu_clock() - c0)
            result.decision_wall_s.append(clock() - t0)
            if isinstance(outcome, Placement):
                state.commit(outcome)
                allocated += pod.total_gpu_milli
                result.placed += 1
            else:
                result.skipped += 1
                unplaceable.add(key)
            result.arrived.append(arrived)
            result.allocated.append(allocated)
        result.wall_s = clock() - start
        result.cpu_s = cpu_clock() - cpu_start
        return result


class _ShareIds:
    """Valid lowercase UUIDs, cheaper than uuid4 (the simulation never writes them anywhere)."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"00000000-0000-4000-8000-{self.n:012x}"
