"""The fake libcuda.so.1 / libnvidia-ml.so.1 itself, without libvgpu: what the interception
tests rely on (exact memory exhaustion, device configuration, symbol versioning, a shared view
across processes, simulated time)."""

from __future__ import annotations

import os
import signal
import time

import pytest

MI = 1 << 20
GI = 1 << 30
OOM = "CUDA_ERROR_OUT_OF_MEMORY"


def run(run_program, name, *args, env=None, **kw):
    return run_program(name, list(args), env=env, preload=False, **kw)


# ---------------------------------------------------------------------------------------------
# memory


def test_memory_exhausts_at_exactly_the_configured_size(run_program):
    env = {"FAKE_CUDA_MEMORY": "1g"}
    r = run(run_program, "alloc", "--size=1g", env=env).check()
    assert r.int("total_mem") == GI
    assert r.int("info_total_before") == GI and r.int("info_free_before") == GI
    assert r.int("info_free_during") == 0 and r.int("fake_used_during") == GI
    assert r.int("info_free_after") == GI

    r = run(run_program, "alloc", f"--size={GI + 1}", env=env)
    assert r.rc == 3 and r["result"] == OOM, r.describe()
    assert r.int("fake_used_during") == 0

    r = run(run_program, "alloc", "--until-oom", "--chunk=100m", env=env).check()
    assert r.int("allocated") == 10 * 100 * MI and r["result"] == OOM


@pytest.mark.parametrize(
    ("path", "charged"),
    [
        ("v2", True),
        ("v1", True),
        ("pitch", True),
        ("managed", True),
        ("async", True),
        ("pool", True),
        ("defpool", True),
        ("vmm", True),
        ("array", True),
        ("array3d", True),
        ("mipmap", True),
        ("host", False),
        ("hostalloc", False),
        ("register", False),
        ("vmm-host", False),
    ],
)
def test_every_allocation_path_charges_the_device(run_program, path, charged):
    r = run(run_program, "alloc", f"--path={path}", "--size=64m", "--count=3", env={"FAKE_CUDA_MEMORY": "1g"})
    r.check()
    assert r.int("count") == 3
    want = r.int("allocated") if charged else 0
    assert r.int("fake_used_during") == want
    if charged:
        assert r.int("allocated") >= 3 * 64 * MI
        assert r.int("info_free_during") == GI - want
    assert r.int("fake_used_after") == 0


def test_pitch_is_padded_and_charged(run_program):
    r = run(run_program, "alloc", "--path=pitch", "--size=1000000", "--width=1000").check()
    assert r.int("pitch") == 1024
    assert r.int("allocated") == 1024 * 1000 == r.int("fake_used_during")


def test_pool_reports_reserved_high_water_mark(run_program):
    r = run(run_program, "alloc", "--path=pool", "--size=10m", "--count=4").check()
    assert r.int("pool_reserved_high") == 40 * MI


def test_out_of_memory_per_path(run_program):
    env = {"FAKE_CUDA_MEMORY": "256m"}
    for path in ("v2", "managed", "async", "pool", "vmm", "array", "pitch"):
        r = run(run_program, "alloc", f"--path={path}", "--size=300m", env=env)
        assert r.rc == 3 and r["result"] == OOM, r.describe()


def test_context_size_is_charged(run_program):
    r = run(run_program, "meminfo", env={"FAKE_CUDA_MEMORY": "1g", "FAKE_CUDA_CONTEXT_SIZE": "100m"}).check()
    assert r.int("dev0.free") == GI - 100 * MI and r.int("dev0.total") == GI


def test_threads_alloc_free_never_exceed_and_end_at_zero(run_program):
    r = run(
        run_program,
        "stress",
        "--threads=8",
        "--iters=3000",
        "--size=64m",
        "--max-size=200m",
        "--hold=6",
        # 1 GiB: one thread holding six allocations of 64..200 MiB reaches it alone, so the run sees out-of-memory
        # answers even when the scheduler runs the threads one after another (a loaded 2-core machine did).
        env={"FAKE_CUDA_MEMORY": "1g"},
    ).check()
    assert r.int("errors") == 0 and r.int("ooms") > 0
    assert r.int("max_fake_used") <= GI
    assert r.int("final_fake_used") == 0


