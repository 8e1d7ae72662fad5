"""GPU discovery: what the node has, from NVML or from a fake profile."""

from __future__ import annotations

from dra_hami.discovery.fake import FakeDiscovery, builtin_profiles
from dra_hami.discovery.model import Discovery, DiscoveryError, GpuInfo

__all__ = ["Discovery", "DiscoveryError", "FakeDiscovery", "GpuInfo", "builtin_profiles", "load_discovery"]


def load_discovery(fake_profile: str | None = None) -> Discovery:
    """Fake GPUs when a profile (built-in name or YAML path) is given, else NVML; raises DiscoveryError."""
    if fake_profile:
        return FakeDiscovery.from_profile(fake_profile)
    from dra_hami.discovery.nvml import NvmlDiscovery  # imports pynvml only where it is needed

    return NvmlDiscovery()
