"""Packing benchmark: every policy over the Alibaba openb trace variants, beside the FGD (ATC'23) artifact's numbers.

Not collected by pytest (tests/bench/conftest.py ignores *.py). The traces are research-use data: they are read at
run time from $DRA_HAMI_TRACES (default ~/.cache/dra-hami/traces), or --traces / --results, and never copied into
the repository. docs/design/packing.md says where to download them and what the replay does.

    python tests/bench/bench_packing.py                       # all variants, all policies, seeds 42..51
    python tests/bench/bench_packing.py --quick               # default trace only, seeds 42..44
    python tests/bench/bench_packing.py --variants default,gpushare40 --policies binpack,fragmentation
    python tests/bench/bench_packing.py --variants default --policies fragmentation --json   # machine-readable

Prints a markdown table: our allocation % at 100% and 130% arrived (mean ± sd over seeds), decision time per
pod, and the artifact's published means for FGD, BestFit, GpuPacking, GpuClustering, DotProd and Random.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dra_hami.simulate import POLICIES, Simulation, load_nodes, load_pods, parse_seeds, run
from dra_hami.simulate.report import PolicySummary, to_json
from dra_hami.simulate.variants import constrain_models

# <root>/alibaba-openb/: the CSVs of alibaba/clusterdata cluster-trace-gpu-v2023/csv;
# <root>/fgd-atc23-results/: analysis_allo_discrete.csv of the FGD artifact (experiments/analysis/expected_results).
TRACES_ROOT = Path(os.environ.get("DRA_HAMI_TRACES") or Path.home() / ".cache" / "dra-hami" / "traces")
TRACES = TRACES_ROOT / "alibaba-openb"
RESULTS = TRACES_ROOT / "fgd-atc23-results" / "analysis_allo_discrete.csv"
VARIANTS = [
    "default",
    "gpushare20",
    "gpushare40",
    "gpushare60",
    "gpushare80",
    "gpushare100",
    "multigpu20",
    "multigpu30",
    "multigpu40",
    "multigpu50",
]
PUBLISHED = ["FGD", "BestFit", "GpuPacking", "GpuClustering", "DotProd", "Random"]
# Targets on the default trace at 100% arrived (issue 16: "packing past 96%").
TARGET_BEST = 96.0
TARGET_BINPACK = 92.86
TARGET_BEST_DECISION_P99_MS = 10.0  # the best policy, on the 1,213-node cluster
TARGET_DECISION_P99_MS = 20.0  # every policy
TARGET_REPLAY_S = 150.0  # a 10-seed replay of the best policy on one core


def published(path: Path) -> dict[tuple[str, str, int], float]:
    """(variant, policy, arrived %) -> mean allocation % over the artifact's seeds.

    Reads the artifact's own ``analysis_allo_discrete.csv`` (one row per workload, policy and seed; a column per
    arrived %; policies labelled ``06-FGD`` etc.), or an already averaged table with the columns ``workload``,
    ``policy``, ``arrived_pct`` and ``alloc_gpu_pct_mean``."""
    table: dict[tuple[str, str, int], float] = {}
    if not path.exists():
        return table
    samples: dict[tuple[str, str, int], list[float]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            variant = row["workload"].removeprefix("openb_pod_list_")
            if "alloc_gpu_pct_mean" in row:
                table[(variant, row["policy"], int(row["arrived_pct"]))] = float(row["alloc_gpu_pct_mean"])
                continue
            policy = row["sc_policy"].split("-", 1)[-1]
            for column, value in row.items():
                if column.isdigit() and value:
                    samples.setdefault((variant, policy, int(column)), []).append(float(value))
    table.update({key: sum(values) / len(values) for key, values in samples.items()})
    return table


def markdown(results: dict[str, list[PolicySummary]], paper: dict[tuple[str, str, int], float], seeds: str) -> str:
    lines = [
        f"Ours: GPU allocation % at 100% / 130% arrived, mean ± sd over seeds {seeds}; decision = allocator CPU "
        "time per pod (p99, ms).",
        "",
        "| trace | policy | ours @100% | ours @130% | decision p99 ms | replay s/seed (wall) | CPU s/seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, summaries in results.items():
        for s in summaries:
            at100, at130 = f"{s.at[100].mean:.2f} ± {s.at[100].sd:.2f}", f"{s.at[130].mean:.2f} ± {s.at[130].sd:.2f}"
            per_seed, cpu_per_seed = s.wall_s / len(s.seeds), s.cpu_s / len(s.seeds)
            lines.append(
                f"| {variant} | {s.name} ({s.choice.node}/{s.choice.gpu}) | {at100} | {at130} "
                f"| {s.decision_ms_p99:.1f} | {per_seed:.0f} | {cpu_per_seed:.1f} |"
            )
    lines += [
        "",
        "Published (FGD artifact, 10 seeds), allocation % at 100% / 130% arrived:",
        "",
        "| trace | " + " | ".join(PUBLISHED) + " |",
        "|---|" + "---|" * len(PUBLISHED),
    ]
    for variant in results:
        cells = []
        for policy in PUBLISHED:
            name = published_name(variant)
            a, b = paper.get((name, policy, 100)), paper.get((name, policy, 130))
            cells.append(f"{a:.2f} / {b:.2f}" if a is not None and b is not None else "n/a")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def variant_pods(traces: Path, variant: str, nodes: list) -> list:
    """The variant's pods: its CSV, or for ``gpuspecNN`` / ``gpuspecNNu`` without a CSV (the artifact's are not
    public) the default trace with NN% of its GPU pods restricted to one GPU model, drawn in proportion to the
    cluster's GPUs of each model, or (``u``) uniformly over the models (``dra_hami.simulate.variants``)."""
    pods_file = traces / f"openb_pod_list_{variant}.csv"
    share = variant.removeprefix("gpuspec").removesuffix("u")
    if not pods_file.exists() and variant.startswith("gpuspec") and share.isdigit():
        uniform = variant.endswith("u")
        how = "uniformly over the models" if uniform else "in proportion to each model's GPUs"
        print(f"{variant}: built from default, {share}% of GPU pods constrained to one model {how}", file=sys.stderr)
        default = load_pods(traces / "openb_pod_list_default.csv")
        return constrain_models(default, nodes, int(share) / 100, by_capacity=not uniform)
    return load_pods(pods_file)