def test_processes_racing_near_the_limit_share_one_device(run_program):
    r = run(
        run_program,
        "stress",
        "--procs=4",
        "--threads=2",
        "--iters=2000",
        "--size=200m",
        "--hold=8",
        env={"FAKE_CUDA_MEMORY": "1g"},
    ).check()
    assert r.int("ooms") > 0 and r.int("errors") == 0
    assert r.int("max_fake_used") <= GI
    assert r.int("max_held") <= GI
    assert r.int("final_fake_used") == 0


@pytest.mark.parametrize("path", ["async", "vmm"])
def test_stress_other_paths(run_program, path):
    r = run(run_program, "stress", f"--path={path}", "--threads=4", "--iters=1000", "--size=2m", "--hold=3").check()
    assert r.int("final_fake_used") == 0


def test_fault_injection(run_program):
    r = run(run_program, "alloc", "--count=2", env={"FAKE_CUDA_FAIL_cuMemAlloc_v2": "2:1"})
    assert r.rc == 3 and r["result"] == OOM and r.int("count") == 0, r.describe()
    r = run(run_program, "alloc", "--count=2", env={"FAKE_CUDA_FAIL_cuInit": "100"})
    assert r.rc == 1 and "CUDA_ERROR_NO_DEVICE" in r.stderr, r.describe()


# ---------------------------------------------------------------------------------------------
# configuration


def test_multi_device_configuration(run_program):
    uuids = [
        "GPU-11111111-2222-3333-4444-555555555555",
        "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "GPU-01234567-89ab-cdef-0123-456789abcdef",
    ]
    env = {
        "FAKE_CUDA_DEVICE_COUNT": "3",
        "FAKE_CUDA_MEMORY": "1g,2048m,3GiB",
        "FAKE_CUDA_SM_COUNT": "10,20,30",
        "FAKE_CUDA_UUIDS": ",".join(uuids),
        "FAKE_CUDA_PCI_BUS_IDS": "0000:3b:00.0,0000:5e:00.0,0001:af:00.0",
        "FAKE_CUDA_NAME": "NVIDIA A100-SXM4-80GB",
        "FAKE_CUDA_COMPUTE_CAPABILITY": "8.0",
    }
    r = run(run_program, "meminfo", env=env).check()
    assert r.int("device_count") == 3 and r.int("driver_version") == 12090
    buses = ("0000:3b:00.0", "0000:5e:00.0", "0001:af:00.0")
    for i, (mem, sm, bus) in enumerate(zip((1, 2, 3), (10, 20, 30), buses, strict=True)):
        assert r.int(f"dev{i}.total_mem") == mem * GI
        assert r.int(f"dev{i}.total") == mem * GI
        assert r.int(f"dev{i}.sm_count") == sm
        assert r[f"dev{i}.uuid"] == uuids[i]
        assert r[f"dev{i}.pci_bus_id"] == bus
        assert r[f"dev{i}.name"] == "NVIDIA A100-SXM4-80GB"
        assert r[f"dev{i}.cc"] == "8.0"

    s = run(run_program, "smi", env=env).check()
    assert s.int("count") == 3
    for i, mem in enumerate((1, 2, 3)):
        assert s[f"gpu{i}.uuid"] == uuids[i]
        assert s.int(f"gpu{i}.memory.total") == mem * GI
    assert s["gpu2.pci_bus_id"] == "00000001:AF:00.0"

    a = run(run_program, "alloc", "--device=2", "--size=3g", env=env).check()
    assert a.int("total_mem") == 3 * GI and a.int("info_free_during") == 0


