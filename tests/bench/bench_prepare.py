"""NodePrepareResources latency and CPU cost of the real kubelet plugin process over its unix socket.

    python tests/bench/bench_prepare.py [--claims 50] [--rounds 3] [--json]

Like a kubelet starting N pods at once: N concurrent single-claim prepares (the kubelet sends one
call per pod), then the same N claims prepared again (the idempotent path), then N unprepares.
The plugin reads each claim from an in-memory API server over HTTP, as it reads a real one.

CPU per call is the plugin process's own CPU clock (user + system, from /proc/<pid>/stat) over the
phase divided by the calls in it: wall time on a shared machine measures the neighbours, this does not.

``--baseline DIR`` runs the plugin of another source tree (e.g. a worktree of an older commit) in alternate
rounds of the same run, and prints both and their ratios: on a shared machine only figures measured side by
side compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from plugin_harness import PluginProcess, allocated_claim

from dra_hami.demo.apiserver import FakeApiServer

REPO_ROOT = Path(__file__).resolve().parents[2]

TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> tuple[float, float]:
    """Seconds of CPU (user, system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK  # utime, stime (fields 14 and 15 of stat)


def timed(call, claims, workers):
    def one(claim):
        started = time.perf_counter()
        response = call([claim])
        elapsed = (time.perf_counter() - started) * 1000
        assert all(not entry.error for entry in response.claims.values()), response
        return elapsed

    with ThreadPoolExecutor(workers) as pool:
        return sorted(pool.map(one, claims))


def stats(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {
        "n": len(ms),
        "p50": statistics.median(ms),
        "p99": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "max": ms[-1],
    }


def run_rounds(args: argparse.Namespace, source: Path, rows: dict, cpu: dict, system: dict) -> None:
    """One round: a fresh API server and plugin (started from ``source``), the three phases."""
    api = FakeApiServer().start()
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(source)  # the plugin subprocess imports dra_hami from there
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # Split count 128: the claims must fit the GPUs, which the plugin checks before preparing. Log level
            # and publish interval are the plugin's defaults (the harness asks for debug and 1 s, whose
            # reconciles would be counted in the calls' CPU).
            extra = ["--split-count", "128", "--log-level", "info", "--publish-interval", "30"]
            plugin = PluginProcess(Path(tmp), api, extra_args=extra).start()
            try:
                assert plugin.proc is not None
                claims = [
                    allocated_claim(f"c-{uuid.uuid4().hex[:6]}", memory="128Mi", cores="1", device=f"hami-gpu-{i % 2}")
                    for i in range(args.claims)
                ]
                for claim in claims:
                    api.put("resourceclaims", claim)
                calls = {"prepare (first)": plugin.prepare, "prepare (repeat)": plugin.prepare,
                         "unprepare": plugin.unprepare}  # fmt: skip
                for name, call in calls.items():
                    user0, sys0 = process_cpu(plugin.proc.pid)
                    rows[name] += timed(call, claims, args.concurrency or args.claims)
                    user1, sys1 = process_cpu(plugin.proc.pid)
                    cpu[name] += user1 - user0 + sys1 - sys0
                    system[name] += sys1 - sys0
            finally:
                plugin.cleanup()
    finally:
        api.stop()
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


def figures(rows: dict, cpu: dict, system: dict) -> dict[str, dict[str, float]]:
    return {
        name: {
            **stats(rows[name]),
            "cpu_ms_per_call": cpu[name] * 1000 / len(rows[name]),
            "system_cpu_ms_per_call": system[name] * 1000 / len(rows[name]),
        }
        for name in rows
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=0, help="calls at once (default: all the claims)")
    parser.add_argument("--baseline", metavar="DIR", help="also run the plugin of this source tree, rounds alternating")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    phases = ("prepare (first)", "prepare (repeat)", "unprepare")
    trees = {"this tree": REPO_ROOT}
    if args.baseline:
        trees["baseline"] = Path(args.baseline).resolve()
    acc = {tree: ({p: [] for p in phases}, dict.fromkeys(phases, 0.0), dict.fromkeys(phases, 0.0)) for tree in trees}
    for _ in range(args.rounds):
        for tree, source in trees.items():  # alternate, so both see the same machine
            run_rounds(args, source, *acc[tree])
    result: dict = {
        "claims": args.claims,
        "concurrency": args.concurrency or args.claims,
        "rounds": args.rounds,
        "load_average": os.getloadavg()[0],
        "calls": figures(*acc["this tree"]),
    }
    if args.baseline:
        base = figures(*acc["baseline"])
        result["baseline"] = {"source": str(trees["baseline"]), "calls": base}
        result["ratio_to_baseline"] = {
            name: {k: result["calls"][name][k] / v for k, v in row.items() if k != "n" and v}
            for name, row in base.items()
        }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{args.claims} single-claim calls, {result['concurrency']} at once, x {args.rounds} rounds (ms); "
          f"load average {result['load_average']:.1f}\n")  # fmt: skip
    tables = [("this tree", result["calls"])]
    if args.baseline:
        tables.append((f"baseline {args.baseline}", result["baseline"]["calls"]))
    for title, calls in tables:
        print(f"{title}:\n")
        print("| call | n | p50 | p99 | max | plugin CPU per call (of it system) |\n|---|---|---|---|---|---|")
        for name, row in calls.items():
            print(f"| {name} | {row['n']} | {row['p50']:.1f} | {row['p99']:.1f} | {row['max']:.1f} | "
                  f"{row['cpu_ms_per_call']:.2f} ({row['system_cpu_ms_per_call']:.2f}) |")  # fmt: skip
        print()
    if args.baseline:
        for name, ratio in result["ratio_to_baseline"].items():
            print(f"{name}: this tree / baseline: p50 {ratio.get('p50', 0):.2f}, p99 {ratio.get('p99', 0):.2f}, "
                  f"CPU per call {ratio.get('cpu_ms_per_call', 0):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
