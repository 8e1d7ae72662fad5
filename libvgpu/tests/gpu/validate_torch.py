#!/usr/bin/env python3
"""Checks libvgpu.so on a real NVIDIA GPU with PyTorch (driven by validate_gpu.sh; not CI).

    python3 validate_torch.py run --lib PATH [--limit 4g] [--seconds 15] [--caps 25,50,75] [--out DIR]

``run`` starts one worker process per check (``validate_torch.py worker <check> ...``) in the
"container" environment: ``LD_PRELOAD=libvgpu.so``, ``CUDA_DEVICE_MEMORY_LIMIT``, a shared
region ``CUDA_DEVICE_MEMORY_SHARED_CACHE`` and, for the compute checks,
``CUDA_DEVICE_SM_LIMIT``.  The parent itself never loads CUDA; it samples the GPU utilization
with NVML (ctypes, the host's view) while the matmul workers run.  Results are printed as a
markdown table (and written to DIR/validate_gpu.md); exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MI = 1 << 20
GI = 1 << 30
UNITS = {"": 1, "k": 1 << 10, "m": MI, "g": GI, "t": 1 << 40}


def parse_size(s: str) -> int:
    t = s.strip().lower().removesuffix("b").removesuffix("i")
    unit = t[-1] if t and t[-1] in UNITS else ""
    return int(t[: len(t) - len(unit)]) * UNITS[unit]


# ---- workers (run under LD_PRELOAD=libvgpu.so) ------------------------------------------------


def emit(**kw) -> None:
    print("RESULT " + json.dumps(kw), flush=True)


def oom_types():
    import torch

    types = [getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)]
    return tuple(t for t in types if t is not None) or (RuntimeError,)


def fill(limit: int, chunk: int = 64 * MI, cap: int | None = None) -> tuple[list, int, str | None]:
    """Allocates chunk-sized tensors until an OOM (or `cap` bytes); returns them, bytes, error type."""
    import torch

    held, total, err = [], 0, None
    stop = cap if cap is not None else 4 * limit
    try:
        while total + chunk <= stop:
            held.append(torch.empty(chunk, dtype=torch.uint8, device="cuda"))
            total += chunk
    except oom_types() as e:
        err = type(e).__module__ + "." + type(e).__name__
    except RuntimeError as e:  # an OOM that is not torch's OOM type is a failure of the check
        err = "RuntimeError: " + str(e).splitlines()[0][:200]
    return held, total, err


def worker_cap(limit: int) -> None:
    import torch

    torch.cuda.init()
    free0, total0 = torch.cuda.mem_get_info()
    held, total, err = fill(limit)
    free1, _ = torch.cuda.mem_get_info()
    emit(
        allocated=total,
        error=err,
        reserved=torch.cuda.memory_reserved(),
        info_total=total0,
        info_free_before=free0,
        info_free_full=free1,
        conf=os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
    )
    del held


def worker_meminfo(limit: int) -> None:
    import torch

    torch.cuda.init()
    x = torch.empty(256 * MI, dtype=torch.uint8, device="cuda")
    free, total = torch.cuda.mem_get_info()
    emit(
        info_total=total, info_free=free, held=x.numel(), device_total=torch.cuda.get_device_properties(0).total_memory
    )


def worker_hold(limit: int, nbytes: int) -> None:
    """Holds nbytes until stdin closes (prints READY first)."""
    import torch

    torch.cuda.init()
    held, total, err = fill(limit, cap=nbytes)
    torch.cuda.synchronize()
    print("READY", flush=True)
    emit(allocated=total, error=err)
    sys.stdin.read()
    del held


def worker_try(limit: int, first: int, second: int) -> None:
    """Tries `first` bytes (expected to fail), then `second` bytes (expected to fit)."""
    import torch

    torch.cuda.init()
    held, total1, err1 = fill(limit, cap=first)
    del held
    torch.cuda.empty_cache()
    held, total2, err2 = fill(limit, cap=second)
    emit(first_allocated=total1, first_error=err1, second_allocated=total2, second_error=err2)
    del held


def worker_matmul(seconds: float, n: int = 8192) -> None:
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    b = torch.randn(n, n, device="cuda", dtype=torch.float16)
    torch.cuda.synchronize()
    print("READY", flush=True)
    t0 = time.monotonic()
    iters = 0
    while time.monotonic() - t0 < seconds:
        for _ in range(4):
            a @ b
        torch.cuda.synchronize()
        iters += 4
    dt = time.monotonic() - t0
    emit(iters=iters, seconds=dt, tflops=2 * n**3 * iters / dt / 1e12)


# ---- NVML (parent, host view) -----------------------------------------------------------------


class Nvml:
    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        if self.lib.nvmlInit_v2() != 0:
            raise RuntimeError("nvmlInit_v2 failed")
        self.dev = ctypes.c_void_p()
        if self.lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(self.dev)) != 0:
            raise RuntimeError("nvmlDeviceGetHandleByIndex_v2(0) failed")

    def util(self) -> int | None:
        class U(ctypes.Structure):
            _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]

        u = U()
        return u.gpu if self.lib.nvmlDeviceGetUtilizationRates(self.dev, ctypes.byref(u)) == 0 else None


# ---- parent -----------------------------------------------------------------------------------


class Runner:
    def __init__(self, opts: argparse.Namespace, tmp: Path) -> None:
        self.opts = opts
        self.limit = parse_size(opts.limit)
        self.tmp = tmp
        self.rows: list[tuple[str, str, str, bool]] = []
        self.n = 0

    def env(self, extra: dict[str, str] | None = None, region: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA_DEVICE_", "VGPU_", "PYTORCH_CUDA_"))}
        self.n += 1
        env.update(
            {
                "LD_PRELOAD": str(self.opts.lib),
                "CUDA_DEVICE_MEMORY_LIMIT": self.opts.limit,
                "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(region or self.tmp / f"region-{self.n}.cache"),
                "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0"),
            }
        )
        env.update(extra or {})
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "worker", *args, "--limit", self.opts.limit]

    def worker(self, args: list[str], env: dict[str, str], timeout: float = 600) -> dict:
        res = subprocess.run(self.argv(*args), env=env, capture_output=True, text=True, timeout=timeout)
        return self.parse(res.stdout, res.stderr, res.returncode, args)

    @staticmethod
    def parse(out: str, err: str, rc: int, args) -> dict:
        for line in out.splitlines():
            if line.startswith("RESULT "):
                d = json.loads(line[7:])
                d["rc"] = rc
                return d
        return {"rc": rc, "failure": f"worker {' '.join(args)} rc={rc}: {(err or out)[-800:]}"}

    def add(self, check: str, expected: str, got: str, ok: bool) -> None:
        self.rows.append((check, expected, got, ok))
        print(f"[{'PASS' if ok else 'FAIL'}] {check}: {got}", file=sys.stderr, flush=True)

    # -- memory --

    def cap(self, name: str, conf: str | None) -> None:
        extra = {"PYTORCH_CUDA_ALLOC_CONF": conf} if conf else {}
        r = self.worker(["cap"], self.env(extra))
        if "failure" in r:
            self.add(f"cap ({name})", "allocations up to the cap, then torch.OutOfMemoryError", r["failure"], False)
            return
        slack = 256 * MI
        ok = r["error"] is not None and "OutOfMemoryError" in r["error"]
        ok = ok and self.limit - slack <= r["allocated"] <= self.limit
        self.add(
            f"cap {self.opts.limit} ({name})",
            f"{self.limit - slack >> 20}..{self.limit >> 20} MiB, then torch.OutOfMemoryError",
            f"{r['allocated'] >> 20} MiB allocated, then {r['error']}; mem_get_info total {r['info_total'] >> 20} MiB",
            ok,
        )

    def meminfo(self) -> None:
        r = self.worker(["meminfo"], self.env())
        if "failure" in r:
            self.add("torch.cuda.mem_get_info", "the slice", r["failure"], False)
        else:
            used = r["info_total"] - r["info_free"]
            ok = r["info_total"] == self.limit and 256 * MI <= used <= 256 * MI + 64 * MI
            self.add(
                "torch.cuda.mem_get_info with 256 MiB held",
                f"total {self.limit >> 20} MiB, used ~256 MiB",
                f"total {r['info_total'] >> 20} MiB, free {r['info_free'] >> 20} MiB (used {used >> 20} MiB); "
                f"device total_memory {r['device_total'] >> 20} MiB",
                ok,
            )
        # nvidia-smi in the container environment (preloaded) and on the host
        q = ["nvidia-smi", "--query-gpu=memory.total,memory.used", "--format=csv,noheader,nounits", "-i", "0"]
        try:
            inside = subprocess.run(q, env=self.env(), capture_output=True, text=True, timeout=60)
            host = subprocess.run(q, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            self.add("nvidia-smi memory.total (container env)", f"{self.limit >> 20} MiB", f"not run: {e}", False)
            return
        got = inside.stdout.strip() or inside.stderr.strip()[:200]
        try:
            total = int(got.split(",")[0])
        except ValueError:
            total = -1
        self.add(
            "nvidia-smi memory.total (container env)",
            f"{self.limit >> 20} MiB",
            f"{got} (host view: {host.stdout.strip()})",
            total == self.limit >> 20,
        )

    def shared(self) -> None:
        region = self.tmp / "shared-region.cache"
        a_bytes = (self.limit * 6 // 10) // (64 * MI) * (64 * MI)
        a = subprocess.Popen(
            self.argv("hold", "--bytes", str(a_bytes)),
            env=self.env(region=region),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = a.stdout.readline()
            if line.strip() != "READY":
                _, err = a.communicate(timeout=60)
                self.add("two processes, one CUDA_DEVICE_MEMORY_SHARED_CACHE", "one cap", f"holder: {line}{err}", False)
                return
            rest = self.limit - a_bytes
            b = self.worker(["try", "--first", str(a_bytes), "--second", str(rest * 8 // 10)], self.env(region=region))
        finally:
            if a.poll() is None:
                a.stdin.close()
                a.wait(timeout=60)
        if "failure" in b:
            self.add("two processes, one CUDA_DEVICE_MEMORY_SHARED_CACHE", "one cap", b["failure"], False)
            return
        ok = b["first_error"] is not None and b["first_allocated"] < a_bytes and b["second_error"] is None
        self.add(
            "two processes, one CUDA_DEVICE_MEMORY_SHARED_CACHE",
            f"A holds {a_bytes >> 20} MiB; B cannot get {a_bytes >> 20} MiB more but gets {rest * 8 // 10 >> 20} MiB",
            f"B got {b['first_allocated'] >> 20} MiB then {b['first_error']}; then {b['second_allocated'] >> 20} MiB "
            f"({b['second_error'] or 'no error'})",
            ok,
        )

    # -- compute --

    def matmul(self, cap: int | None, nvml: Nvml | None) -> tuple[float, float | None]:
        extra = {"CUDA_DEVICE_SM_LIMIT": str(cap)} if cap else {}
        p = subprocess.Popen(
            self.argv("matmul", "--seconds", str(self.opts.seconds)),
            env=self.env(extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        samples: list[int] = []
        line = p.stdout.readline()
        stop = threading.Event()

        def sample() -> None:
            time.sleep(min(3.0, self.opts.seconds / 4))  # let the controller settle
            while not stop.is_set():
                u = nvml.util() if nvml else None
                if u is not None:
                    samples.append(u)
                time.sleep(0.1)

        t = threading.Thread(target=sample, daemon=True)
        if line.strip() == "READY":
            t.start()
        out, err = p.communicate(timeout=self.opts.seconds + 300)
        stop.set()
        if t.is_alive():
            t.join()
        r = self.parse(line + out, err, p.returncode, ["matmul"])
        if "failure" in r:
            raise RuntimeError(r["failure"])
        return r["tflops"], (statistics.mean(samples) if samples else None)

    def compute(self) -> None:
        try:
            nvml = Nvml()
        except (OSError, RuntimeError) as e:
            nvml = None
            print(f"NVML unavailable in the parent ({e}); utilization not sampled", file=sys.stderr)
        try:
            base, base_util = self.matmul(None, nvml)
        except RuntimeError as e:
            self.add("matmul loop, no cap", "runs", str(e), False)
            return
        util_txt = f"{base_util:.0f} %" if base_util is not None else "n/a"
        self.add("matmul loop, no cap", "~100 % utilization", f"{base:.1f} TFLOP/s, utilization {util_txt}", True)
        for cap in self.opts.caps:
            try:
                tf, util = self.matmul(cap, nvml)
            except RuntimeError as e:
                self.add(f"CUDA_DEVICE_SM_LIMIT={cap}", f"utilization ~{cap} %", str(e), False)
                continue
            ok = util is not None and abs(util - cap) <= max(10.0, cap * 0.2)
            self.add(
                f"CUDA_DEVICE_SM_LIMIT={cap}",
                f"NVML utilization {cap} % +- {max(10, cap // 5)}",
                f"utilization {util:.0f} %, {tf:.1f} TFLOP/s = {100 * tf / base:.0f} % of uncapped"
                if util is not None
                else f"{tf:.1f} TFLOP/s = {100 * tf / base:.0f} % of uncapped (no NVML)",
                ok,
            )

    def table(self) -> str:
        lines = ["| check | expected | got | result |", "|---|---|---|---|"]
        for check, exp, got, ok in self.rows:
            lines.append(f"| {check} | {exp} | {got.replace('|', '/')} | {'PASS' if ok else '**FAIL**'} |")
        return "\n".join(lines)


def run(opts: argparse.Namespace) -> int:
    opts.lib = Path(opts.lib).resolve()
    if not opts.lib.is_file():
        print(f"error: {opts.lib} not found", file=sys.stderr)
        return 2
    opts.caps = [int(c) for c in opts.caps.split(",") if c]
    with tempfile.TemporaryDirectory(prefix="vgpu-gpu-") as tmp:
        r = Runner(opts, Path(tmp))
        r.cap("default caching allocator", None)
        r.cap("expandable_segments:True", "expandable_segments:True")
        r.cap("backend:cudaMallocAsync", "backend:cudaMallocAsync")
        r.meminfo()
        r.shared()
        if not opts.skip_compute:
            r.compute()
        table = r.table()
    print(table)
    if opts.out:
        Path(opts.out).mkdir(parents=True, exist_ok=True)
        (Path(opts.out) / "validate_gpu.md").write_text(table + "\n")
    return 0 if all(ok for *_, ok in r.rows) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="run every check (the parent)")
    p.add_argument("--lib", required=True, help="libvgpu.so to preload")
    p.add_argument("--limit", default="4g", help="CUDA_DEVICE_MEMORY_LIMIT of the checks (default 4g)")
    p.add_argument("--seconds", type=float, default=15.0, help="length of each matmul run")
    p.add_argument("--caps", default="25,50,75", help="SM caps to measure")
    p.add_argument("--skip-compute", action="store_true", help="memory checks only")
    p.add_argument("--out", help="directory for validate_gpu.md")
    w = sub.add_parser("worker", help="one check, in the preloaded environment (internal)")
    w.add_argument("check", choices=["cap", "meminfo", "hold", "try", "matmul"])
    w.add_argument("--limit", default="4g")
    w.add_argument("--bytes", type=int, default=0)
    w.add_argument("--first", type=int, default=0)
    w.add_argument("--second", type=int, default=0)
    w.add_argument("--seconds", type=float, default=15.0)
    opts = ap.parse_args()
    if opts.cmd == "run":
        return run(opts)
    limit = parse_size(opts.limit)
    if opts.check == "cap":
        worker_cap(limit)
    elif opts.check == "meminfo":
        worker_meminfo(limit)
    elif opts.check == "hold":
        worker_hold(limit, opts.bytes)
    elif opts.check == "try":
        worker_try(limit, opts.first, opts.second)
    else:
        worker_matmul(opts.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
