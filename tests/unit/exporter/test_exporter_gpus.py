"""Per-GPU usage: NVML (with a stand-in pynvml) and the fake backend's sum of the claims."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pynvml as real
import pytest

from dra_hami.discovery import FakeDiscovery
from dra_hami.exporter.gpus import FakeGpuStats, GpuUsage, NvmlGpuStats

GPU = FakeDiscovery.from_profile("t4x2").discover()[0]


class Nvml(SimpleNamespace):
    def __init__(self) -> None:
        super().__init__(NVMLError=real.NVMLError, NVML_ERROR_NOT_SUPPORTED=real.NVML_ERROR_NOT_SUPPORTED)
        self.lookups = 0
        self.memory_error: int | None = None
        self.util_error: int | None = None

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        self.lookups += 1
        return uuid

    def nvmlDeviceGetMemoryInfo(self, handle: str):
        if self.memory_error is not None:
            raise real.NVMLError(self.memory_error)
        return SimpleNamespace(used=3 << 30, total=16 << 30)

    def nvmlDeviceGetUtilizationRates(self, handle: str):
        if self.util_error is not None:
            raise real.NVMLError(self.util_error)
        return SimpleNamespace(gpu=42, memory=7)


def test_nvml_usage_caches_handles_and_survives_errors(caplog: pytest.LogCaptureFixture) -> None:
    nvml = Nvml()
    stats = NvmlGpuStats(nvml)
    assert stats.usage(GPU, 0, 0) == GpuUsage(3 << 30, 16 << 30, 42)
    stats.usage(GPU, 0, 0)
    assert nvml.lookups == 1
    nvml.util_error = real.NVML_ERROR_NOT_SUPPORTED
    assert stats.usage(GPU, 0, 0) == GpuUsage(3 << 30, 16 << 30, None)
    nvml.memory_error = real.NVML_ERROR_GPU_IS_LOST
    with caplog.at_level(logging.WARNING):
        assert stats.usage(GPU, 0, 0) == GpuUsage()
        assert stats.usage(GPU, 0, 0) == GpuUsage()
    assert len([m for m in caplog.messages if "cannot read the usage" in m]) == 1  # once per episode
    nvml.memory_error = None
    nvml.util_error = None
    assert stats.usage(GPU, 0, 0) == GpuUsage(3 << 30, 16 << 30, 42)
    assert nvml.lookups >= 2  # the handle was looked up again after the failure


def test_fake_usage_is_the_claims_sum_capped() -> None:
    assert FakeGpuStats().usage(GPU, 5, 250) == GpuUsage(5, GPU.memory_bytes, 100)
    assert FakeGpuStats().usage(GPU, GPU.memory_bytes * 2, 0).memory_used == GPU.memory_bytes
