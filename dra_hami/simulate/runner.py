"""Replaying (policy, seed) pairs on worker processes (fork: the parsed cluster is shared, not pickled)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from .protocol import SeedResult, Simulation, policy_choice
from .report import PolicySummary, summarise

_SIMULATION: Simulation | None = None  # the workers' copy, inherited through fork

Progress = Callable[[str, SeedResult], None]


def _replay(policy: str, seed: int) -> tuple[str, SeedResult]:
    assert _SIMULATION is not None
    return policy, _SIMULATION.replay(policy_choice(policy), seed)


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def run(
    simulation: Simulation,
    policies: Sequence[str],
    seeds: Sequence[int],
    workers: int | None = None,
    progress: Progress | None = None,
) -> list[PolicySummary]:
    """Every policy over every seed; summaries in the order of ``policies``."""
    global _SIMULATION
    jobs = [(p, s) for p in policies for s in seeds]
    workers = min(workers or default_workers(), len(jobs))
    results: dict[str, dict[int, SeedResult]] = {p: {} for p in policies}
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for policy, seed in jobs:
            result = simulation.replay(policy_choice(policy), seed)
            results[policy][seed] = result
            if progress:
                progress(policy, result)
    else:
        _SIMULATION = simulation
        try:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = [pool.submit(_replay, p, s) for p, s in jobs]
                for future in as_completed(futures):
                    policy, result = future.result()
                    results[policy][result.seed] = result
                    if progress:
                        progress(policy, result)
        finally:
            _SIMULATION = None
    return [summarise(p, policy_choice(p), [results[p][s] for s in seeds]) for p in policies]
