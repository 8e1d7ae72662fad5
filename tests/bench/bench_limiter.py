#!/usr/bin/env python3
"""Compute-cap accuracy of libvgpu on the fake driver (docs/design/hami-core.md: test matrix D.2/D.3, targets).

    python tests/bench/bench_limiter.py [--sms 20,80,132,188] [--caps 10,20,...,90] [--procs 1,2]
                                        [--seconds 6] [--warmup 2] [--jobs 8] [--no-build] [--out FILE]

For every (simulated SM count, cap, number of processes) the program ``launch`` (kernels of
SMs*100 blocks, i.e. 1 ms of simulated device time each, a synchronization every 16 launches)
runs for --seconds with ``CUDA_DEVICE_SM_LIMIT=<cap>``; with 2 processes both share one claim
(one shared region file) and one simulated GPU.  Achieved utilization is the fake's device busy
time over wall time after the warm-up (all processes of the GPU): "mean" over the whole
post-warm-up span, "sd" the standard deviation of its 0.5 s intervals, "max |err|" the largest
distance of an interval from the cap.  Runs are executed --jobs at a time (each on its own
simulated GPU); the host's load shows up as lower utilization at high caps (a launching thread
that is not scheduled in time cannot use its budget), never as higher.

Prints a markdown table (and writes it to --out).  Not a test: pytest does not collect this
directory (tests/bench/conftest.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIBVGPU = REPO / "libvgpu"
BUILD = LIBVGPU / "build"
LAUNCH = BUILD / "programs" / "launch"
FAKE = BUILD / "fake"
LIB = BUILD / "libvgpu.so"

SCRUB_PREFIXES = ("CUDA_", "FAKE_CUDA_", "LIBCUDA_", "GPU_CORE_", "VGPU_", "NVIDIA_")
SCRUB_NAMES = ("LD_PRELOAD", "LD_LIBRARY_PATH", "ASAN_OPTIONS", "UBSAN_OPTIONS")


def parse_kv(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and " " not in key:
            out[key] = value
    return out


@dataclass
class Result:
    sm: int
    cap: int
    procs: int
    mean: float
    sd: float
    max_err: float
    samples: list[float]


def run_one(sm: int, cap: int, procs: int, seconds: float, warmup: float) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-limiter-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB_PREFIXES) and k not in SCRUB_NAMES}
        env.update(
            LD_LIBRARY_PATH=str(FAKE),
            LD_PRELOAD=str(LIB),
            FAKE_CUDA_STATE=f"{tmp}/fake.state",
            FAKE_CUDA_SM_COUNT=str(sm),
            CUDA_DEVICE_MEMORY_SHARED_CACHE=f"{tmp}/claim.cache",
            CUDA_DEVICE_SM_LIMIT=str(cap),
        )
        argv = [
            str(LAUNCH),
            f"--blocks={sm * 100}",
            f"--seconds={seconds}",
            f"--warmup={warmup}",
            "--interval=0.5",
            "--sync-every=16",
        ]
        ps = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
        ps += [
            subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(procs - 1)
        ]
        outs = [p.communicate(timeout=seconds + 60) for p in ps]
        for p, (out, err) in zip(ps, outs, strict=True):
            if p.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} failed (rc={p.returncode}):\n{out}\n{err}")
        kv = parse_kv(outs[0][0])
        samples = [float(x) * 100 for x in kv["post_samples"].split(",")]
        return Result(
            sm=sm,
            cap=cap,
            procs=procs,
            mean=float(kv["post_util"]) * 100,
            sd=float(kv["post_sd"]) * 100,
            max_err=max(abs(s - cap) for s in samples),
            samples=samples,
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sms", default="20,80,132,188")
    ap.add_argument("--caps", default="10,20,30,40,50,60,70,80,90")
    ap.add_argument("--procs", default="1,2")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    if not args.no_build:
        subprocess.run(["make", "-C", str(LIBVGPU), "-j2"], check=True, stdout=subprocess.DEVNULL)
    sms = [int(x) for x in args.sms.split(",")]
    caps = [int(x) for x in args.caps.split(",")]
    procs = [int(x) for x in args.procs.split(",")]
    cases = [(sm, cap, n) for n in procs for sm in sms for cap in caps]
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.jobs) as ex:
        results = list(ex.map(lambda c: run_one(c[0], c[1], c[2], args.seconds, args.warmup), cases))
    elapsed = time.monotonic() - t0

    load = os.getloadavg()[0]
    lines = [
        f"Compute cap on the fake driver: achieved device utilization after a {args.warmup:g} s warm-up "
        f"({args.seconds - args.warmup:g} s measured, 0.5 s intervals), kernels of 1 ms (SMs*100 blocks), "
        f"{args.jobs} runs at a time, {os.cpu_count()} CPUs, load average {load:.1f} at the end, {elapsed:.0f} s.",
        "",
        "| procs | SMs | " + " | ".join(f"cap {c}" for c in caps) + " |",
        "|---|---|" + "---|" * len(caps),
    ]
    by = {(r.sm, r.cap, r.procs): r for r in results}
    worst = 0.0
    for n in procs:
        for sm in sms:
            cells = []
            for cap in caps:
                r = by[(sm, cap, n)]
                worst = max(worst, abs(r.mean - cap))
                cells.append(f"{r.mean:.1f} ± {r.sd:.1f}")
            lines.append(f"| {n} | {sm} | " + " | ".join(cells) + " |")
    lines += ["", f"cells: mean ± sd of achieved utilization (%); worst |mean - cap| = {worst:.2f} points"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
