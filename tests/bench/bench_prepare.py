"""NodePrepareResources latency of the real kubelet plugin process over its unix socket.

    python tests/bench/bench_prepare.py [--claims 50] [--rounds 3]

Like a kubelet starting N pods at once: N concurrent single-claim prepares (the kubelet sends one
call per pod), then the same N claims prepared again (the idempotent path), then N unprepares.
The plugin reads each claim from an in-memory API server over HTTP, as it reads a real one.
"""

from __future__ import annotations

import argparse
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


def timed(call, claims, workers):
    def one(claim):
        started = time.perf_counter()
        response = call([claim])
        elapsed = (time.perf_counter() - started) * 1000
        assert all(not entry.error for entry in response.claims.values()), response
        return elapsed

    with ThreadPoolExecutor(workers) as pool:
        return sorted(pool.map(one, claims))


def summary(name, ms):
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {p99:.1f} | {ms[-1]:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = {"prepare (first)": [], "prepare (repeat)": [], "unprepare": []}
    for _ in range(args.rounds):
        api = FakeApiServer().start()
        with tempfile.TemporaryDirectory() as tmp:
            plugin = PluginProcess(Path(tmp), api).start()
            try:
                claims = [allocated_claim(f"c-{uuid.uuid4().hex[:6]}", memory="1Gi") for _ in range(args.claims)]
                for claim in claims:
                    api.put("resourceclaims", claim)
                rows["prepare (first)"] += timed(plugin.prepare, claims, args.claims)
                rows["prepare (repeat)"] += timed(plugin.prepare, claims, args.claims)
                rows["unprepare"] += timed(plugin.unprepare, claims, args.claims)
            finally:
                plugin.cleanup()
                api.stop()
    print(f"{args.claims} concurrent single-claim calls x {args.rounds} rounds (ms)\n")
    print("| call | n | p50 | p99 | max |\n|---|---|---|---|---|")
    for name, ms in rows.items():
        print(summary(name, sorted(ms)))


if __name__ == "__main__":
    main()
