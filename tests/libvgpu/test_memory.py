# ruff: noqa: F811  (pytest fixtures imported from helpers_libvgpu are used as parameters)
"""Memory limiting and accounting through libvgpu, exact to the byte (reference §14 C)."""

from __future__ import annotations

import pytest
from helpers_libvgpu import GI, MI, probe, probe_hooks, uuid_of, variant, vgpu_build  # noqa: F401

LIMIT = {"CUDA_DEVICE_MEMORY_LIMIT": "1g"}


def used(r, i=-1) -> int:
    return int(r.one("meminfo", i)["used"])


def test_alloc_free_exact_bytes(probe):
    r = probe.run(["init", "ctx", "0", "meminfo", "alloc", "12345", "meminfo", "free", "0", "meminfo"], LIMIT)
    m = r.lines("meminfo")
    assert [int(x["total"]) for x in m] == [GI] * 3
    assert [used(r, i) for i in range(3)] == [0, 12345, 0]
    assert all(int(x["free"]) + int(x["used"]) == GI for x in m)


def test_oom_exactly_at_limit(probe):
    r = probe.run(["init", "ctx", "0", "alloc", str(GI - 1), "alloc", "1", "alloc", "1", "meminfo"], LIMIT)
    assert [x["rc"] for x in r.lines("alloc")] == ["0", "0", "2"]  # 2 = CUDA_ERROR_OUT_OF_MEMORY
    assert used(r) == GI
    assert int(r.one("meminfo")["free"]) == 0


@pytest.mark.parametrize(
    ("cmds", "charged"),
    [
        (["pitch", "1000", "100"], None),  # pitch * height as returned
        (["managed", "3m"], 3 * MI),
        (["async", "5m"], 5 * MI),
        (["pool", "7m"], 7 * MI),
        (["vmm", "10m", "0"], 10 * MI),  # a multiple of the 2 MiB granularity, as the driver demands
        (["vmmhost", "10m"], 0),  # host location: not device memory
        (["array", "100", "50"], 100 * 50 * 4),  # FLOAT, 1 channel
        (["array3d", "10", "20", "30"], 10 * 20 * 30 * 4),  # UINT8 x 4 channels
        (["mipmap", "64", "64", "3"], (64 * 64 + 32 * 32 + 16 * 16) * 4),
    ],
)
def test_each_allocation_path_is_charged(probe, cmds, charged):
    r = probe.run(["init", "ctx", "0", *cmds, "meminfo"], LIMIT, check=False)
    if r.rc == 3 and "not found" in r.stderr:
        pytest.skip(f"fake driver lacks the entry point for {cmds[0]}")
    assert r.rc == 0, r.stderr
    assert r.one(cmds[0])["rc"] == "0"
    if charged is None:
        charged = int(r.one("pitch")["bytes"])
    assert used(r) == charged


@pytest.mark.parametrize(
    ("alloc", "free"),
    [
        (["async", "5m"], ["freeasync", "0"]),
        (["vmm", "10m", "0"], ["release", "0"]),
        (["array", "100", "50"], ["arraydestroy", "0"]),
        (["mipmap", "64", "64", "3"], ["mipmapdestroy", "0"]),
        (["managed", "3m"], ["free", "0"]),
        (["async", "5m"], ["free", "0"]),  # stream-ordered alloc, synchronous free
    ],
)
def test_each_release_path_uncharges(probe, alloc, free):
    r = probe.run(["init", "ctx", "0", *alloc, *free, "meminfo"], LIMIT, check=False)
    if r.rc == 3 and "not found" in r.stderr:
        pytest.skip("fake driver lacks the entry point")
    assert r.rc == 0, r.stderr
    assert r.one(free[0])["rc"] == "0"
    assert used(r) == 0


def test_async_alloc_refused_over_limit(probe):
    r = probe.run(["init", "ctx", "0", "alloc", "1000m", "async", "100m", "vmm", "100m", "0", "meminfo"], LIMIT)
    assert r.one("async")["rc"] == "2"
    assert r.one("vmm")["rc"] == "2"
    assert used(r) == 1000 * MI


def test_untracked_free_is_forwarded(probe):
    """A pointer the library never saw is passed to the driver, and its answer comes back."""
    r = probe.run(["init", "ctx", "0", "alloc", "1m", "freeptr", "0", "meminfo"], LIMIT)
    assert r.one("freeptr")["rc"] == "0"  # cuMemFree(0) is a no-op success
    assert used(r) == MI


def test_meminfo_null_pointers(probe):
    r = probe.run(["init", "ctx", "0", "alloc", "1m", "meminfo-null"], LIMIT)
    m = r.one("meminfo-null")
    assert (m["rc1"], m["rc2"], m["rc3"]) == ("0", "0", "0")
    assert int(m["total"]) == GI and int(m["free"]) == GI - MI


def test_total_mem_reports_slice(probe):
    r = probe.run(["init", "totalmem", "0"], LIMIT)
    assert int(r.one("totalmem")["bytes"]) == GI


def test_no_limit_passes_through(probe):
    with_lib = probe.run(["init", "ctx", "0", "meminfo", "totalmem", "0"])
    without = probe.run(["init", "ctx", "0", "meminfo", "totalmem", "0"], preload=False)
    assert with_lib.one("meminfo") == without.one("meminfo")
    assert with_lib.one("totalmem") == without.one("totalmem")


def test_limit_above_physical_is_clamped(probe):
    phys = int(probe.run(["init", "totalmem", "0"], preload=False).one("totalmem")["bytes"])
    r = probe.run(
        ["init", "ctx", "0", "meminfo", "totalmem", "0", "nvml", "0"], {"CUDA_DEVICE_MEMORY_LIMIT": str(phys * 2)}
    )
    assert int(r.one("meminfo")["total"]) == phys
    assert int(r.one("totalmem")["bytes"]) == phys
    nvml = r.one("nvml")
    assert int(nvml["total"]) == phys and int(nvml["total2"]) == phys  # HAMi-core PRs #80-#82: cuDNN sizing


