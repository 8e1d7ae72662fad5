# ruff: noqa: F811  (pytest fixtures imported from helpers_libvgpu are used as parameters)
"""Cross-process accounting: races near the limit, kill -9 holders, kill -9 inside the region lock
(reference §14 C.12, C.13, E.2)."""

from __future__ import annotations

import signal
import time

from helpers_libvgpu import GI, MI, probe, probe_hooks, variant, vgpu_build, wait_for_line  # noqa: F401

LIMIT = {"CUDA_DEVICE_MEMORY_LIMIT": "1g"}


def test_eight_processes_race_near_limit(probe):
    procs = [
        probe.start(["init", "ctx", "0", "sleep", "200", "allocmax", "16m", "meminfo", "sleep", "1500"], LIMIT)
        for _ in range(8)
    ]
    got, peak = 0, 0
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        for line in out.splitlines():
            f = dict(x.split("=", 1) for x in line.split()[1:] if "=" in x)
            if line.startswith("allocmax"):
                got += int(f["n"]) * 16 * MI
            if line.startswith("meminfo"):
                peak = max(peak, int(f["used"]))
    assert got == GI  # together exactly the limit, never more
    assert peak <= GI


def test_kill9_holder_memory_is_reclaimed(probe):
    holder = probe.start(["init", "ctx", "0", "alloc", "900m", "ready", "hold"], LIMIT)
    try:
        wait_for_line(holder.stdout, r"^ready")
        busy = probe.run(["init", "ctx", "0", "alloc", "900m"], LIMIT)
        assert busy.one("alloc")["rc"] == "2"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    r = probe.run(["init", "ctx", "0", "meminfo", "alloc", "900m", "meminfo"], LIMIT)
    assert int(r.one("meminfo", 0)["used"]) == 0
    assert r.one("alloc")["rc"] == "0"


def test_kill9_inside_region_lock_does_not_wedge(probe, probe_hooks):
    stuck = probe_hooks.start(["init", "ctx", "0", "alloc", "100m"], {**LIMIT, "VGPU_TEST_STALL_IN_LOCK": "1"})
    try:
        wait_for_line(stuck.stderr, "stalling while holding the device lock")
    finally:
        stuck.send_signal(signal.SIGKILL)
        stuck.wait()
    t0 = time.monotonic()
    r = probe.run(["init", "ctx", "0", "alloc", "1g", "meminfo"], LIMIT, timeout=30)
    assert time.monotonic() - t0 < 10
    assert r.one("alloc")["rc"] == "0"
    assert int(r.one("meminfo")["used"]) == GI  # the dead half-charge was recomputed away


def test_concurrent_processes_with_threads_end_at_zero(probe):
    procs = [probe.start(["init", "ctx", "0", "threads", "4", "2000", "1m"], LIMIT) for _ in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "fails=0" in out
    r = probe.run(["init", "ctx", "0", "meminfo"], LIMIT)
    assert int(r.one("meminfo")["used"]) == 0


def test_region_of_another_version_is_rebuilt(probe):
    probe.cache.write_bytes(b"HAMI" * 1000)
    r = probe.run(["init", "ctx", "0", "alloc", "1m", "meminfo"], {**LIMIT, "LIBCUDA_LOG_LEVEL": "2"})
    assert "rebuilding" in r.stderr
    assert int(r.one("meminfo")["used"]) == MI
    assert probe.cache.read_bytes()[:8] == b"VGPUSHM1"


def test_unusable_region_path_falls_back_per_process(probe, tmp_path):
    r = probe.run(
        ["init", "ctx", "0", "alloc", "1g", "alloc", "1"],
        {**LIMIT, "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(tmp_path / "no" / "such" / "dir" / "x.cache")},
    )
    assert "cannot open shared region" in r.stderr
    assert [x["rc"] for x in r.lines("alloc")] == ["0", "2"]
