"""Fragmentation-gradient-descent scoring (FGD, ATC'23), adapted to memory/cores GPU slices.

The fragmentation of a GPU, for one kind of task, is its idle memory share when that task could not use it.
A node's fragmentation is the expectation over the typical tasks; the policy picks the placement that raises
it least. Typical tasks are learnt online: an exponentially decayed histogram of the requests committed
recently, bucketed by (GPUs per request, memory share per GPU, cores per GPU).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MEMORY_BUCKET = 0.05  # memory share of a GPU, rounded up to this grid
CORES_BUCKET = 5  # cores (0-100), rounded up to this grid
POPULAR_MASS = 0.95  # keep the most frequent task kinds that together cover this share, as FGD does


@dataclass(frozen=True, slots=True)
class TaskKind:
    gpus: int
    memory_share: float  # per GPU, 0 < share <= 1
    cores: int  # per GPU

    @classmethod
    def bucketed(cls, gpus: int, memory_share: float, cores: int) -> TaskKind:
        share = min(1.0, max(MEMORY_BUCKET, math.ceil(round(memory_share / MEMORY_BUCKET, 6)) * MEMORY_BUCKET))
        return cls(max(1, gpus), round(share, 4), min(100, -(-max(0, cores) // CORES_BUCKET) * CORES_BUCKET))


@dataclass(frozen=True, slots=True)
class DemandSnapshot:
    kinds: tuple[tuple[TaskKind, float], ...]  # (kind, probability), probabilities sum to 1
    version: int


class DemandModel:
    """Decayed histogram of recent task kinds. Snapshots refresh every ``refresh_every`` observations so that
    per-GPU scores stay cached between refreshes."""

    def __init__(self, half_life: float = 1000.0, refresh_every: int = 50) -> None:
        self._decay = 0.5 ** (1.0 / half_life)
        self._scale = 1.0  # weights are stored multiplied by the growth since the start: decay is O(1)
        self._weights: dict[TaskKind, float] = {}
        self._refresh_every = refresh_every
        self._since_refresh = 0
        self._snapshot = DemandSnapshot((), 0)

    def observe(self, kind: TaskKind) -> None:
        self._scale /= self._decay
        self._weights[kind] = self._weights.get(kind, 0.0) + self._scale
        if self._scale > 1e200:  # renormalise long before floats overflow
            self._weights = {k: w / self._scale for k, w in self._weights.items()}
            self._scale = 1.0
        self._since_refresh += 1
        if not self._snapshot.kinds or self._since_refresh >= self._refresh_every:
            self._refresh()

    def snapshot(self) -> DemandSnapshot:
        return self._snapshot

    def _refresh(self) -> None:
        total = sum(self._weights.values())
        ranked = sorted(
            self._weights.items(), key=lambda item: (-item[1], item[0].gpus, item[0].memory_share, item[0].cores)
        )
        kept, mass = [], 0.0
        for kind, weight in ranked:
            kept.append((kind, weight))
            mass += weight
            if mass >= POPULAR_MASS * total:
                break
        self._snapshot = DemandSnapshot(tuple((k, w / mass) for k, w in kept), self._snapshot.version + 1)
        self._since_refresh = 0


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
    fits: int  # bitmask over the snapshot's kinds
    single_fit_mass: float  # probability of single-GPU kinds that fit


class FragmentationScorer:
    def __init__(self, snapshot: DemandSnapshot) -> None:
        self.snapshot = snapshot
        self._single_mass = sum(p for kind, p in snapshot.kinds if kind.gpus == 1)
        self._multi = [(i, kind, p) for i, (kind, p) in enumerate(snapshot.kinds) if kind.gpus > 1]
        self._profiles: dict[GpuState, GpuProfile] = {}

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

    def node_fragmentation(self, gpus: Sequence[GpuState]) -> float:
        """Expected idle GPU memory (in GPUs) on the node that a typical task could not use."""
        profiles = [self.profile(g) for g in gpus]
        return self.fragmentation_of(profiles)

    def fragmentation_of(self, profiles: Iterable[GpuProfile]) -> float:
        profiles = list(profiles)
        idle_total = sum(p.idle for p in profiles)
        # Single-GPU kinds: the idle share of GPUs a kind does not fit (all of it when it fits none).
        frag = self._single_mass * idle_total - sum(p.idle * p.single_fit_mass for p in profiles)
        for index, kind, p in self._multi:
            bit = 1 << index
            fitting = [pr for pr in profiles if pr.fits & bit]
            if len(fitting) < kind.gpus:
                frag += p * idle_total
            else:
                frag += p * (idle_total - sum(pr.idle for pr in fitting))
        return frag