def test_nvml_views_match_slice(probe):
    r = probe.run(["init", "ctx", "0", "alloc", "100m", "nvml", "0"], LIMIT)
    n = r.one("nvml")
    assert n["rc1"] == "0" and n["rc2"] == "0"
    total, free, usedb = int(n["total"]), int(n["free"]), int(n["used"])
    assert total == GI and free + usedb == total and usedb >= 100 * MI
    t2, f2, u2, r2 = (int(n[k]) for k in ("total2", "free2", "used2", "reserved2"))
    assert t2 == GI and f2 + u2 + r2 == t2 and u2 >= 100 * MI


def test_threads_alloc_free_end_at_zero(probe):
    r = probe.run(["init", "ctx", "0", "threads", "16", "10000", "64k", "meminfo"], LIMIT, timeout=300)
    assert r.one("threads")["fails"] == "0"
    assert used(r) == 0


def test_per_device_index_limits(probe):
    env = {"CUDA_DEVICE_MEMORY_LIMIT": "1g", "CUDA_DEVICE_MEMORY_LIMIT_1": "256m"}
    r = probe.run(["init", "ctx", "0", "meminfo", "ctx", "1", "meminfo", "alloc", "256m", "alloc", "1"], env)
    assert [int(x["total"]) for x in r.lines("meminfo")] == [GI, 256 * MI]
    assert [x["rc"] for x in r.lines("alloc")] == ["0", "2"]


def test_uuid_list_wins_over_indexed_vars(probe):
    u0, u1 = uuid_of(probe, 0), uuid_of(probe, 1)
    env = {
        "CUDA_DEVICE_MEMORY_LIMIT_0": "1g",
        "CUDA_DEVICE_MEMORY_LIMIT_1": "1g",
        # device 1 has two entries: the lower holds (never their sum); device 0 gets 64 MiB
        "VGPU_DEVICE_LIMIT_a_0": f"{u1},{128 * MI},10",
        "VGPU_DEVICE_LIMIT_b_0": f"{u1.lower()},{64 * MI},20",
        "VGPU_DEVICE_LIMIT_c_0": f"{u0},{64 * MI},0",
    }
    r = probe.run(["init", "ctx", "1", "meminfo", "ctx", "0", "meminfo"], env)
    assert [int(x["total"]) for x in r.lines("meminfo")] == [64 * MI, 64 * MI]


def test_uuid_not_in_list_gets_nothing(probe):
    u1 = uuid_of(probe, 1)
    env = {"VGPU_DEVICE_LIMIT_x": f"{u1},{GI},0"}
    r = probe.run(["init", "ctx", "0", "alloc", "1", "ctx", "1", "alloc", "1m"], env)
    assert [x["rc"] for x in r.lines("alloc")] == ["2", "0"]


def test_oom_policy_kill(probe):
    r = probe.run(["init", "ctx", "0", "alloc", "2g"], {**LIMIT, "VGPU_OOM_POLICY": "kill"}, check=False)
    assert r.rc != 0
    assert "VGPU_OOM_POLICY=kill" in r.stderr


def test_disable_control_is_ignored_by_the_shipped_library(probe):
    """Issue 18, seen: CUDA_DISABLE_CONTROL=1 turned every limit off. The shipped build ignores it."""
    r = probe.run(["init", "ctx", "0", "alloc", "2g", "meminfo"], {**LIMIT, "CUDA_DISABLE_CONTROL": "true"})
    assert r.one("alloc")["rc"] == "2"  # CUDA_ERROR_OUT_OF_MEMORY: the 1g limit holds
    assert int(r.one("meminfo")["total"]) == GI


def test_disable_control_passes_through_in_the_test_build(probe_hooks):
    r = probe_hooks.run(["init", "ctx", "0", "alloc", "2g", "meminfo"], {**LIMIT, "CUDA_DISABLE_CONTROL": "true"})
    assert r.one("alloc")["rc"] == "0"
    assert int(r.one("meminfo")["total"]) > GI


def test_fork_child_has_own_accounting(probe):
    r = probe.run(
        [
            "init",
            "ctx",
            "0",
            "alloc",
            "100m",
            "fork",
            "init",
            "ctx",
            "0",
            "meminfo",
            "alloc",
            "200m",
            "meminfo",
            "freeall",
            "meminfo",
        ],
        LIMIT,
    )
    m = r.lines("meminfo")
    # the child sees the claim (parent's 100m), charges its own 200m, and frees only its own
    assert [int(x["used"]) for x in m] == [100 * MI, 300 * MI, 100 * MI]
    assert r.one("parent")["child_status"] == "0"


def test_exec_keeps_claim_consistent(probe):
    r = probe.run(["init", "ctx", "0", "alloc", "100m", "exec", "init", "ctx", "0", "meminfo", "alloc", "1g"], LIMIT)
    # after exec the pre-exec image's memory is gone (the driver frees it): its slot is dead
    assert int(r.one("meminfo")["used"]) == 0
    assert r.one("alloc")["rc"] == "0"


def test_sequential_processes_share_the_file(probe):
    a = probe.run(["init", "ctx", "0", "alloc", "100m", "meminfo"], LIMIT)
    b = probe.run(["init", "ctx", "0", "meminfo", "alloc", "1g"], LIMIT)
    assert used(a) == 100 * MI
    assert used(b) == 0 and b.one("alloc")["rc"] == "0"