def test_default_configuration(run_program):
    r = run(run_program, "meminfo", "--legacy").check()
    assert r.int("device_count") == 1
    assert r.int("dev0.total_mem") == 16 * GI and r.int("dev0.sm_count") == 80
    assert r["dev0.name"] == "Tesla T4" and r["dev0.pci_bus_id"] == "0000:01:00.0"
    assert r["dev0.uuid"].startswith("GPU-")
    assert r.int("dev0.total_mem_v1") == 0xFFFFFFFF  # 32-bit API saturates


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("FAKE_CUDA_MEMORY", "abc", "is not a size"),
        ("FAKE_CUDA_MEMORY", "1g,2g", "2 items for 1 devices"),
        ("FAKE_CUDA_DEVICE_COUNT", "17", "expected an integer 0..16"),
        ("FAKE_CUDA_SM_COUNT", "0", "is not an SM count"),
        ("FAKE_CUDA_UUIDS", "GPU-xyz", "is not GPU-"),
        ("FAKE_CUDA_PCI_BUS_IDS", "01:00", "is not domain:bus:device.function"),
        ("FAKE_CUDA_NS_PER_BLOCK", "-5", "expected nanoseconds"),
        ("FAKE_CUDA_FAIL_cuInit", "x", "expected <positive error code>"),
    ],
)
def test_bad_configuration_is_reported_clearly(run_program, var, value, message):
    r = run(run_program, "meminfo", env={var: value})
    assert r.rc == 2, r.describe()
    assert f'fake-cuda: invalid {var}="{value}"' in r.stderr and message in r.stderr, r.stderr


def test_state_file_of_another_configuration_is_refused(run_program):
    run(run_program, "alloc", env={"FAKE_CUDA_MEMORY": "1g"}).check()
    r = run(run_program, "alloc", env={"FAKE_CUDA_MEMORY": "2g"})
    assert r.rc == 2 and "FAKE_CUDA_MEMORY says" in r.stderr, r.describe()


# ---------------------------------------------------------------------------------------------
# symbols


def resolve(run_program, names, versions, flags="0,1,2", routes="procaddr,procaddr_v2"):
    return run(
        run_program,
        "resolve",
        f"--names={','.join(names)}",
        f"--versions={','.join(map(str, versions))}",
        f"--flags={flags}",
        f"--routes={routes}",
    ).check()


@pytest.mark.parametrize(
    ("name", "version", "flags", "symbol"),
    [
        ("cuMemAlloc", 3000, 0, "cuMemAlloc"),
        ("cuMemAlloc", 3020, 0, "cuMemAlloc_v2"),
        ("cuMemAlloc", 12090, 2, "cuMemAlloc_v2"),
        ("cuMemGetInfo", 11030, 0, "cuMemGetInfo_v2"),
        ("cuDeviceTotalMem", 2000, 0, "cuDeviceTotalMem"),
        ("cuCtxCreate", 3020, 0, "cuCtxCreate_v2"),
        ("cuCtxCreate", 11040, 0, "cuCtxCreate_v3"),
        ("cuCtxCreate", 12050, 0, "cuCtxCreate_v4"),
        ("cuCtxDestroy", 4000, 0, "cuCtxDestroy_v2"),
        ("cuDeviceGetUuid", 11030, 0, "cuDeviceGetUuid"),
        ("cuDeviceGetUuid", 11040, 0, "cuDeviceGetUuid_v2"),
        ("cuDevicePrimaryCtxRelease", 10020, 0, "cuDevicePrimaryCtxRelease"),
        ("cuDevicePrimaryCtxRelease", 11000, 0, "cuDevicePrimaryCtxRelease_v2"),
        ("cuMemHostRegister", 6000, 0, "cuMemHostRegister"),
        ("cuMemHostRegister", 6050, 0, "cuMemHostRegister_v2"),
        ("cuLaunchKernel", 12000, 0, "cuLaunchKernel"),
        ("cuLaunchKernel", 12000, 1, "cuLaunchKernel"),
        ("cuLaunchKernel", 12000, 2, "cuLaunchKernel_ptsz"),
        ("cuLaunchKernelEx", 12000, 2, "cuLaunchKernelEx_ptsz"),
        ("cuLaunchCooperativeKernel", 12000, 2, "cuLaunchCooperativeKernel_ptsz"),
        ("cuGraphLaunch", 12000, 2, "cuGraphLaunch_ptsz"),
        ("cuMemAllocAsync", 11020, 2, "cuMemAllocAsync_ptsz"),
        ("cuMemFreeAsync", 11020, 0, "cuMemFreeAsync"),
        ("cuMemAllocFromPoolAsync", 12000, 2, "cuMemAllocFromPoolAsync_ptsz"),
        ("cuStreamSynchronize", 12000, 2, "cuStreamSynchronize_ptsz"),
        ("cuMemcpyHtoD", 12000, 0, "cuMemcpyHtoD_v2"),
        ("cuMemcpyHtoD", 12000, 2, "cuMemcpyHtoD_v2_ptds"),
        ("cuMemcpyHtoD", 6000, 2, "cuMemcpyHtoD_v2"),  # per-thread variants arrived in 7.0
        ("cuMemcpyAsync", 12000, 2, "cuMemcpyAsync_ptsz"),
        ("cuMemsetD8", 12000, 2, "cuMemsetD8_v2_ptds"),
        ("cuMemAdvise", 12010, 0, "cuMemAdvise"),
        ("cuMemAdvise", 12020, 0, "cuMemAdvise_v2"),
        ("cuMemPrefetchAsync", 11000, 2, "cuMemPrefetchAsync_ptsz"),
        ("cuMemPrefetchAsync", 12020, 2, "cuMemPrefetchAsync_v2_ptsz"),
        ("cuGraphInstantiate", 11000, 0, "cuGraphInstantiate_v2"),
        ("cuGraphInstantiate", 12000, 0, "cuGraphInstantiateWithFlags"),
        ("cuGraphAddKernelNode", 11080, 0, "cuGraphAddKernelNode"),
        ("cuGraphAddKernelNode", 12000, 0, "cuGraphAddKernelNode_v2"),
        ("cuGetProcAddress", 12000, 0, "cuGetProcAddress"),
        ("cuGetProcAddress", 12050, 0, "cuGetProcAddress_v2"),
    ],
)
def test_get_proc_address_versions_and_ptds(run_program, name, version, flags, symbol):
    r = resolve(run_program, [name], [version], flags=str(flags))
    for route in ("procaddr", "procaddr_v2"):
        key = f"{route}.{name}.{version}.{flags}"
        assert r[key] == f"libcuda.so.1:{symbol}", key
        assert r.int(f"{key}.rc") == 0
    assert r.int(f"procaddr_v2.{name}.{version}.{flags}.status") == 0


