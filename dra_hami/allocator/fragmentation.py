"""Fragmentation-gradient-descent scoring (FGD, ATC'23), adapted to memory/cores GPU slices.

The fragmentation of a GPU, for one kind of task, is its idle memory share when that task could not use it:
because the GPU's free memory or cores are too small for the task, or because the node cannot host the task at
all (too few GPUs that fit, or too little free CPU on the node). A node's fragmentation is the expectation over
the typical tasks; the policy picks the placement that raises it least. Typical tasks are learnt online: an
exponentially decayed histogram of the requests committed recently, bucketed by (GPUs per request, memory share
per GPU, cores per GPU, CPU of the pod).

FGD's one-step gradient sees CPU only when a placement takes a node below some kind's request. The policy adds
a smoother CPU term (``cpu_stranded``): the idle GPU a node could not feed with CPU at the typical tasks' CPU per
GPU. It steers CPU-heavy and CPU-only pods to nodes with CPU to spare before any threshold is crossed; on the
openb trace it turns ~94.2% into ~95.8% GPU allocation at 100% arrived.

CPU-only tasks are not modelled: FGD counts every idle GPU as fragment for them whatever the placement, so they
shift every candidate's score by the same amount and never change a decision.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MEMORY_BUCKET = 0.01  # memory share of a GPU, rounded up to this grid (fine enough for the trace's milli-GPUs)
CORES_BUCKET = 1  # cores (0-100), rounded up to this grid
CPU_BUCKET = 100  # pod CPU in millicores, rounded up to this grid
POPULAR_MASS = 0.95  # keep the most frequent task kinds that together cover this share, as FGD does
UNLIMITED_CPU = 1 << 62  # a node that reports no allocatable CPU fits any CPU request


@dataclass(frozen=True, slots=True)
class TaskKind:
    gpus: int
    memory_share: float  # per GPU, 0 < share <= 1
    cores: int  # per GPU
    cpu_milli: int = 0  # CPU the pod asks of its node

    @classmethod
    def bucketed(cls, gpus: int, memory_share: float, cores: int, cpu_milli: int = 0) -> TaskKind:
        share = min(1.0, max(MEMORY_BUCKET, math.ceil(round(memory_share / MEMORY_BUCKET, 6)) * MEMORY_BUCKET))
        return cls(
            max(1, gpus),
            round(share, 4),
            min(100, -(-max(0, cores) // CORES_BUCKET) * CORES_BUCKET),
            -(-max(0, cpu_milli) // CPU_BUCKET) * CPU_BUCKET,
        )


@dataclass(frozen=True, slots=True)
class DemandSnapshot:
    kinds: tuple[tuple[TaskKind, float], ...]  # (kind, probability), probabilities sum to 1
    version: int


class DemandModel:
    """Decayed histogram of recent task kinds.

    Snapshots are refreshed after 1, 2, 4, ... observations and then every ``refresh_every``: scores cached
    per snapshot stay valid between refreshes, while the first requests are still learnt at once.
    """

    def __init__(self, half_life: float = 1000.0, refresh_every: int = 256) -> None:
        self._decay = 0.5 ** (1.0 / half_life)
        self._scale = 1.0  # weights are stored multiplied by the growth since the start: decay is O(1)
        self._weights: dict[TaskKind, float] = {}
        self._refresh_every = refresh_every
        self._observed = 0
        self._next_refresh = 1
        self._snapshot = DemandSnapshot((), 0)

    def observe(self, kind: TaskKind) -> None:
        self._scale /= self._decay
        self._weights[kind] = self._weights.get(kind, 0.0) + self._scale
        if self._scale > 1e200:  # renormalise long before floats overflow
            self._weights = {k: w / self._scale for k, w in self._weights.items()}
            self._scale = 1.0
        self._observed += 1
        if self._observed >= self._next_refresh:
            self._refresh()
            self._next_refresh = self._observed + min(self._observed, max(1, self._refresh_every))

    def snapshot(self) -> DemandSnapshot:
        return self._snapshot

    def _refresh(self) -> None:
        total = sum(self._weights.values())
        ranked = sorted(
            self._weights.items(),
            key=lambda item: (-item[1], item[0].gpus, item[0].memory_share, item[0].cores, item[0].cpu_milli),
        )
        kept, mass = [], 0.0
        for kind, weight in ranked:
            kept.append((kind, weight))
            mass += weight
            if mass >= POPULAR_MASS * total:
                break
        self._snapshot = DemandSnapshot(tuple((k, w / mass) for k, w in kept), self._snapshot.version + 1)


@dataclass(frozen=True, slots=True)
class GpuState:
    """What fragmentation needs of one GPU."""

    memory_total: int
    memory_free: int
    cores_total: int
    cores_free: int
    usable: bool  # not exclusively held and with a share left


@dataclass(frozen=True, slots=True)
class GpuProfile:
    idle: float  # idle memory share
    fits: int  # bitmask over the snapshot's kinds: those whose per-GPU request this GPU can take
    single_fit_mass: float  # probability of single-GPU kinds that fit (ignoring the node's CPU)


def cpu_stranded(idle_gpus: float, cpu_free: int, cpu_per_gpu: float) -> float:
    """Idle GPU (in GPUs) that ``cpu_free`` millicores cannot feed at ``cpu_per_gpu`` millicores per GPU."""
    if cpu_per_gpu <= 0:
        return 0.0
    return max(0.0, idle_gpus - cpu_free / cpu_per_gpu)


class FragmentationScorer:
    """F(node) = sum over kinds m of p_m * (idle GPU share the node cannot give to m).

    A kind can use a node's GPUs only if the node has the kind's CPU free and enough GPUs each with room for
    the kind's per-GPU request; then it can use exactly those GPUs, and the idle share of the others is
    fragment for it. Otherwise all of the node's idle GPU share is fragment for it.
    """

    def __init__(self, snapshot: DemandSnapshot) -> None:
        self.snapshot = snapshot
        kinds = snapshot.kinds
        self._total_mass = sum(p for _, p in kinds)
        self._single_mass = sum(p for kind, p in kinds if kind.gpus == 1)
        self._multi = [(1 << i, kind.gpus, p) for i, (kind, p) in enumerate(kinds) if kind.gpus > 1]
        self._single_bits = sum(1 << i for i, (kind, _) in enumerate(kinds) if kind.gpus == 1)
        self._probability = [p for _, p in kinds]
        # Kinds by CPU request: the kinds a node's free CPU admits are a prefix of this order.
        by_cpu = sorted(range(len(kinds)), key=lambda i: kinds[i][0].cpu_milli)
        self._cpu_thresholds = [kinds[i][0].cpu_milli for i in by_cpu]
        self._cpu_masks = [0]
        for i in by_cpu:
            self._cpu_masks.append(self._cpu_masks[-1] | (1 << i))
        # Typical tasks' CPU per GPU they take (millicores per whole GPU); 0 when they ask for no CPU.
        gpu_demand = sum(p * kind.gpus * kind.memory_share for kind, p in kinds)
        self.cpu_per_gpu = sum(p * kind.cpu_milli for kind, p in kinds) / gpu_demand if gpu_demand > 0 else 0.0
        self._profiles: dict[GpuState, GpuProfile] = {}
        self._masses: dict[int, float] = {}

    def profile(self, gpu: GpuState) -> GpuProfile:
        cached = self._profiles.get(gpu)
        if cached is not None:
            return cached
        idle = gpu.memory_free / gpu.memory_total if gpu.memory_total > 0 else 0.0
        fits, single = 0, 0.0
        if gpu.usable:
            for i, (kind, p) in enumerate(self.snapshot.kinds):
                needed = math.ceil(kind.memory_share * gpu.memory_total - 1e-9)
                if gpu.memory_free >= needed and gpu.cores_free >= min(kind.cores, gpu.cores_total):
                    fits |= 1 << i
                    if kind.gpus == 1:
                        single += p
        profile = self._profiles[gpu] = GpuProfile(idle, fits, single)
        return profile

    def cpu_level(self, cpu_free: int | None) -> int:
        """How many kinds (in CPU order) ``cpu_free`` millicores admit: a small int usable in cache keys."""
        if cpu_free is None:
            return len(self._cpu_thresholds)
        return bisect_right(self._cpu_thresholds, cpu_free)

    def _mass(self, mask: int) -> float:
        cached = self._masses.get(mask)
        if cached is None:
            cached = sum(p for i, p in enumerate(self._probability) if mask >> i & 1)
            self._masses[mask] = cached
        return cached

    def node_fragmentation(self, gpus: Sequence[GpuState], cpu_free: int | None = None) -> float:
        """Expected idle GPU share on the node that a typical task could not use (``cpu_free`` None: no limit)."""
        return self.fragmentation_of([self.profile(g) for g in gpus], self.cpu_level(cpu_free))

    def fragmentation_of(self, profiles: Iterable[GpuProfile], cpu_level: int | None = None) -> float:
        profiles = list(profiles)
        admitted = self._cpu_masks[-1 if cpu_level is None else cpu_level]
        idle_total = 0.0
        usable = 0.0
        singles = self._single_bits & admitted
        for pr in profiles:
            idle_total += pr.idle
            if pr.idle and pr.fits & singles:
                usable += pr.idle * self._mass(pr.fits & singles)
        frag = self._total_mass * idle_total - usable
        for bit, gpus, p in self._multi:
            if not bit & admitted:
                continue  # all idle is fragment for it: already counted in total_mass * idle_total
            count, idle = 0, 0.0
            for pr in profiles:
                if pr.fits & bit:
                    count += 1
                    idle += pr.idle
            if count >= gpus:
                frag -= p * idle
        return frag
