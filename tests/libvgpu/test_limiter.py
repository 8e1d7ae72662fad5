"""Compute (SM) cap of libvgpu against the fake driver's simulated time (reference §8, §12.3,
§14 D, target of §15).

These are convergence and semantics checks, not timing benchmarks: every run measures the
achieved device utilization (the fake's busy time over wall time, after a warm-up) and asserts
a band around the cap.  Runs that need no shared GPU are started together, each on its own
simulated GPU (own FAKE_CUDA_STATE and region file), so the whole file takes well under a minute;
the launching processes mostly sleep, so host load only ever lowers utilization at high caps.
tests/bench/bench_limiter.py prints the full SM x cap table.
"""

from __future__ import annotations

import mmap
import signal
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

WARMUP = 2.0
SECONDS = 4.0
BAND = 2.0  # percentage points; measured worst case is ~0.5 (see bench_limiter.py)
# header offsets of the shared region (libvgpu/src/region.h)
OFF_UTIL_SWITCH = 44
OFF_RECENT_KERNEL = 48


@dataclass
class Case:
    name: str
    sm: int = 80
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    procs: int = 1
    gpu: str | None = None  # runs with the same gpu key share one simulated GPU and one claim


def launch_args(sm: int, seconds: float = SECONDS, warmup: float = WARMUP, extra: list[str] | None = None) -> list[str]:
    # kernels of 1 ms of simulated time whatever the SM count, a synchronization every 16 launches
    return [
        f"--blocks={sm * 100}",
        f"--seconds={seconds}",
        f"--warmup={warmup}",
        "--interval=0.5",
        "--sync-every=16",
        *(extra or []),
    ]


def run_cases(run_program, tmp_path: Path, cases: list[Case], variant: str = "release") -> dict[str, list]:
    """Start every case at once; returns name -> list of ProgramResult (one per process)."""
    procs: list[tuple[str, subprocess.Popen]] = []
    for i, c in enumerate(cases):
        d = tmp_path / (c.gpu or f"gpu{i}")
        d.mkdir(exist_ok=True)
        env = {
            "FAKE_CUDA_STATE": str(d / "fake.state"),
            "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(d / "claim.cache"),
            "FAKE_CUDA_SM_COUNT": str(c.sm),
            **c.env,
        }
        args = c.args or launch_args(c.sm)
        for _ in range(c.procs):
            procs.append((c.name, run_program.spawn("launch", args, env=env, variant=variant)))
    out: dict[str, list] = {}
    for name, p in procs:
        stdout, stderr = p.communicate(timeout=120)
        r = _result(p, stdout, stderr)
        out.setdefault(name, []).append(r.check())
    return out


def _result(p: subprocess.Popen, stdout: str, stderr: str):
    from libvgpu_fake_helpers import ProgramResult, parse_kv

    return ProgramResult(list(map(str, p.args)), p.returncode, stdout, stderr, parse_kv(stdout))


def util(r) -> float:
    """Achieved device utilization after the warm-up, percent (all processes of the GPU)."""
    return r.float("post_util") * 100


def assert_band(r, cap: float, band: float = BAND) -> None:
    u = util(r)
    assert abs(u - cap) <= band, f"cap {cap}: achieved {u:.2f}% (samples {r['post_samples']})\n{r.describe()}"


def cap_env(cap: int | str, **extra: str) -> dict[str, str]:
    return {"CUDA_DEVICE_SM_LIMIT": str(cap), **extra}


def poke_region(path: Path, offset: int, value: int) -> None:
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 4096) as m:
        m[offset : offset + 4] = struct.pack("<i", value)