def test_get_proc_address_misses(run_program):
    r = resolve(
        run_program, ["cuLaunchKernelEx", "cuNoSuchFunction", "cuMemAlloc_v2", "cuTexRefCreate"], [11000, 12000], "0"
    )
    # too old a version for the symbol: CUDA_ERROR_NOT_FOUND, status VERSION_NOT_SUFFICIENT
    assert r["procaddr_v2.cuLaunchKernelEx.11000.0"] == "null"
    assert r.int("procaddr_v2.cuLaunchKernelEx.11000.0.rc") == 500
    assert r.int("procaddr_v2.cuLaunchKernelEx.11000.0.status") == 2
    # unknown names and versioned names (lookups are by base name): NOT_FOUND / SYMBOL_NOT_FOUND
    for name in ("cuNoSuchFunction", "cuMemAlloc_v2"):
        assert r[f"procaddr_v2.{name}.12000.0"] == "null"
        assert r.int(f"procaddr_v2.{name}.12000.0.rc") == 500
        assert r.int(f"procaddr_v2.{name}.12000.0.status") == 1
    # in cuda.h but not implemented by the fake: a stub returning CUDA_ERROR_NOT_SUPPORTED
    assert r["procaddr.cuTexRefCreate.12000.0"] == "libcuda.so.1:fake_cuda_not_supported"


def test_every_route_reaches_the_fake_without_preload(run_program):
    r = run(run_program, "resolve", "--names=cuMemAlloc_v2,cuLaunchKernel,nvmlDeviceGetMemoryInfo").check()
    assert r["libcuda"] == "libcuda.so.1:cuInit"
    assert r["direct.cuMemAlloc"] == "libcuda.so.1:cuMemAlloc_v2"
    assert r["direct.cuGetProcAddress"] == "libcuda.so.1:cuGetProcAddress_v2"
    assert r["direct.nvmlDeviceGetMemoryInfo"] == "libnvidia-ml.so.1:nvmlDeviceGetMemoryInfo"
    assert r["dlsym.cuMemAlloc_v2"] == "libcuda.so.1:cuMemAlloc_v2"
    assert r["default.cuLaunchKernel"] == "libcuda.so.1:cuLaunchKernel"
    assert r["dlsym.nvmlDeviceGetMemoryInfo"] == "libnvidia-ml.so.1:nvmlDeviceGetMemoryInfo"


