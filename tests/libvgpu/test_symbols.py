# ruff: noqa: F811  (pytest fixtures imported from helpers_libvgpu are used as parameters)
"""Interception routes: dlsym, cuGetProcAddress(_v2) with versions and flags, exports, no side
effects in processes that never use CUDA (reference §14 A)."""

from __future__ import annotations

import subprocess

import pytest
from helpers_libvgpu import probe, variant, vgpu_build  # noqa: F401

PTDS = "2"  # CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM


def owner_is_us(owner: str) -> bool:
    return owner.startswith("libvgpu")


@pytest.mark.parametrize(
    "name",
    [
        "cuMemAlloc_v2",
        "cuMemFree_v2",
        "cuMemGetInfo_v2",
        "cuDeviceTotalMem_v2",
        "cuLaunchKernel",
        "cuGetProcAddress_v2",
        "cuMemCreate",
        "cuMemAllocAsync",
    ],
)
def test_dlsym_on_driver_handle_returns_wrapper(probe, name):
    r = probe.run(["dlsym", name])
    assert owner_is_us(r.one("dlsym")["owner"])


@pytest.mark.parametrize("name", ["cuInit", "cuDeviceGet", "cuCtxSetCurrent"])
def test_dlsym_unhooked_names_come_from_driver(probe, name):
    assert probe.run(["dlsym", name]).one("dlsym")["owner"] == "libcuda.so.1"


def test_dlsym_foreign_cu_prefixes_untouched(probe):
    r = probe.run(["dlsym", "cublasCreate_v2", "dlsym", "cudnnCreate", "dlsym", "cudaMalloc"])
    assert [x["owner"] for x in r.lines("dlsym")] == ["null"] * 3


def test_dlsym_nvml_and_default(probe):
    r = probe.run(
        [
            "dlsym-nvml",
            "nvmlDeviceGetMemoryInfo",
            "dlsym-nvml",
            "nvmlDeviceGetMemoryInfo_v2",
            "dlsym-default",
            "cuMemAlloc_v2",
        ]
    )
    assert all(owner_is_us(x["owner"]) for x in r.lines("dlsym-nvml"))
    assert owner_is_us(r.one("dlsym-default")["owner"])


def test_dlsym_rtld_next_repeat_and_caller_relative(probe):
    """RTLD_NEXT keeps the caller's identity (tail jump): the probe's next 'open' is libc's, twice."""
    r = probe.run(["dlsym-next", "open", "dlsym-next", "open", "dlsym-next", "malloc"])
    for x in r.lines("dlsym-next"):
        assert x["same"] == "1"
        assert not owner_is_us(x["owner"])


@pytest.mark.parametrize(
    ("name", "ver", "flags", "want_owner", "want_sym"),
    [
        ("cuMemAlloc", "12000", "0", "us", "cuMemAlloc_v2"),
        ("cuMemAlloc", "3000", "0", "driver", "cuMemAlloc"),  # legacy 32-bit ABI: not wrapped
        ("cuLaunchKernel", "12000", "0", "us", "cuLaunchKernel"),
        ("cuLaunchKernel", "12000", PTDS, "us", "cuLaunchKernel_ptsz"),
        ("cuGetProcAddress", "12000", "0", "us", "cuGetProcAddress"),  # _v2 arrived in 12.5
        ("cuGetProcAddress", "12050", "0", "us", "cuGetProcAddress_v2"),
        ("cuInit", "12000", "0", "driver", "cuInit"),
    ],
)
def test_get_proc_address_honours_version_and_flags(probe, name, ver, flags, want_owner, want_sym):
    r = probe.run(["procaddr", name, ver, flags])
    p = r.one("procaddr")
    assert p["rc"] == "0" and p["rc1"] == "0"
    assert p["status"] == "0"  # CU_GET_PROC_ADDRESS_SUCCESS, filled by the driver
    for o, s in ((p["owner"], p["sym"]), (p["owner1"], p["sym1"])):
        assert owner_is_us(o) == (want_owner == "us")
        assert s == want_sym


@pytest.mark.parametrize("via", ["dlsym", "procaddr", "default"])
def test_every_resolution_route_enforces_the_limit(probe, via):
    r = probe.run(
        ["init", "ctx", "0", "alloc", "1g", "alloc", "1", "meminfo"], {"CUDA_DEVICE_MEMORY_LIMIT": "1g"}, via=via
    )
    assert [x["rc"] for x in r.lines("alloc")] == ["0", "2"]


def test_exports_only_driver_names_and_dlsym(vgpu_build):
    lib = vgpu_build.lib("plain")
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
    names = [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]
    bad = [n for n in names if not (n.startswith(("cu", "nvml")) or n == "dlsym")]
    assert names and not bad, bad


TEST_ONLY_NAMES = (b"CUDA_DISABLE_CONTROL", b"VGPU_TEST_STALL_IN_LOCK")


def test_shipped_library_has_no_kill_switch(vgpu_build, libvgpu_build):
    """Issue 18: CUDA_DISABLE_CONTROL=1 turned every limit off. The names of the test hooks are not
    even in the shipped library (make's release build, and this suite's production build); only
    the test build (-DVGPU_TEST_HOOKS) has them."""
    shipped = [vgpu_build.lib("plain")] + ([libvgpu_build.libvgpu] if libvgpu_build.libvgpu else [])
    for lib in shipped:
        data = lib.read_bytes()
        assert not [n for n in TEST_ONLY_NAMES if n in data], lib
    assert all(n in vgpu_build.lib("plain", hooks=True).read_bytes() for n in TEST_ONLY_NAMES)


def test_needs_no_glibc_private_symbols(vgpu_build):
    """HAMi-core #174: importing _dl_sym@GLIBC_PRIVATE broke loading on glibc >= 2.34; the real dlsym
    must be found through public interfaces only."""
    lib = vgpu_build.lib("plain")
    out = subprocess.run(["readelf", "-W", "--dyn-syms", "-V", str(lib)], capture_output=True, text=True, check=True)
    assert "GLIBC_PRIVATE" not in out.stdout
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(lib)], capture_output=True, text=True, check=True)
    assert not [line for line in undefined.stdout.splitlines() if "_dl_" in line], undefined.stdout


def test_no_side_effects_without_cuda(probe, tmp_path):
    """A process that never touches CUDA creates no region file and keeps its umask."""
    env = probe.env({"CUDA_DEVICE_MEMORY_LIMIT": "1g"})
    out = subprocess.run(["sh", "-c", "umask; ls / >/dev/null"], env=env, capture_output=True, text=True)
    assert (
        out.returncode == 0
        and out.stdout.strip() == subprocess.run(["sh", "-c", "umask"], capture_output=True, text=True).stdout.strip()
    )
    assert "libvgpu" not in out.stderr
    assert not probe.cache.exists()
