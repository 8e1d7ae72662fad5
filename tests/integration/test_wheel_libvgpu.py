"""A wheel built with DRA_HAMI_LIBVGPU carries libvgpu.so, and the installed package copies it to the node."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build_wheel(out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)]
    return subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)


def test_wheel_ships_the_given_library(tmp_path: Path) -> None:
    library = tmp_path / "libvgpu.so"
    library.write_bytes(b"\x7fELF stand-in for the built library")
    done = build_wheel(tmp_path / "wheels", {"DRA_HAMI_LIBVGPU": str(library)})
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("dra_hami-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("dra_hami/lib/libvgpu.so") == library.read_bytes()


def test_a_wheel_built_without_it_carries_none(tmp_path: Path) -> None:
    library = tmp_path / "libvgpu.so"
    library.write_bytes(b"\x7fELF")
    assert build_wheel(tmp_path / "with", {"DRA_HAMI_LIBVGPU": str(library)}).returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "DRA_HAMI_LIBVGPU"}
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "w"),
         str(REPO)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (tmp_path / "w").glob("dra_hami-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert "dra_hami/lib/libvgpu.so" not in zf.namelist()  # nothing stale from the build before


def test_a_wrong_path_fails_the_build_with_the_variable_named(tmp_path: Path) -> None:
    done = build_wheel(tmp_path / "wheels", {"DRA_HAMI_LIBVGPU": str(tmp_path / "absent.so")})
    assert done.returncode != 0
    assert "DRA_HAMI_LIBVGPU" in done.stdout + done.stderr