def test_exports_have_the_real_driver_names(libvgpu_build):
    import subprocess

    out = subprocess.run(
        ["nm", "-D", "--defined-only", str(libvgpu_build.fake_dir / "libcuda.so.1")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    for n in (
        "cuMemAlloc",
        "cuMemAlloc_v2",
        "cuMemGetInfo_v2",
        "cuDeviceTotalMem_v2",
        "cuCtxCreate_v3",
        "cuLaunchKernel_ptsz",
        "cuMemAllocAsync_ptsz",
        "cuMemcpyHtoD_v2_ptds",
        "cuGetProcAddress",
        "cuGetProcAddress_v2",
        "cuGraphLaunch_ptsz",
    ):
        assert n in names
    assert {n for n in names if not n.startswith("cu")} <= {
        "fake_cuda_internal_state",
        "fake_cuda_device_stats",
        "fake_cuda_device_memory",
        "fake_cuda_not_supported",
    }


# ---------------------------------------------------------------------------------------------
# NVML and several processes


def test_nvml_views_are_consistent_across_processes(run_program, libvgpu_helpers):
    h = libvgpu_helpers
    env = {"FAKE_CUDA_MEMORY": "4g"}
    holders = [run_program.spawn("alloc", ["--size=300m", "--hold=-1"], env=env, preload=False) for _ in range(2)]
    for p in holders:
        h.wait_ready(p)
    s = run(run_program, "smi", "--processes", env=env).check()
    assert s.int("gpu0.memory.used") == 600 * MI
    assert s.int("gpu0.memory.free") == 4 * GI - 600 * MI
    procs = dict(item.split(":") for item in s["gpu0.processes"].split(","))
    assert procs == {str(p.pid): str(300 * MI) for p in holders}
    s2 = run(run_program, "smi", "--v2", env=env).check()
    assert s2.int("gpu0.memory.used") == 600 * MI and s2.int("gpu0.memory.reserved") == 0
    m = run(run_program, "meminfo", env=env).check()
    assert m.int("dev0.free") == 4 * GI - 600 * MI

    h.release(holders[0]).check()
    assert run(run_program, "smi", env=env).check().int("gpu0.memory.used") == 300 * MI
    h.release(holders[1]).check()
    assert run(run_program, "smi", env=env).check().int("gpu0.memory.used") == 0


def test_memory_of_a_killed_process_comes_back(run_program, libvgpu_helpers):
    env = {"FAKE_CUDA_MEMORY": "1g"}
    p = run_program.spawn("alloc", ["--size=800m", "--hold=-1"], env=env, preload=False)
    libvgpu_helpers.wait_ready(p)
    assert run(run_program, "alloc", "--size=800m", env=env).rc == 3
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    run(run_program, "alloc", "--size=800m", env=env).check()
    assert run(run_program, "smi", env=env).check().int("gpu0.memory.used") == 0


@pytest.mark.parametrize("mode", ["fork-before", "fork-after", "clone", "exec", "spawn", "exec-self"])
def test_children_made_every_way_share_the_device(run_program, mode):
    r = run(run_program, "forkexec", f"--mode={mode}", "--size=256m", env={"FAKE_CUDA_MEMORY": "1g"}).check()
    if mode in ("fork-after", "clone"):
        assert r.int("parent.used_before") == 256 * MI
        assert r.int("child.used_during") == 512 * MI
        assert r.int("parent.used_after_child") == 256 * MI
    elif mode in ("exec", "spawn"):
        assert r.int("fake_used_during") == 256 * MI
        assert r.int("parent.used_after_child") == 0
    elif mode == "exec-self":
        # the old image's memory is released at exec, as a real driver does
        assert r.int("parent.used_before_exec") == 256 * MI
        assert r.int("child.used_during") == 256 * MI
    else:
        assert r.int("child.used_during") == 256 * MI
        assert r.int("parent.used_after_child") == 0


# ---------------------------------------------------------------------------------------------
# simulated time


def test_saturating_launches_give_full_utilization(run_program):
    # 8000 blocks * 10 us / 80 SMs = 1 ms per kernel; 400 queued kernels = 0.4 s of device time
    r = run(run_program, "launch", "--blocks=8000", "--max-launches=400", "--sync-every=0", "--seconds=30").check()
    assert r.float("busy_s") == pytest.approx(0.4, abs=1e-6)
    assert 0.39 < r.float("wall_s") < 0.6
    assert r.float("util") > 0.8


def test_duty_cycle_gives_proportional_utilization(run_program):
    r = run(
        run_program,
        "launch",
        "--blocks=16000",
        "--max-launches=150",
        "--sync-every=1",
        "--sleep-us=2000",
        "--seconds=30",
    ).check()
    assert r.float("work_s") == pytest.approx(0.3, rel=1e-6)
    assert 0.3 < r.float("util") < 0.55  # 2 ms busy, >= 2 ms idle


@pytest.mark.parametrize("path", ["kernel", "ptsz", "ex", "coop", "graph"])
def test_every_launch_path_costs_simulated_time(run_program, path):
    r = run(run_program, "launch", f"--path={path}", "--blocks=800", "--max-launches=50", "--sync-every=10").check()
    assert r.int("launches") == 50
    assert r.float("busy_s") == pytest.approx(50 * 800 * 10e-6 / 80, rel=1e-3)


def test_sm_count_and_block_cost_scale_kernel_time(run_program):
    env = {"FAKE_CUDA_SM_COUNT": "20", "FAKE_CUDA_NS_PER_BLOCK": "50000"}
    r = run(run_program, "launch", "--blocks=400", "--max-launches=20", "--sync-every=0", env=env).check()
    assert r.float("busy_s") == pytest.approx(20 * 400 * 50e-6 / 20, rel=1e-6)  # 0.02 s


def test_nvml_utilization_follows_the_simulated_clock(run_program, libvgpu_helpers):
    env = {"FAKE_CUDA_UTIL_WINDOW_MS": "500"}
    # about half busy for ~1.5 s: 2 ms kernels, 2 ms host pauses
    p = run_program.spawn(
        "launch",
        ["--blocks=16000", "--sync-every=1", "--sleep-us=2000", "--seconds=1.5"],
        env=env,
        preload=False,
    )
    time.sleep(0.9)
    s = run(run_program, "smi", "--processes", env=env).check()
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert 25 <= s.int("gpu0.utilization.gpu") <= 65, s.stdout
    pid, util = s["gpu0.process_util"].split(":")
    assert int(pid) == p.pid and 25 <= int(util) <= 70, s.stdout
    idle = run(run_program, "smi", env=env).check()
    time.sleep(0.6)
    assert run(run_program, "smi", env=env).check().int("gpu0.utilization.gpu") == 0, idle.stdout


def test_two_processes_share_the_device_time(run_program):
    # each process alone would need 0.3 s; together they serialize on one device
    env = {"FAKE_CUDA_NS_PER_BLOCK": "10000"}
    args = ["--blocks=8000", "--max-launches=300", "--sync-every=0", "--seconds=30"]
    a = run_program.spawn("launch", args, env=env, preload=False)
    b = run_program.spawn("launch", args, env=env, preload=False)
    outs = [p.communicate(timeout=60) for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, outs
    walls = sorted(float(o[0].split("wall_s=")[1].split()[0]) for o in outs)
    assert walls[1] > 0.55  # the later one waited for the other's kernels


# ---------------------------------------------------------------------------------------------
# sanitizers (the fake and the programs themselves)


@pytest.mark.parametrize("libvgpu_variant", ["asan", "ubsan"], indirect=True)
def test_fake_is_clean_under_sanitizers(run_program, libvgpu_variant):
    v = libvgpu_variant
    run_program("stress", ["--threads=4", "--iters=500", "--size=1m"], preload=False, variant=v, check=True)
    for path in ("v2", "vmm", "pool", "mipmap", "register"):
        run_program("alloc", [f"--path={path}", "--count=2"], preload=False, variant=v, check=True)
    run_program("launch", ["--path=graph", "--max-launches=5"], preload=False, variant=v, check=True)
    run_program("smi", ["--processes"], preload=False, variant=v, check=True)
    run_program("resolve", [], preload=False, variant=v, check=True)
