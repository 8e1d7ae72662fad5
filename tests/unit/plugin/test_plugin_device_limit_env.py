"""The VGPU_DEVICE_LIMIT_* entry: what the plugin writes is what the exporter (and libvgpu) reads."""

from __future__ import annotations

import pytest

from dra_hami import wire
from dra_hami.exporter.claims import claim_limits

UID = "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"
GPU = "GPU-11111111-2222-3333-4444-555555555555"


def test_written_entry_parses_back() -> None:
    entry = wire.device_limit_env(UID, 2, GPU, 4 << 30, 30)
    assert entry == f"VGPU_DEVICE_LIMIT_0f1e2d3c_2={GPU},{4 << 30},30"
    assert wire.parse_device_limit(entry) == (GPU, 4 << 30, 30)


@pytest.mark.parametrize(
    "entry",
    [
        "CUDA_DEVICE_MEMORY_LIMIT_0=4096m",
        "VGPU_DEVICE_LIMIT_x=GPU-1,4096",
        "VGPU_DEVICE_LIMIT_x=GPU-1,4g,30",
        "VGPU_DEVICE_LIMIT_x=GPU-1,4096,30,1",
        "VGPU_DEVICE_LIMIT_x",
    ],
)
def test_other_or_malformed_entries_are_not_limits(entry: str) -> None:
    assert wire.parse_device_limit(entry) is None


def test_claim_limits_sum_the_per_share_entries_of_older_specs() -> None:
    env = [
        wire.device_limit_env(UID, 0, GPU, 1 << 30, 20),
        wire.device_limit_env(UID, 1, GPU, 2 << 30, 30),
        wire.device_limit_env(UID, 2, "GPU-other", 5, 0),
        "VGPU_DEVICE_LIMIT_bad=GPU-x,oops,1",
    ]
    spec = {"devices": [{"containerEdits": {"env": env[:2]}}, {"containerEdits": {"env": env[2:]}}]}
    assert claim_limits(spec) == {GPU: (3 << 30, 50), "GPU-other": (5, 0)}