def make_region(run_program, tmp_path: Path, env: dict[str, str]) -> Path:
    """A claim's region file, created by a short capped run."""
    cache = tmp_path / "claim.cache"
    env = {**env, **cap_env(90), "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache)}
    run_program("launch", ["--seconds=0.05"], env=env, check=True)
    assert cache.read_bytes()[:8] == b"VGPUSHM1"
    return cache


# ---- convergence ------------------------------------------------------------------------------


SMS = (20, 80, 132, 188)
CAPS = (10, 30, 50, 90)


def test_converges_on_every_sm_count(run_program, tmp_path):
    """§14 D.2 / §15: within +-2 points of the cap after a 2 s warm-up on 20..188 SMs (the
    controller's gain does not depend on the SM count: HAMi's grows with SM^2, #274/#314)."""
    cases = [Case(f"{sm}/{cap}", sm=sm, env=cap_env(cap)) for sm in SMS for cap in CAPS]
    res = run_cases(run_program, tmp_path, cases)
    for sm in SMS:
        for cap in CAPS:
            assert_band(res[f"{sm}/{cap}"][0], cap)


def test_two_processes_share_one_cap(run_program, tmp_path):
    """§14 D.3: the processes of one claim share one budget (one bucket in the region): together
    they reach the cap, not twice it, and neither starves.  Two claims on two GPUs do not mix."""
    cases = [Case(f"{sm}/{cap}", sm=sm, env=cap_env(cap), procs=2) for sm in (20, 188) for cap in (20, 60)]
    res = run_cases(run_program, tmp_path, cases)
    for sm in (20, 188):
        for cap in (20, 60):
            a, b = res[f"{sm}/{cap}"]
            assert_band(a, cap)
            assert_band(b, cap)
            wa, wb = a.float("post_work_util") * 100, b.float("post_work_util") * 100
            assert abs(wa + wb - cap) <= BAND + 1, (wa, wb)
            assert min(wa, wb) >= 0.25 * cap, f"one process starves: {wa:.1f} vs {wb:.1f}"


def test_every_launch_path_is_throttled(run_program, tmp_path):
    """§14 D.4: cuLaunchKernel, _ptsz (direct and via cuGetProcAddress), cuLaunchKernelEx,
    cuLaunchCooperativeKernel, cuGraphLaunch (HAMi#1445, PR #278), a program that synchronizes
    after every launch (HAMi#2863), and the cost model: the cost of a launch is learned in device
    time per block, so many cheap blocks and few expensive ones converge alike."""
    variants = {
        "kernel": ["--path=kernel"],
        "ptsz": ["--path=ptsz"],
        "ptsz-procaddr": ["--path=ptsz", "--via=procaddr"],
        "ex": ["--path=ex", "--stream"],
        "coop": ["--path=coop"],
        "graph": ["--path=graph"],
    }
    cases = [Case(k, env=cap_env(30), args=launch_args(80, extra=v)) for k, v in variants.items()]
    sync1 = launch_args(80, extra=["--sync-every=1"])
    sync1.remove("--sync-every=16")
    cases.append(Case("sync1", env=cap_env(30), args=sync1))
    # 800,000 blocks of 100 ns and 8 blocks of 10 ms (on 80 SMs: 1 ms per kernel either way)
    cases.append(Case("tiny", env=cap_env(30, FAKE_CUDA_NS_PER_BLOCK="100"), args=launch_args(8000)))
    huge = ["--blocks=8", *launch_args(80)[1:]]
    cases.append(Case("huge", env=cap_env(30, FAKE_CUDA_NS_PER_BLOCK="10000000"), args=huge))
    res = run_cases(run_program, tmp_path, cases)
    for k in [*variants, "sync1", "tiny", "huge"]:
        assert_band(res[k][0], 30)


def test_devices_are_throttled_independently(run_program, tmp_path):
    """§14 D.5 (#142): per-device caps, one claim, two GPUs, each at its own cap."""
    env = {"FAKE_CUDA_DEVICE_COUNT": "2", "CUDA_DEVICE_SM_LIMIT_0": "20", "CUDA_DEVICE_SM_LIMIT_1": "60"}
    cases = [
        Case("d0", env=env, args=launch_args(80, extra=["--device=0"]), gpu="shared"),
        Case("d1", env=env, args=launch_args(80, extra=["--device=1"]), gpu="shared"),
    ]
    res = run_cases(run_program, tmp_path, cases)
    assert_band(res["d0"][0], 20)
    assert_band(res["d1"][0], 60)


# ---- no cap, policies ---------------------------------------------------------------------------


def test_uncapped_and_disabled_run_free(run_program, tmp_path):
    """§14 D.1: no variable, cap 0, cap 100 and policy=disable are not throttled, and the
    limiter never runs (no controller step is logged at debug level)."""
    cases = [
        Case("none", env={"LIBCUDA_LOG_LEVEL": "4"}),
        Case("zero", env=cap_env(0, LIBCUDA_LOG_LEVEL="4")),
        Case("hundred", env=cap_env(100, LIBCUDA_LOG_LEVEL="4")),
        Case("disable", env=cap_env(30, GPU_CORE_UTILIZATION_POLICY="disable", LIBCUDA_LOG_LEVEL="4")),
        Case("capped", env=cap_env(30, LIBCUDA_LOG_LEVEL="4")),
    ]
    res = run_cases(run_program, tmp_path, cases)
    for k in ("none", "zero", "hundred", "disable"):
        r = res[k][0]
        assert util(r) >= 85, r.describe()
        assert "limiter dev" not in r.stderr
    assert_band(res["capped"][0], 30)
    assert "limiter dev 0" in res["capped"][0].stderr


def test_force_ignores_the_switch_default_follows_it(run_program, tmp_path):
    """Policy default throttles unless the region's util_switch is 0 (a monitor's "alone on the
    GPU"; the switch is 1 when the region is created, so every other test here runs default
    and throttled); force throttles regardless."""
    cases = []
    for policy in ("default", "force"):
        d = tmp_path / policy
        d.mkdir()
        cache = make_region(run_program, d, {"FAKE_CUDA_STATE": str(d / "fake.state")})
        poke_region(cache, OFF_UTIL_SWITCH, 0)
        cases.append(Case(policy, env=cap_env(30, GPU_CORE_UTILIZATION_POLICY=policy), gpu=policy))
    res = run_cases(run_program, tmp_path, cases)
    assert util(res["default"][0]) >= 85, res["default"][0].describe()
    assert_band(res["force"][0], 30)


def test_priority_blocking_through_the_region(run_program, tmp_path):
    """A monitor's recent_kernel < 0 blocks a low-priority claim's launches until it is cleared;
    a high-priority process is not blocked."""
    base = {"FAKE_CUDA_STATE": str(tmp_path / "fake.state")}
    cache = make_region(run_program, tmp_path, base)
    env = {**base, "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache), **cap_env(50)}
    poke_region(cache, OFF_RECENT_KERNEL, -1)
    args = ["--blocks=80", "--max-launches=5", "--seconds=30"]
    high = run_program("launch", args, env={**env, "CUDA_TASK_PRIORITY": "0"}, timeout=20, check=True)
    assert high.int("launches") == 5
    low = run_program.spawn("launch", args, env={**env, "CUDA_TASK_PRIORITY": "1"})
    time.sleep(1.0)
    assert low.poll() is None, "a low-priority launch ran while the region blocks it"
    poke_region(cache, OFF_RECENT_KERNEL, 0)
    out, err = low.communicate(timeout=20)
    r = _result(low, out, err).check()
    assert r.int("launches") == 5
    assert r.float("wall_s") >= 0.9
    # a capped launch marks the claim active (HAMi's convention: recent_kernel = 2)
    assert struct.unpack("<i", cache.read_bytes()[OFF_RECENT_KERNEL : OFF_RECENT_KERNEL + 4])[0] == 2


# ---- robustness ---------------------------------------------------------------------------------


def test_killed_process_does_not_leak_budget(run_program, tmp_path):
    """§14 E.2 for the cap: SIGKILL a process of the claim in the middle of its launches (most
    of its time is spent sleeping in the limiter); the survivor and a later process still get
    the whole cap: the budget is wall time, nothing is held per process."""
    env = {**cap_env(30), "FAKE_CUDA_SM_COUNT": "80"}
    victim = run_program.spawn("launch", ["--blocks=8000", "--seconds=30", "--sync-every=16"], env=env)
    survivor = run_program.spawn("launch", launch_args(80, seconds=4.5, warmup=3.0), env=env)
    time.sleep(1.0)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    out, err = survivor.communicate(timeout=60)
    assert_band(_result(survivor, out, err).check(), 30)
    later = run_program("launch", launch_args(80, seconds=2.5, warmup=1.0), env=env, check=True)
    assert_band(later, 30)


def test_without_nvml_the_cap_is_enforced_open_loop(run_program, tmp_path):
    """No measurement: never silently uncapped; an error says so and the bucket runs open loop
    (calibrated as if the device had been saturated: at most the cap)."""
    env = cap_env(30, FAKE_CUDA_FAIL_nvmlDeviceGetUtilizationRates="999")
    r = run_program("launch", launch_args(80), env=env, check=True)
    assert "open loop" in r.stderr
    assert 30 - 8 <= util(r) <= 30 + BAND, r.describe()


@pytest.mark.parametrize("libvgpu_variant", ["asan", "ubsan"], indirect=True)
def test_limiter_under_sanitizers(run_program, tmp_path, libvgpu_variant):
    """The limiter's paths (controller, shared bucket, two processes, graph and ptsz launches)
    are clean under ASan/UBSan and still converge."""
    cases = [
        Case("two", sm=132, env=cap_env(40), procs=2),
        Case("graph", env=cap_env(30), args=launch_args(80, extra=["--path=graph"])),
        Case("ptsz", env=cap_env(70), args=launch_args(80, extra=["--path=ptsz"])),
    ]
    res = run_cases(run_program, tmp_path, cases, variant=libvgpu_variant)
    for r in res["two"]:
        assert_band(r, 40, BAND + 1)
    assert_band(res["graph"][0], 30, BAND + 1)
    assert_band(res["ptsz"][0], 70, BAND + 1)
