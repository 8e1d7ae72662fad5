# ruff: noqa: F811  (pytest fixtures imported from helpers_libvgpu are used as parameters)
"""Regression tests for HAMi-core bugs (docs/design/hami-core.md, "Where HAMi-core breaks") that the
other libvgpu suites left open: untracked frees, clone(), fork
under lock contention, cuMemCreate device selection, usage above a process's limit, async loops
and failing driver calls, process side effects, UUID-permuted device orders, and a driver
without cuGetProcAddress_v2.

Scenarios that need real control flow run libvgpu/tests/programs/hamireg.c (run_program);
scripted call sequences run vgpu_probe (probe fixtures of helpers_libvgpu)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers_libvgpu import (  # noqa: F401
    GI,
    LIBVGPU,
    MI,
    probe,
    probe_plain,
    uuid_of,
    variant,
    vgpu_build,
    wait_for_line,
)

from dra_hami.exporter.region import read_region, uuid_key

CUDA_ERROR_OUT_OF_MEMORY = "2"
CUDA_ERROR_NOT_FOUND = 500


def region_env(tmp_path: Path, limit: str = "1g") -> dict[str, str]:
    return {"CUDA_DEVICE_MEMORY_LIMIT": limit, "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(tmp_path / "claim.cache")}


def probe_used(r, i: int = -1) -> int:
    return int(r.one("meminfo", i)["used"])


# ---- issues #257, #67, #321; PR #322: untracked frees are forwarded ---------------------------


def test_untracked_frees_are_forwarded_with_the_driver_code(run_program, tmp_path):
    env = region_env(tmp_path)
    lib = run_program("hamireg", ["--mode=untracked"], env=env, check=True)
    drv = run_program("hamireg", ["--mode=untracked"], env=env, preload=False, check=True)
    # the legacy 32-bit allocation is unknown to libvgpu: only the tracked 1 MiB is charged
    assert lib.int("legacy_alloc.rc") == 0 and lib.int("legacy_alloc.used") == MI
    # freeing it reaches the driver (which releases the memory) and charges nothing back
    assert lib.int("free_untracked.rc") == 0
    assert lib.int("free_untracked.phys_released") == 2 * MI
    assert lib.int("free_untracked.used") == MI
    # bogus and double frees (sync and stream-ordered) get the driver's own error, usage untouched
    for case, used in [("free_bogus", MI), ("freeasync_bogus", MI), ("free_double", 0), ("freeasync_double", 0)]:
        assert lib.int(f"{case}.rc") == drv.int(f"{case}.rc") != 0, case
        assert lib.int(f"{case}.used") == used, case
    assert lib.int("free_tracked.used") == 0 and lib.int("freeasync_tracked.used") == 0


def test_failed_free_of_a_tracked_pointer_keeps_its_charge(probe_plain):
    env = {"CUDA_DEVICE_MEMORY_LIMIT": "1g", "FAKE_CUDA_FAIL_cuMemFree_v2": "999:1"}
    r = probe_plain.run(
        ["init", "ctx", "0", "alloc", "5m", "alloc", "7m", "free", "0", "meminfo", "free", "1", "meminfo"], env
    )
    assert [x["rc"] for x in r.lines("free")] == ["999", "0"]
    # the driver kept the 5 MiB block: it stays charged; the 7 MiB one is released
    assert [probe_used(r, i) for i in range(2)] == [12 * MI, 5 * MI]


# ---- issues #93, #96; PRs #217, #306/#307: async loops, failing driver allocations -------------


def test_async_alloc_free_loops_never_drift_into_oom(run_program, tmp_path):
    r = run_program("hamireg", ["--mode=asyncloop", "--n=600", "--size=300m"], env=region_env(tmp_path), check=True)
    assert r.int("alloc_fails") == 0, r.describe()
    assert r.int("free_fails") == 0
    assert r.int("peak") == 300 * MI
    assert r.int("used") == 0


@pytest.mark.parametrize(
    ("fail", "cmd", "size"),
    [
        ("cuMemAlloc_v2", ["alloc", "100m"], 100 * MI),
        ("cuMemAllocManaged", ["managed", "100m"], 100 * MI),
        ("cuMemAllocAsync", ["async", "100m"], 100 * MI),
        ("cuMemAllocFromPoolAsync", ["pool", "100m"], 100 * MI),
        ("cuMemCreate", ["vmm", "100m", "0"], 100 * MI),
        ("cuArrayCreate_v2", ["array", "1000", "100"], 1000 * 100 * 4),
    ],
)
def test_failing_driver_allocation_leaves_usage_unchanged(probe_plain, fail, cmd, size):
    env = {"CUDA_DEVICE_MEMORY_LIMIT": "1g", f"FAKE_CUDA_FAIL_{fail}": "999:1"}
    r = probe_plain.run(["init", "ctx", "0", *cmd, "meminfo", *cmd, "meminfo"], env)
    assert [x["rc"] for x in r.lines(cmd[0])] == ["999", "0"]  # the driver's error comes back as is
    assert [probe_used(r, i) for i in range(2)] == [0, size]


# ---- PR #292: a clone() child must not clear the parent's slot --------------------------------


def test_clone_child_exit_keeps_the_parents_accounting(run_program, tmp_path, libvgpu_helpers):
    env = region_env(tmp_path)
    parent = run_program.spawn("hamireg", ["--mode=clone", "--size=64m", "--hold=-1"], env=env)
    seen = libvgpu_helpers.wait_ready(parent)
    assert seen["child.exit"] == "0", seen
    assert int(seen["child.used_during"]) == 80 * MI  # the child's 16 MiB on top of the parent's
    assert int(seen["parent.used_after_child"]) == 64 * MI
    # another process of the claim still sees the parent's memory
    other = run_program("meminfo", ["--device=0"], env=env, check=True)
    assert other.int("dev0.total") - other.int("dev0.free") == 64 * MI
    done = libvgpu_helpers.release(parent).check()
    assert done.int("parent.used_final") == 0
    after = run_program("meminfo", ["--device=0"], env=env, check=True)
    assert after.int("dev0.total") == after.int("dev0.free") == GI


# ---- [analysis] fork with held mutexes -------------------------------------------------------


def test_fork_while_threads_hold_the_locks_does_not_deadlock(run_program, tmp_path):
    # 4 threads allocate, free, query and launch (SM cap: the limiter is active) while the main
    # thread forks; every child allocates, launches and frees under a 5 s alarm
    env = {**region_env(tmp_path), "CUDA_DEVICE_SM_LIMIT": "50"}
    r = run_program("hamireg", ["--mode=forklock", "--threads=4", "--forks=400"], env=env, timeout=600, check=True)
    assert (r.int("forks.ok"), r.int("forks.hung"), r.int("forks.failed")) == (400, 0, 0), r.describe()
    assert r.int("workers.fails") == 0 and r.int("workers.ops") > 0
    assert r.int("used") == 0


# ---- issue #187, PRs #172/#188: cuMemCreate device selection -----------------------------------


def test_cumemcreate_charges_the_location_device_or_none(probe):
    env = {"CUDA_DEVICE_MEMORY_LIMIT_0": "1g", "CUDA_DEVICE_MEMORY_LIMIT_1": "256m"}
    bad_ids = ["2", "15", "16", "1000", "-1"]
    cmds = ["init", "vmm", "10m", "1", "vmm", "4m", "0"]  # no current context
    cmds += ["ctx", "0", "vmm", "6m", "1"]  # current device 0, location device 1
    for i in bad_ids:
        cmds += ["vmm", "2m", i]
    cmds += ["ctx", "0", "meminfo", "ctx", "1", "meminfo"]
    r = probe.run(cmds, env)
    drv = probe.run(cmds, env, preload=False)
    rcs = [x["rc"] for x in r.lines("vmm")]
    assert rcs[:3] == ["0", "0", "0"]
    # out-of-range ordinals: the driver's answer, nothing charged, no out-of-bounds access
    assert rcs[3:] == [x["rc"] for x in drv.lines("vmm")][3:] and "0" not in rcs[3:]
    assert [probe_used(r, i) for i in range(2)] == [4 * MI, 16 * MI]
    assert [int(x["total"]) for x in r.lines("meminfo")] == [GI, 256 * MI]


@pytest.mark.parametrize("mode", ["indexed", "uuid"])
def test_cumemcreate_on_a_missing_device_is_the_drivers_business(probe_plain, mode):
    """A garbage location.id neither charges nor refuses anything, and takes none of the claim's
    16 shared device records (they are never freed)."""
    u0, u1 = uuid_of(probe_plain, 0), uuid_of(probe_plain, 1)
    if mode == "uuid":
        env = {"VGPU_DEVICE_LIMIT_a": f"{u0},{GI},0", "VGPU_DEVICE_LIMIT_b": f"{u1},{GI},0"}
    else:
        env = {"CUDA_DEVICE_MEMORY_LIMIT": "1g"}
    cmds = ["init", "ctx", "0"]
    for i in ["2", "9", "15", "16", "-1", "1"]:
        cmds += ["vmm", "2m", i]
    r = probe_plain.run(cmds, env)
    drv = probe_plain.run(cmds, env, preload=False)
    assert [x["rc"] for x in r.lines("vmm")] == [x["rc"] for x in drv.lines("vmm")]
    assert r.lines("vmm")[-1]["rc"] == "0"
    snap = read_region(probe_plain.cache)
    assert snap is not None
    assert {uuid_key(d.uuid) for d in snap.devices} <= {uuid_key(u0), uuid_key(u1)}
    assert snap.device(u1).peak == 2 * MI  # only the valid call was charged (the process has exited)


# ---- issue #200, PR #201; HAMi#1181: usage above this process's limit ------------------------


def test_pointer_attributes_are_the_drivers_answer(probe):
    """HAMi-core #281 / HAMi#2691: a hook on cuPointerGetAttributes reported managed memory as unmanaged.
    libvgpu leaves pointer queries to the driver, whatever the allocation path charged."""
    cmds = ["init", "ctx", "0", "managed", "4m", "alloc", "4m", "ismanaged", "0", "ismanaged", "1"]
    lib = probe.run(cmds, {"CUDA_DEVICE_MEMORY_LIMIT": "1g"}).lines("ismanaged")
    drv = probe.run(cmds, preload=False).lines("ismanaged")
    assert [(x["rc"], x["managed"]) for x in lib] == [("0", "1"), ("0", "0")] == [(x["rc"], x["managed"]) for x in drv]


def test_usage_above_own_limit_reports_clamped_values(probe_plain):
    holder = probe_plain.start(
        ["init", "ctx", "0", "alloc", "800m", "ready", "hold"], {"CUDA_DEVICE_MEMORY_LIMIT": "1g"}
    )
    try:
        wait_for_line(holder.stdout, r"^ready")
        r = probe_plain.run(
            ["init", "ctx", "0", "meminfo", "meminfo-null", "nvml", "0", "alloc", "1"],
            {"CUDA_DEVICE_MEMORY_LIMIT": "512m"},
        )
    finally:
        holder.kill()
        holder.wait()
    m = r.one("meminfo")
    assert m["rc"] == "0"
    assert (int(m["total"]), int(m["free"])) == (512 * MI, 0)
    assert int(r.one("meminfo-null")["free"]) == 0
    n = r.one("nvml")
    assert n["rc1"] == n["rc2"] == "0"
    assert (int(n["total"]), int(n["free"]), int(n["used"])) == (512 * MI, 0, 512 * MI)
    assert (int(n["total2"]), int(n["free2"]), int(n["used2"]), int(n["reserved2"])) == (512 * MI, 0, 512 * MI, 0)
    assert r.one("alloc")["rc"] == CUDA_ERROR_OUT_OF_MEMORY


# ---- PR #160, [analysis] umask: no process-wide side effects ---------------------------------


def test_umask_and_signal_handlers_survive_init_and_region_creation(run_program, tmp_path):
    env = {**region_env(tmp_path), "CUDA_DEVICE_SM_LIMIT": "50"}
    lib = run_program("hamireg", ["--mode=sideeffects"], env=env, check=True)
    drv = run_program("hamireg", ["--mode=sideeffects"], env=env, preload=False, check=True)
    assert lib.int("used") == MI  # libvgpu was active: the claim's region exists
    assert (tmp_path / "claim.cache").is_file()
    assert lib["umask"] == "027"
    assert lib["changed_handlers"] == "" and lib["changed_mask"] == ""
    assert lib["at_load_nondefault"] == drv["at_load_nondefault"]


# ---- issues #319, #225, PR #305, HAMi#320/#1218: device order differs between processes -------


def test_limits_and_usage_follow_the_uuid_across_device_orders(probe_plain, tmp_path):
    u0, u1 = uuid_of(probe_plain, 0), uuid_of(probe_plain, 1)
    claim = {"VGPU_DEVICE_LIMIT_a": f"{u0},{64 * MI},0", "VGPU_DEVICE_LIMIT_b": f"{u1},{192 * MI},0"}
    # container A sees the GPUs in PCI order, container B as if CUDA_VISIBLE_DEVICES=1,0,
    # container C only the second GPU (CUDA_VISIBLE_DEVICES=1)
    env_a = {**claim, "FAKE_CUDA_UUIDS": f"{u0},{u1}"}
    env_b = {**claim, "FAKE_CUDA_UUIDS": f"{u1},{u0}"}
    # (a one-device fake needs its own state file; the claim's region is the same)
    env_c = {
        **claim,
        "FAKE_CUDA_DEVICE_COUNT": "1",
        "FAKE_CUDA_UUIDS": u1,
        "FAKE_CUDA_STATE": str(tmp_path / "c.state"),
    }
    holder = probe_plain.start(["init", "ctx", "0", "alloc", "10m", "ready", "hold"], env_a)
    try:
        wait_for_line(holder.stdout, r"^ready")
        b = probe_plain.run(
            [
                "init",
                "uuid",
                "0",
                "ctx",
                "0",
                "meminfo",
                "ctx",
                "1",
                "meminfo",
                "nvml",
                "0",
                "nvml",
                "1",
                "ctx",
                "1",
                "alloc",
                "54m",
                "alloc",
                "1",
            ],
            env_b,
        )
        c = probe_plain.run(["init", "ctx", "0", "meminfo", "alloc", "192m", "alloc", "1"], env_c)
    finally:
        holder.kill()
        holder.wait()
    assert b.one("uuid")["uuid"].lower() == u1.lower()
    # B's ordinal 0 is u1 (192 MiB, unused); its ordinal 1 is u0 (64 MiB, A's 10 MiB in use)
    assert [(int(x["total"]), probe_used(b, i)) for i, x in enumerate(b.lines("meminfo"))] == [
        (192 * MI, 0),
        (64 * MI, 10 * MI),
    ]
    nv = b.lines("nvml")
    assert [(int(x["total"]), int(x["used"])) for x in nv] == [(192 * MI, 0), (64 * MI, 10 * MI)]
    # what is left of u0's share is 54 MiB, whichever ordinal names it
    assert [x["rc"] for x in b.lines("alloc")] == ["0", CUDA_ERROR_OUT_OF_MEMORY]
    assert (int(c.one("meminfo")["total"]), probe_used(c)) == (192 * MI, 0)
    assert [x["rc"] for x in c.lines("alloc")] == ["0", CUDA_ERROR_OUT_OF_MEMORY]


# ---- issue #36: a driver without cuGetProcAddress_v2 -----------------------------------------


@pytest.fixture(scope="module")
def fake_without_gpa_v2(tmp_path_factory, libvgpu_build) -> Path:
    """The fake libcuda built as a pre-12.5 driver (no cuGetProcAddress_v2), next to the normal
    fake libnvidia-ml."""
    out = tmp_path_factory.mktemp("fake-no-gpa-v2")
    inc = subprocess.run(
        ["make", "-s", "-C", str(LIBVGPU), "print-include"], capture_output=True, text=True, check=True
    ).stdout.strip()
    fake = LIBVGPU / "fake"
    cmd = [
        "gcc",
        "-std=c11",
        "-O1",
        "-fPIC",
        "-D_GNU_SOURCE",
        "-pthread",
        "-fvisibility=hidden",
        "-isystem",
        inc,
        f"-I{fake}",
        f"-I{libvgpu_build.root / 'gen'}",
        "-DFAKE_LIB_CUDA",
        "-DFAKE_NO_GET_PROC_ADDRESS_V2",
        "-shared",
        "-Wl,-soname,libcuda.so.1",
        "-o",
        str(out / "libcuda.so.1"),
        str(fake / "fake_common.c"),
        str(fake / "fake_cuda.c"),
        str(fake / "fake_procaddr.c"),
        "-ldl",
        "-lrt",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (out / "libnvidia-ml.so.1").symlink_to(libvgpu_build.fake_dir / "libnvidia-ml.so.1")
    return out


def test_driver_without_get_proc_address_v2(run_program, tmp_path, fake_without_gpa_v2):
    env = {**region_env(tmp_path), "LD_LIBRARY_PATH": str(fake_without_gpa_v2)}
    lib = run_program("hamireg", ["--mode=nogpa"], env=env, check=True)
    drv = run_program("hamireg", ["--mode=nogpa"], env=env, preload=False, check=True)
    assert drv.int("driver_has_v2") == 0 and drv.int("default_has_v2") == 0  # the fake really lacks it
    # a lookup on the driver gets the driver's answer (so cudart falls back to cuGetProcAddress)
    assert lib.int("driver_has_v2") == 0
    # our export, if called anyway, reports NOT_FOUND instead of calling NULL
    assert lib.int("default_has_v2") == 1 and lib.int("v2.rc") == CUDA_ERROR_NOT_FOUND
    assert lib.int("v1_self.rc") == 0
    # cuGetProcAddress still hands out the accounting wrappers
    assert lib.int("alloc.rc") == 0
    assert (lib.int("alloc.total"), lib.int("alloc.used"), lib.int("free.used")) == (GI, 8 * MI, 0)
