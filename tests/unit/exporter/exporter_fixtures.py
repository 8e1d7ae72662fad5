"""Test material for the exporter: a region writer that follows region.h, and prepared-claim records built
with the plugin's own spec builder (so the exporter is tested against what the plugin really writes)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from dra_hami.discovery.model import GpuInfo
from dra_hami.exporter import region as r
from dra_hami.plugin.cdi_spec import CdiSettings, build_spec
from dra_hami.plugin.checkpoint import Checkpoint, ClaimRecord, ClaimState
from dra_hami.plugin.claim import ClaimAllocation, NodeDevice, Share

DRIVER = "hami-core-gpu.project-hami.io"
NODE = "node-a"
GiB = 1 << 30


@dataclass
class DeviceRecord:
    uuid: str
    used: int = 0
    limit: int | None = None
    sm_limit: int = 0
    peak: int = 0
    util: int = 0


@dataclass
class RegionContent:
    devices: list[DeviceRecord] = field(default_factory=list)
    processes: int = 0
    magic: int = r.MAGIC
    version: int = r.VERSION
    device_count: int | None = None  # defaults to len(devices)


def write_region(path: Path, content: RegionContent) -> None:
    buf = bytearray(r.TOTAL_SIZE)
    count = len(content.devices) if content.device_count is None else content.device_count
    struct.pack_into(
        "<QIIIIIIQIiiI",
        buf,
        0,
        content.magic,
        content.version,
        r.HEADER_SIZE,
        r.DEVICE_SIZE,
        r.PROC_SIZE,
        r.MAX_DEVICES,
        r.MAX_PROCS,
        r.TOTAL_SIZE,
        content.processes,
        1,
        0,
        count,
    )
    for d, dev in enumerate(content.devices):
        base = r.DEVICES_OFFSET + d * r.DEVICE_SIZE
        raw = dev.uuid.encode()
        buf[base + r.DEV_UUID : base + r.DEV_UUID + len(raw)] = raw
        struct.pack_into(
            "<QQIIQII",
            buf,
            base + r.DEV_USED,
            dev.used,
            dev.limit or 0,
            0 if dev.limit is None else 1,
            dev.sm_limit,
            dev.peak,
            dev.util,
            content.processes,
        )
    for i in range(content.processes):
        struct.pack_into("<Ii", buf, r.PROCS_OFFSET + i * r.PROC_SIZE, r.SLOT_ACTIVE, 1000 + i)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(buf))


def node_devices(gpus: list[GpuInfo]) -> dict[str, NodeDevice]:
    return {g.device_name: NodeDevice(g.device_name, g.uuid, g.minor, g.pci_bus_id, g.memory_bytes) for g in gpus}


def claim_record(
    uid: str,
    name: str,
    shares: list[tuple[str, int | None, int]],
    gpus: list[GpuInfo],
    namespace: str = "default",
    vgpu_dir: Path = Path("/usr/local/vgpu"),
) -> ClaimRecord:
    """shares: (device name, memory bytes or None for admin access, cores)."""
    allocation = ClaimAllocation(
        uid,
        namespace,
        name,
        tuple(Share("gpu", device, f"share-{i}", memory, cores) for i, (device, memory, cores) in enumerate(shares)),
    )
    settings = CdiSettings(DRIVER, vgpu_dir, vgpu_dir / "libvgpu.so")
    spec, prepared = build_spec(allocation, node_devices(gpus), NODE, settings)
    return ClaimRecord(uid, namespace, name, ClaimState.COMPLETED, "boot", spec, prepared)


def save_checkpoint(plugin_dir: Path, records: list[ClaimRecord]) -> Path:
    path = plugin_dir / "checkpoint.json"
    Checkpoint(path).save({rec.uid: rec for rec in records})
    return path
