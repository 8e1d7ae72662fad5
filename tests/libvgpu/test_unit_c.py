# ruff: noqa: F811  (pytest fixtures imported from helpers_libvgpu are used as parameters)
"""Builds and runs the C unit tests of libvgpu/tests/unit (parser, config, allocation table,
shared region incl. multi-process races and kill -9, liveness when the lock query fails) in the
plain, ASan and UBSan variants."""

from __future__ import annotations

import subprocess

import pytest
from helpers_libvgpu import SRC, UNIT, compile_c, variant, vgpu_build  # noqa: F401


@pytest.mark.parametrize("name", ["size", "config", "alloc", "region", "liveness"])
def test_unit(vgpu_build, variant, name):
    exe = vgpu_build.root / f"test_{name}-{variant}"
    if not exe.exists():
        compile_c(exe, [UNIT / f"test_{name}.c", *sorted(SRC.glob("*.c"))], vgpu_build.inc, variant)
    env = {
        "ASAN_OPTIONS": "detect_leaks=1",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
        "PATH": "/usr/bin:/bin",
    }
    res = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().endswith("ok")
