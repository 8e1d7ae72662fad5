"""Run a CUDA test program the way a container of a prepared claim would: the CDI spec's environment,
libvgpu preloaded, and the fake driver showing only the claim's GPU."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dra_hami import wire
from dra_hami.discovery import GpuInfo
from dra_hami.plugin.cdi_spec import CONTAINER_CLAIMS_DIR

LIBVGPU_DIR = Path(__file__).resolve().parents[2] / "libvgpu"


@dataclass(frozen=True)
class AllocRun:
    cap: int
    first_size: int
    first_result: str
    second_result: str
    total_mem: int  # cuDeviceTotalMem
    info_total: int  # cuMemGetInfo while the first allocation is held
    info_free: int


def ensure_built(echo) -> Path | None:
    """The libvgpu build dir, building it once when make and a C compiler are present."""
    build = LIBVGPU_DIR / "build"
    if (build / "libvgpu.so").is_file() and (build / "programs" / "alloc").is_file():
        return build
    if not (LIBVGPU_DIR / "Makefile").is_file() or not shutil.which("make") or not shutil.which("cc"):
        return None
    echo("  building libvgpu and its fake driver once (make -C libvgpu) ...")
    done = subprocess.run(["make", "-C", str(LIBVGPU_DIR), "-j2"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        echo(f"  libvgpu did not build:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        return None
    return build


def container_env(spec: dict[str, Any], device_name: str, vgpu_dir: Path) -> dict[str, str]:
    """What the runtime puts in the environment for one CDI device, host paths swapped in."""
    entries = list((spec.get("containerEdits") or {}).get("env") or [])
    for device in spec["devices"]:
        if device["name"] == device_name:
            entries += device["containerEdits"].get("env") or []
    env = dict(entry.split("=", 1) for entry in entries)
    # The shared region lives in the claim dir, mounted from the host: use the host side here.
    env[wire.ENV_SHARED_CACHE] = env[wire.ENV_SHARED_CACHE].replace(str(CONTAINER_CLAIMS_DIR), str(vgpu_dir / "claims"))
    return env


def run_alloc(build: Path, env: dict[str, str], gpu: GpuInfo, cap: int) -> AllocRun:
    """Allocate 3/4 of the cap twice: the first fits, the second must hit the cap."""
    size = (cap * 3 // 4) >> 20 << 20
    fake_env = {
        "FAKE_CUDA_DEVICE_COUNT": "1",
        "FAKE_CUDA_UUIDS": gpu.uuid,
        "FAKE_CUDA_MEMORY": str(gpu.memory_bytes),
        "FAKE_CUDA_PCI_BUS_IDS": gpu.pci_bus_id,
        "FAKE_CUDA_NAME": gpu.name,
    }
    process_env = {**os.environ, **env, **fake_env}
    process_env["LD_PRELOAD"] = str(build / "libvgpu.so")
    process_env["LD_LIBRARY_PATH"] = str(build / "fake")
    done = subprocess.run(
        [str(build / "programs" / "alloc"), f"--size={size}", "--count=2"],
        env=process_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    if "result" not in values:
        raise RuntimeError(f"alloc printed no result (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return AllocRun(
        cap=cap,
        first_size=size,
        first_result="CUDA_SUCCESS" if int(values["count"]) >= 1 else values["result"],
        second_result=values["result"],
        total_mem=int(values["total_mem"]),
        info_total=int(values["info_total_during"]),
        info_free=int(values["info_free_during"]),
    )
