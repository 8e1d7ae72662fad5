"""The one list of libvgpu's control variables (dra_hami.wire) covers every name libvgpu reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dra_hami import wire

SRC = Path(__file__).resolve().parents[2] / "libvgpu" / "src"
# A C string literal that looks like an environment variable name (upper case with an underscore).
NAME = re.compile(r'"([A-Z][A-Z0-9]*_[A-Z0-9_]*)"')


def names_in_libvgpu() -> set[str]:
    names: set[str] = set()
    for path in sorted(SRC.glob("*.[ch]")):
        names.update(NAME.findall(path.read_text()))
    return names


def test_every_variable_libvgpu_reads_is_a_control_variable() -> None:
    names = names_in_libvgpu()
    assert {"CUDA_DEVICE_MEMORY_LIMIT", "VGPU_DEVICE_LIMIT_", "CUDA_DISABLE_CONTROL"} <= names  # the scan works
    missed = sorted(n for n in names if not wire.is_control_env(n) and not wire.is_control_env(n + "0"))
    assert missed == [], f"libvgpu reads {missed}: add them to wire.CONTROL_ENV_NAMES/PREFIXES"


@pytest.mark.parametrize(
    "name",
    [
        "CUDA_DEVICE_MEMORY_LIMIT",
        "CUDA_DEVICE_MEMORY_LIMIT_3",
        "CUDA_DEVICE_SM_LIMIT_0",
        "VGPU_DEVICE_LIMIT_zz",
        "CUDA_DISABLE_CONTROL",
        "CUDA_DEVICE_MEMORY_SHARED_CACHE",
        "VGPU_CLAIMS_DIR",
        "GPU_CORE_UTILIZATION_POLICY",
    ],
)
def test_control_variables(name: str) -> None:
    assert wire.is_control_env(name)


@pytest.mark.parametrize("name", ["CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "PATH", "HOME", "DRA_HAMI_CLAIM"])
def test_ordinary_variables(name: str) -> None:
    assert not wire.is_control_env(name)
