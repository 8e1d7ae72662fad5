"""The reader against regions written by the real libvgpu (preloaded into a program on the fake driver)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from dra_hami.exporter.region import read_region

BUILD = Path(__file__).resolve().parents[3] / "libvgpu" / "build"
LIB, FAKE, ALLOC = BUILD / "libvgpu.so", BUILD / "fake", BUILD / "programs" / "alloc"
UUID = "GPU-3f2a61b0-1111-4000-8000-000000000001"
MiB = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def built_libvgpu() -> None:
    """Builds libvgpu and its fake driver when absent (a skip would hide the test in a fresh clone's CI run)."""
    if not (LIB.is_file() and ALLOC.is_file() and (FAKE / "libcuda.so.1").is_file()):
        done = subprocess.run(["make", "-C", str(BUILD.parent), "-j2"], capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"make -C libvgpu failed:\n{(done.stdout + done.stderr)[-3000:]}", pytrace=False)


def test_usage_of_a_live_process_and_its_release(tmp_path: Path) -> None:
    region = tmp_path / "claims" / "uid" / "vgpu.cache"
    region.parent.mkdir(parents=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LD_LIBRARY_PATH": str(FAKE),
        "LD_PRELOAD": str(LIB),
        "FAKE_CUDA_STATE": str(tmp_path / "fake.state"),
        "FAKE_CUDA_UUIDS": UUID,
        "FAKE_CUDA_MEMORY": "16g",
        "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(region),
        "VGPU_DEVICE_LIMIT_ab_0": f"{UUID},{1024 * MiB},30",
    }
    proc = subprocess.Popen(
        [str(ALLOC), "--size=256m", "--hold=-1"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            if line.strip() == "ready=1" or time.monotonic() > deadline:
                break
        snap = read_region(region)
        assert snap is not None and snap.processes == 1
        device = snap.device(UUID)
        assert device is not None
        assert (device.used, device.limit, device.sm_limit, device.peak) == (256 * MiB, 1024 * MiB, 30, 256 * MiB)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)
    after = read_region(region)
    assert after is not None and after.processes == 0
    device = after.device(UUID)
    assert device is not None and device.used == 0 and device.peak == 256 * MiB


def test_reading_while_processes_create_and_register_never_fails(tmp_path: Path) -> None:
    """Scrape-style reads in a loop while 8 processes create the region and register at once: every read is
    a valid snapshot or a counted 'not ready' skip, never an exception, and the end state is exact."""
    from dra_hami.exporter.collector import RegionReader

    region = tmp_path / "vgpu.cache"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LD_LIBRARY_PATH": str(FAKE),
        "LD_PRELOAD": str(LIB),
        "FAKE_CUDA_STATE": str(tmp_path / "fake.state"),
        "FAKE_CUDA_UUIDS": UUID,
        "FAKE_CUDA_MEMORY": "16g",
        "FAKE_CUDA_SHADOW_MAX": "0",
        "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(region),
        "VGPU_DEVICE_LIMIT_ab_0": f"{UUID},{4096 * MiB},0",
    }
    reader = RegionReader()
    reads = 0
    ready = 0

    def read() -> None:
        nonlocal reads, ready
        snapshot, _ = reader.read("uid", region)
        reads += 1
        if snapshot is not None and (device := snapshot.device(UUID)) is not None:
            assert device.used % (32 * MiB) == 0 and device.used <= 8 * 32 * MiB
            ready = device.used // (32 * MiB)

    procs: list[subprocess.Popen] = []
    try:
        for _ in range(8):  # a read after each start: reads overlap the creation however fast the processes are
            procs.append(
                subprocess.Popen(
                    [str(ALLOC), "--size=32m", "--hold=-1"],
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
            read()
        deadline = time.monotonic() + 60
        while ready < len(procs) and time.monotonic() < deadline:
            read()
        snapshot, readable = reader.read("uid", region)
        assert readable and snapshot is not None
        assert snapshot.processes == 8
        device = snapshot.device(UUID)
        assert device is not None and device.used == 8 * 32 * MiB and device.limit == 4096 * MiB
        assert reads >= len(procs)
        assert set(reader.errors) <= {"not_ready"}
    finally:
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
        for p in procs:
            p.wait(timeout=60)