def published_name(variant: str) -> str:
    """The artifact's workload a variant is compared with (our gpuspecNNu with its gpuspecNN)."""
    return variant.removesuffix("u") if variant.startswith("gpuspec") else variant


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def verdicts(summaries: list[PolicySummary]) -> list[str]:
    """The default trace's figures against the targets."""
    best = max(summaries, key=lambda s: s.at[100].mean)
    lines = [f"best on default @100%: {best.name} {best.at[100].mean:.2f}% (target >= {TARGET_BEST})"]
    binpack = next((s for s in summaries if s.name == "binpack"), None)
    if binpack is not None:
        lines.append(f"binpack {binpack.at[100].mean:.2f}% (target >= {TARGET_BINPACK})")
    lines.append(
        f"decision p99 of the best policy: {best.decision_ms_p99:.1f} ms (target <= {TARGET_BEST_DECISION_P99_MS:.0f})"
    )
    slow = [f"{s.name} {s.decision_ms_p99:.1f} ms" for s in summaries if s.decision_ms_p99 > TARGET_DECISION_P99_MS]
    lines.append(
        f"decision p99 (target <= {TARGET_DECISION_P99_MS:.0f} ms for every policy): "
        + (f"over target: {', '.join(slow)}" if slow else "all policies meet it")
    )
    lines.append(
        f"10-seed replay (target <= {TARGET_REPLAY_S:.0f} s on one core for the best policy), wall / CPU: "
        + ", ".join(
            f"{s.name} {10 * s.wall_s / len(s.seeds):.0f} / {10 * s.cpu_s / len(s.seeds):.0f} s" for s in summaries
        )
    )
    return lines


def as_json(
    results: dict[str, list[PolicySummary]],
    paper: dict[tuple[str, str, int], float],
    seeds: list[int],
    workers: int,
    elapsed: float,
) -> dict:
    out: dict = {"seeds": seeds, "workers": workers, "wall_s": round(elapsed, 1), "load_average": os.getloadavg()}
    variants = {}
    for variant, summaries in results.items():
        entry = to_json(summaries)
        entry["published"] = {
            policy: {
                str(at): paper[(published_name(variant), policy, at)]
                for at in (100, 130)
                if (published_name(variant), policy, at) in paper
            }
            for policy in PUBLISHED
        }
        variants[variant] = entry
    out["variants"] = variants
    if "default" in results:
        out["verdicts"] = verdicts(results["default"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="default trace only, seeds 42..44")
    parser.add_argument(
        "--variants", help=f"comma list of {', '.join(VARIANTS)}, or gpuspecNN (built from default if absent)"
    )
    parser.add_argument("--policies", default="all", help="comma list of policy names, or all")
    parser.add_argument("--seeds", help="seeds (default 42..51; 42..44 with --quick)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--traces", type=Path, default=TRACES)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--nodes", default="openb_node_list_gpu_node.csv")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = parser.parse_args()

    variants = args.variants.split(",") if args.variants else (["default"] if args.quick else VARIANTS)
    seeds_spec = args.seeds or ("42..44" if args.quick else "42..51")
    seeds = parse_seeds(seeds_spec)
    policies = list(POLICIES) if args.policies == "all" else args.policies.split(",")
    nodes_file = args.traces / args.nodes
    if not nodes_file.exists():
        print(f"bench_packing: {nodes_file} not found (the openb trace is not shipped with the repository)")
        return 2
    nodes = load_nodes(nodes_file)
    paper = published(args.results)
    results: dict[str, list[PolicySummary]] = {}
    started = time.perf_counter()
    for variant in variants:
        t0 = time.perf_counter()
        simulation = Simulation(nodes, variant_pods(args.traces, variant, nodes))

        def progress(name, result, variant=variant):
            print(
                f"  {variant} {name} seed {result.seed}: {result.allocation_at(100):.2f}% @100, "
                f"{result.allocation_at(130):.2f}% @130, {result.wall_s:.0f}s",
                file=sys.stderr,
                flush=True,
            )

        results[variant] = run(simulation, policies, seeds, workers=args.workers, progress=progress)
        print(f"{variant}: {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps(as_json(results, paper, seeds, args.workers, elapsed), indent=2))
        return 0
    print(markdown(results, paper, seeds_spec))
    print(f"\nTotal wall time {elapsed:.0f}s with {args.workers} worker(s); load average {_load()}.")
    if "default" in results:
        print("\n".join(verdicts(results["default"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
