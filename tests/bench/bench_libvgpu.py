#!/usr/bin/env python3
"""libvgpu interception cost on the fake driver (docs/design/hami-core.md: test matrix G, targets).

    python tests/bench/bench_libvgpu.py [--quick] [--lib PATH] [--no-build] [--out FILE]

Every figure compares the SAME program (libvgpu/tests/programs/bench.c), the same fake driver
and the same settings, run alternately without and with ``LD_PRELOAD=libvgpu.so``; the added
cost is the median over the pairs of (with - without).  Per run the program reports the fastest
of its timing rounds (``ns_min``), which is the least disturbed by the other tenants of the
machine.  The fake is given a big memory (``FAKE_CUDA_MEMORY=1024g``), kernels of 1 block that
cost 1 ns of simulated time (``FAKE_CUDA_NS_PER_BLOCK=0``) and no host shadows
(``FAKE_CUDA_SHADOW_MAX=0``), so that neither kernel simulation nor host memory dominates.
Single-process runs are pinned to one CPU.

Prints a markdown table (and writes it to --out): each row names the command that reproduces
the libvgpu side (the baseline is the same command without LD_PRELOAD).  Not a test: pytest does
not collect this directory (tests/bench/conftest.py).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIBVGPU = REPO / "libvgpu"
BUILD = LIBVGPU / "build"
BENCH = BUILD / "programs" / "bench"
FAKE = BUILD / "fake"

SCRUB_PREFIXES = ("CUDA_", "FAKE_CUDA_", "LIBCUDA_", "GPU_CORE_", "VGPU_", "NVIDIA_")
SCRUB_NAMES = ("LD_PRELOAD", "LD_LIBRARY_PATH", "ASAN_OPTIONS", "UBSAN_OPTIONS")
FAKE_ENV = {"FAKE_CUDA_MEMORY": "1024g", "FAKE_CUDA_NS_PER_BLOCK": "0", "FAKE_CUDA_SHADOW_MAX": "0"}
LIMIT_ENV = {"CUDA_DEVICE_MEMORY_LIMIT": "512g"}


def parse_kv(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and " " not in key:
            out[key] = value
    return out


def rel(p: Path | str) -> str:
    try:
        return str(Path(p).relative_to(REPO))
    except ValueError:
        return str(p)


@dataclass
class Row:
    name: str
    base: str
    pre: str
    added: str
    target: str
    ok: bool | None
    command: str


class Bench:
    def __init__(self, lib: Path, quick: bool, tmp: Path):
        self.lib = lib
        self.quick = quick
        self.tmp = tmp
        self.rows: list[Row] = []
        self.pairs = 3 if quick else 15
        cpus = sorted(os.sched_getaffinity(0))
        self.cpu = cpus[-1]
        self.ncpus = len(cpus)
        self._n = 0
        self.spread = ""

    # ---- running ------------------------------------------------------------------------------

    def env(self, preload: bool, extra: dict[str, str], state: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB_PREFIXES) and k not in SCRUB_NAMES}
        env["LD_LIBRARY_PATH"] = str(FAKE)
        env["FAKE_CUDA_STATE"] = str(state)
        env.update(FAKE_ENV)
        env.update(extra)
        if preload:
            env["LD_PRELOAD"] = str(self.lib)
        return env

    def fresh(self) -> tuple[Path, Path]:
        """A new simulated GPU and a new shared region for one run (or one group of runs)."""
        self._n += 1
        return self.tmp / f"gpu-{self._n}.state", self.tmp / f"region-{self._n}.cache"

    def run(self, args: list[str], preload: bool, extra: dict[str, str], timeout: float = 600) -> dict[str, str]:
        state, region = self.fresh()
        env = self.env(preload, {**extra, "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(region)}, state)
        res = subprocess.run([str(BENCH), *args], env=env, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(
                f"bench {' '.join(args)} (preload={preload}) failed rc={res.returncode}:\n{res.stdout}\n{res.stderr}"
            )
        return parse_kv(res.stdout)

    def command(self, args: list[str], extra: dict[str, str], preload: bool = True) -> str:
        env = {**FAKE_ENV, **extra}
        if "CUDA_DEVICE_MEMORY_LIMIT" in extra:
            env["CUDA_DEVICE_MEMORY_SHARED_CACHE"] = "/tmp/bench.cache"
        env["LD_LIBRARY_PATH"] = rel(FAKE)
        if preload:
            env["LD_PRELOAD"] = rel(self.lib)
        return " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + rel(BENCH) + " " + " ".join(args)

    def paired(self, args: list[str], extra: dict[str, str], key: str = "ns_min") -> tuple[float, float, float, float]:
        """Alternating runs without / with preload; returns (base, with, added, added_cpu)."""
        base, pre, diff, diff_cpu = [], [], [], []
        for i in range(self.pairs):
            order = (False, True) if i % 2 == 0 else (True, False)
            got = {p: self.run(args, p, extra) for p in order}
            b, w = float(got[False][key]), float(got[True][key])
            base.append(b)
            pre.append(w)
            diff.append(w - b)
            diff_cpu.append(float(got[True]["cpu_ns"]) - float(got[False]["cpu_ns"]))
        self.spread = f"pairs {min(diff):+.0f}..{max(diff):+.0f}"
        return statistics.median(base), statistics.median(pre), statistics.median(diff), statistics.median(diff_cpu)

    def add(self, name: str, base: str, pre: str, added: str, target: str, ok: bool | None, cmd: str) -> None:
        row = Row(name, base, pre, added, target, ok, cmd)
        self.rows.append(row)
        mark = "" if ok is None else (" ok" if ok else " MISSED")
        print(f"  {name}: {base} -> {pre} ({added}; target {target}{mark})", file=sys.stderr, flush=True)

    # ---- (a) launches -------------------------------------------------------------------------

    def launches(self) -> None:
        iters, rounds = (20000, 10) if self.quick else (50000, 30)
        common = [f"--iters={iters}", f"--rounds={rounds}", f"--cpu={self.cpu}"]
        cases = [
            ("cuLaunchKernel, no cap (direct symbol)", ["--op=launch", "--via=direct"], {}, 20),
            ("cuLaunchKernel, no cap (via cuGetProcAddress)", ["--op=launch", "--via=procaddr"], {}, 20),
            (
                "cuLaunchKernel, cap 50 % not binding (1-block kernels, ~0 % utilization)",
                ["--op=launch", "--via=direct"],
                {"CUDA_DEVICE_SM_LIMIT": "50"},
                60,
            ),
        ]
        for name, args, extra, target in cases:
            args = args + common
            b, w, d, dc = self.paired(args, extra)
            self.add(
                name,
                f"{b:.0f} ns",
                f"{w:.0f} ns",
                f"{d:+.0f} ns/call (CPU {dc:+.0f}; {self.spread})",
                f"<= {target} ns",
                d <= target,
                self.command(args, extra),
            )

    # ---- (b) allocations ----------------------------------------------------------------------

    def allocs(self) -> None:
        iters, rounds = (10000, 10) if self.quick else (20000, 20)
        lives = [1, 1000, 100000] if self.quick else [1, 1000, 100000, 1000000]
        for live in lives:
            args = ["--op=alloc", f"--live={live}", f"--iters={iters}", f"--rounds={rounds}", f"--cpu={self.cpu}"]
            b, w, d, dc = self.paired(args, LIMIT_ENV)
            self.add(
                f"cuMemAlloc+cuMemFree (4 KiB), limit 512g, {live:,} live allocations",
                f"{b:.0f} ns",
                f"{w:.0f} ns",
                f"{d:+.0f} ns/pair (CPU {dc:+.0f}; {self.spread})",
                "<= 200 ns, flat",
                d <= 200,
                self.command(args, LIMIT_ENV),
            )

    def concurrent_allocs(self, nprocs: int = 8) -> None:
        """nprocs processes of one claim (one region, one GPU) alloc/free at the same time."""
        iters, rounds = (5000, 5) if self.quick else (10000, 10)
        results: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
        diffs, diffs_cpu = [], []
        for i in range(max(3, self.pairs // 3)):
            got = {}
            for preload in (False, True) if i % 2 == 0 else (True, False):
                got[preload] = self.group(nprocs, preload, iters, rounds)
                results[preload].append(got[preload])
            diffs.append(got[True][0] - got[False][0])
            diffs_cpu.append(got[True][1] - got[False][1])
        b = statistics.median(r[0] for r in results[False])
        w = statistics.median(r[0] for r in results[True])
        agg_b = statistics.median(r[2] for r in results[False])
        agg_w = statistics.median(r[2] for r in results[True])
        d, dc = statistics.median(diffs), statistics.median(diffs_cpu)
        per_cpu_share = max(1.0, nprocs / self.ncpus)
        args = ["--op=alloc", "--live=1", f"--iters={iters}", f"--rounds={rounds}", "--start-at=<T>"]
        self.add(
            f"cuMemAlloc+cuMemFree, {nprocs} processes sharing one region at once "
            f"({self.ncpus} CPUs: wall per process ~{per_cpu_share:.0f}x)",
            f"{b:.0f} ns wall/pair/process; {agg_b:.0f} ns aggregate",
            f"{w:.0f} ns; {agg_w:.0f} ns aggregate",
            f"{dc:+.0f} ns CPU/pair ({d:+.0f} ns wall/process, {agg_w - agg_b:+.0f} ns aggregate)",
            "<= 200 ns (CPU)",
            dc <= 200,
            f"{nprocs} x [{self.command(args, LIMIT_ENV)}] with one FAKE_CUDA_STATE and region",
        )

    def group(self, nprocs: int, preload: bool, iters: int, rounds: int) -> tuple[float, float, float]:
        """Median per-process wall ns/pair, median CPU ns/pair, aggregate wall ns per pair."""
        state, region = self.fresh()
        env = self.env(preload, {**LIMIT_ENV, "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(region)}, state)
        start = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 1_500_000_000
        args = ["--op=alloc", "--live=1", f"--iters={iters}", f"--rounds={rounds}", f"--start-at={start}"]
        procs = [
            subprocess.Popen([str(BENCH), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(nprocs)
        ]
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"concurrent bench failed rc={p.returncode}:\n{out}\n{err}")
            outs.append(parse_kv(out))
        # per-process: its whole timed span (all rounds) per pair, not the fastest round
        per = []
        for o in outs:
            per.append(float(o["ns_med"]))
        cpu = [float(o["cpu_ns"]) for o in outs]
        end = max(int(o["end_ns"]) for o in outs)
        agg = (end - start) / (nprocs * iters * rounds)
        return statistics.median(per), statistics.median(cpu), agg

    # ---- (c) initialisation -------------------------------------------------------------------

    def init_one(self) -> None:
        n = 10 if self.quick else 30
        vals: dict[bool, list[float]] = {False: [], True: []}
        cpus: dict[bool, list[float]] = {False: [], True: []}
        walls: dict[bool, list[float]] = {False: [], True: []}
        args = ["--op=init", f"--cpu={self.cpu}"]
        for i in range(n):
            for preload in (False, True) if i % 2 == 0 else (True, False):
                t0 = time.perf_counter_ns()
                kv = self.run(args, preload, LIMIT_ENV)
                walls[preload].append((time.perf_counter_ns() - t0) / 1e3)
                vals[preload].append(float(kv["init_ns"]) / 1e3)
                cpus[preload].append(float(kv["init_cpu_ns"]) / 1e3)
        b, w = statistics.median(vals[False]), statistics.median(vals[True])
        dc = statistics.median(cpus[True]) - statistics.median(cpus[False])
        self.add(
            "first cuInit..cuMemAlloc of a process (1 process)",
            f"{b:.0f} us",
            f"{w:.0f} us",
            f"{w - b:+.0f} us (CPU {dc:+.0f} us)",
            "<= 1000 us",
            w - b <= 1000,
            self.command(args, LIMIT_ENV),
        )
        bw, ww = statistics.median(walls[False]), statistics.median(walls[True])
        self.add(
            "whole process: spawn, load, init, 1 alloc, exit (1 process)",
            f"{bw:.0f} us",
            f"{ww:.0f} us",
            f"{ww - bw:+.0f} us",
            "<= 1000 us",
            ww - bw <= 1000,
            "time " + self.command(args, LIMIT_ENV),
        )

    def init_many(self, nprocs: int) -> None:
        got: dict[bool, list[float]] = {}
        cpu: dict[bool, list[float]] = {}
        late: dict[bool, float] = {}
        makespan: dict[bool, float] = {}
        reps = 1 if self.quick else 3
        for preload in (False, True):
            vals, cpus, lates, spans = [], [], [], []
            for _ in range(reps):
                v, c, lt, span = self.init_group(nprocs, preload)
                vals.extend(v)
                cpus.extend(c)
                lates.append(lt)
                spans.append(span)
            got[preload] = sorted(vals)
            cpu[preload] = cpus
            late[preload] = max(lates)
            makespan[preload] = statistics.median(spans)
        # CPU time of the init span per process: what each process adds to the machine, whatever
        # the CPU count (the wall figures include waiting for a CPU behind the other processes).
        cpu_b, cpu_w = statistics.median(cpu[False]), statistics.median(cpu[True])

        def q(v: list[float], f: float) -> float:
            return v[min(len(v) - 1, int(f * len(v)))]

        b, w = got[False], got[True]
        med_b, med_w = statistics.median(b), statistics.median(w)
        args = ["--op=init", "--start-at=<T>"]
        self.add(
            f"first cuInit..cuMemAlloc, {nprocs} processes starting together (median / p99 / max)",
            f"{med_b:.0f} / {q(b, 0.99):.0f} / {b[-1]:.0f} us",
            f"{med_w:.0f} / {q(w, 0.99):.0f} / {w[-1]:.0f} us",
            f"{med_w - med_b:+.0f} us median, {q(w, 0.99) - q(b, 0.99):+.0f} us p99 "
            f"(CPU {cpu_w - cpu_b:+.0f} us per process: {cpu_b:.0f} -> {cpu_w:.0f})",
            "<= 1000 us per process, flat",
            med_w - med_b <= 1000,
            f"{nprocs} x [{self.command(args, LIMIT_ENV)}] with one FAKE_CUDA_STATE and region "
            f"(latest start {max(late.values()) / 1e3:.0f} us after T)",
        )
        # Serialised initialisation (HAMi-core: ~0.3 s each under one lock) shows up here as
        # nprocs x the hold time; work that runs in parallel adds only its CPU time / CPU count.
        per_process = (makespan[True] - makespan[False]) / nprocs
        self.add(
            f"{nprocs} processes starting together: T until the last one finished init",
            f"{makespan[False] / 1e3:.1f} ms",
            f"{makespan[True] / 1e3:.1f} ms",
            f"{per_process:+.0f} us per process ({(makespan[True] - makespan[False]) / 1e3:+.1f} ms in all)",
            "<= 1000 us per process, flat",
            per_process <= 1000,
            f"as above; the last end_ns minus T (median of {reps} groups)",
        )

    def init_group(self, nprocs: int, preload: bool) -> tuple[list[float], list[float], float, float]:
        """Per-process init wall and CPU (us), how late the last one started (ns), and the time
        from the common start until the last process finished its init (us)."""
        state, region = self.fresh()
        env = self.env(preload, {**LIMIT_ENV, "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(region)}, state)
        start = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 1_000_000_000 + nprocs * 10_000_000
        procs = [
            subprocess.Popen(
                [str(BENCH), "--op=init", f"--start-at={start}"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(nprocs)
        ]
        vals, cpus, late, end = [], [], 0.0, 0
        for p in procs:
            out, err = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"init bench failed rc={p.returncode}:\n{out}\n{err}")
            kv = parse_kv(out)
            vals.append(float(kv["init_ns"]) / 1e3)
            cpus.append(float(kv["init_cpu_ns"]) / 1e3)
            late = max(late, float(kv.get("late_ns", "0")))
            end = max(end, int(kv["end_ns"]))
        return vals, cpus, late, (end - start) / 1e3

    # ---- output -------------------------------------------------------------------------------

    def table(self) -> str:
        lines = [
            "| benchmark | no preload | libvgpu | added (median of pairs) | target | met | reproduce (libvgpu side; "
            "baseline = same without LD_PRELOAD) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            met = "-" if r.ok is None else ("yes" if r.ok else "**no**")
            lines.append(f"| {r.name} | {r.base} | {r.pre} | {r.added} | {r.target} | {met} | `{r.command}` |")
        return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer pairs and iterations (about a minute)")
    ap.add_argument("--lib", type=Path, default=BUILD / "libvgpu.so", help="libvgpu.so to preload")
    ap.add_argument("--no-build", action="store_true", help="do not run make -C libvgpu first")
    ap.add_argument("--only", default="", help="comma list of sections: launch,alloc,concurrent,init,init-many")
    ap.add_argument("--procs", type=int, default=300, help="processes of the concurrent init benchmark")
    ap.add_argument("--out", type=Path, help="also write the markdown table to this file")
    opts = ap.parse_args()

    if not opts.no_build:
        res = subprocess.run(["make", "-C", str(LIBVGPU), "-j2"], capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stdout[-3000:] + res.stderr[-3000:], file=sys.stderr)
            return 2
    for p in (BENCH, FAKE / "libcuda.so.1", opts.lib):
        if not Path(p).is_file():
            print(f"missing {p}: build with make -C libvgpu", file=sys.stderr)
            return 2
    sections = [s for s in opts.only.split(",") if s] or ["launch", "alloc", "concurrent", "init", "init-many"]
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="vgpu-bench-") as tmp:
        b = Bench(opts.lib.resolve(), opts.quick, Path(tmp))
        print(f"pairs per figure: {b.pairs}; pinned CPU {b.cpu} of {b.ncpus}", file=sys.stderr)
        if "launch" in sections:
            b.launches()
        if "alloc" in sections:
            b.allocs()
        if "concurrent" in sections:
            b.concurrent_allocs(8)
        if "init" in sections:
            b.init_one()
        if "init-many" in sections:
            b.init_many(opts.procs)
        table = b.table()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    header = (
        f"libvgpu interception cost on the fake driver ({'quick' if opts.quick else 'full'} run, "
        f"{b.pairs} alternating pairs per figure, {b.ncpus} CPUs, load average {load}, "
        f"{time.time() - t0:.0f} s)\n"
    )
    print(header)
    print(table)
    if opts.out:
        opts.out.write_text(header + "\n" + table + "\n")
    return 0 if all(r.ok is not False for r in b.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
