"""Fake GPU profiles expanded to GpuInfo (the YAML's schema and an example: dra_hami/api/fake_profile.py).

``defaults`` fill each entry, ``count`` repeats it; bus ids, minors and UUIDs not given are derived from the
profile's name and the GPU's position, so the same profile always yields the same devices.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from dra_hami.api.fake_profile import Profile
from dra_hami.discovery.model import DiscoveryError, GpuInfo, check_unique, sort_gpus

# Namespace of the derived UUIDs, so fake GPUs never collide with real ones (those are random).
_UUID_NAMESPACE = uuid.UUID("6f1d0c8e-3a55-4b8e-9a7c-6b2f9d1e4a10")


def load_profile_file(path: Path, name: str | None = None) -> list[GpuInfo]:
    """Read, validate and expand a profile file; every error names the file and the field."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise DiscoveryError(f"fake profile {path}: {err}") from err
    return profile_gpus(raw, name or path.stem, source=str(path))


def profile_gpus(raw: Any, name: str, source: str) -> list[GpuInfo]:
    try:
        profile = Profile.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in err.errors())
        raise DiscoveryError(f"fake profile {source}: {problems}") from None
    uuid_seed = profile.name or name
    defaults = profile.defaults.model_dump(exclude_none=True)
    gpus: list[GpuInfo] = []
    ordinal = 0
    for position, entry in enumerate(profile.gpus):
        fields = {**defaults, **entry.model_dump(exclude_none=True, exclude={"count"})}
        for field in ("product_name", "memory"):
            if field not in fields:
                raise DiscoveryError(
                    f"fake profile {source}: gpus.{position}: {to_camel(field)} is required here or in defaults"
                )
        for _ in range(entry.count):
            gpus.append(_gpu(fields, ordinal, uuid_seed, profile))
            ordinal += 1
    # Index (and, unless given, the minor) follow PCI order, as the NVIDIA driver numbers them.
    ordered = [
        replace(gpu, index=index, minor=gpu.minor if gpu.minor >= 0 else index)
        for index, gpu in enumerate(sort_gpus(gpus))
    ]
    check_unique(ordered, f"fake profile {source}")
    return ordered


def _gpu(fields: dict[str, Any], ordinal: int, seed: str, profile: Profile) -> GpuInfo:
    return GpuInfo(
        uuid=fields.get("uuid") or f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{seed}/{ordinal}')}",
        minor=fields.get("minor", -1),  # -1: not given, numbered after sorting
        index=ordinal,
        name=fields["product_name"],
        memory_bytes=fields["memory"],
        # Bus 1.., device 0..31: unique for thousands of GPUs, and ordered like the entries.
        pci_bus_id=fields.get("pci_bus_id") or f"0000:{(ordinal >> 5) + 1:02x}:{ordinal & 31:02x}.0",
        brand=fields.get("brand"),
        architecture=fields.get("architecture"),
        cuda_compute_capability=fields.get("cuda_compute_capability"),
        driver_version=profile.driver_version,
        cuda_driver_version=profile.cuda_driver_version,
        numa_node=fields.get("numa_node"),
        pcie_root=fields.get("pcie_root"),
        nvlink_group=fields.get("nvlink_group"),
        sm_count=fields.get("sm_count"),
    )


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"
