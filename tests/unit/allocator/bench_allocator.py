"""Decision time per pod on a generated cluster shaped like the Alibaba openb one: 1,213 nodes, 6,212 GPUs.

Not collected by pytest (no test_ prefix). Run: python tests/unit/allocator/bench_allocator.py [policy ...] [--pods N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from allocator_factories import claim, device_class, gpu, node, pod, request, resource_slice

from dra_hami.allocator import ClusterState, Placement, PolicyChoice, allocate_pod

# (nodes, GPUs per node, GPU memory): 549*8 + 310*4 + 226*2 + 128*1 = 6,212 GPUs on 1,213 nodes.
SHAPES = [(549, 8, "80Gi"), (310, 4, "32Gi"), (226, 2, "24Gi"), (128, 1, "16Gi")]


def cluster() -> tuple[list[dict], list[dict]]:
    slices, nodes = [], []
    index = 0
    for count, gpus, memory in SHAPES:
        for _ in range(count):
            name = f"node-{index:04d}"
            index += 1
            devices = [
                gpu(
                    f"hami-gpu-{i}",
                    memory,
                    attributes={
                        "minor": {"int": i},
                        "numaNode": {"int": i * 2 // gpus},
                        "uuid": {"string": f"GPU-{name}-{i}"},
                    },
                )
                for i in range(gpus)
            ]
            slices.append(resource_slice(name, devices))
            nodes.append(node(name, cpu="96", memory="512Gi"))
    return slices, nodes


def workload(n: int, seed: int) -> list[tuple[dict, list[dict]]]:
    rng = random.Random(seed)
    pods = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.38:  # a fraction of a GPU
            share = rng.choice([0.1, 0.2, 0.25, 0.3, 0.5, 0.6, 0.81])
            req = request(memory=f"{int(share * 16 * 1024)}Mi", cores=str(rng.choice([0, 10, 30, 50])))
        elif roll < 0.97:
            req = request()  # a whole GPU (the default takes all memory)
        else:
            req = request(count=rng.choice([2, 4, 8]))
        pods.append((pod(f"p{i}", cpu=f"{rng.choice([1, 2, 4, 8])}", memory="8Gi"), [claim(f"c{i}", req)]))
    return pods


def run(policy: PolicyChoice, n: int, seed: int) -> None:
    slices, nodes = cluster()
    t0 = time.perf_counter()
    state = ClusterState.from_objects(slices=slices, device_classes=[device_class()], nodes=nodes)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    state.warm_selectors()
    warm = time.perf_counter() - t0
    times, placed, gpus_used = [], 0, 0
    for p, claims in workload(n, seed):
        start = time.perf_counter()
        outcome = allocate_pod(state, p, claims, policy)
        times.append(time.perf_counter() - start)
        if isinstance(outcome, Placement):
            state.commit(outcome)
            placed += 1
    gpus_used = sum(1 for k in state.devices if not state.usage(k).idle)
    times.sort()
    ms = [t * 1000 for t in times]
    print(
        f"{policy.node}/{policy.gpu}: {n} pods, placed {placed}, GPUs in use {gpus_used}/{len(state.devices)}, "
        f"build {build:.2f}s, selectors warmed in {warm:.2f}s, "
        f"decision ms p50 {statistics.median(ms):.2f} p90 {ms[int(0.9 * n)]:.2f} "
        f"p99 {ms[int(0.99 * n)]:.2f} max {ms[-1]:.2f}, CEL evaluations {state.selectors.evaluations}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "policies", nargs="*", default=["binpack/binpack", "spread/spread", "binpack/topology", "binpack/fragmentation"]
    )
    parser.add_argument("--pods", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    for name in args.policies:
        node_policy, gpu_policy = name.split("/")
        run(PolicyChoice(node_policy, gpu_policy), args.pods, args.seed)


if __name__ == "__main__":
    main()
