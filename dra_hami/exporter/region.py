"""Read-only reader of libvgpu's per-claim shared accounting region (libvgpu/src/region.h).

The layout below mirrors the C structs; tests/unit/exporter/test_exporter_region_layout.py compiles a tiny
C program against region.h and fails when any offset here drifts from the header.

The file is written concurrently by the processes of the claim: every field we read is one naturally
aligned atomic word, so a read never sees half a number, but a header or device record can be caught
mid-initialisation. Such a snapshot is refused (RegionNotReady / RegionError), never guessed at.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = 0x314D485355504756  # "VGPUSHM1" little endian
VERSION = 2  # libvgpu region.h VGPU_REGION_VERSION (2: own robust device locks, same byte layout)
MAX_DEVICES = 16
MAX_PROCS = 1024
UUID_LEN = 96

HEADER_SIZE = 4096
DEVICE_SIZE = 256
PROC_SIZE = 192
DEVICES_OFFSET = HEADER_SIZE
PROCS_OFFSET = HEADER_SIZE + MAX_DEVICES * DEVICE_SIZE
TOTAL_SIZE = PROCS_OFFSET + MAX_PROCS * PROC_SIZE

# struct vgpu_region_header
HDR_MAGIC = 0
HDR_VERSION = 8
HDR_HEADER_SIZE = 12
HDR_DEVICE_SIZE = 16
HDR_PROC_SIZE = 20
HDR_MAX_DEVICES = 24
HDR_MAX_PROCS = 28
HDR_TOTAL_SIZE = 32
HDR_PROC_HIGH = 40
HDR_DEVICE_COUNT = 52
HDR_LIM = 128
LIMITER_SIZE = 224  # struct vgpu_region_limiter
LIM_UTIL = 44

# struct vgpu_region_device
DEV_UUID = 64
DEV_USED = 160
DEV_LIMIT = 168
DEV_HAS_LIMIT = 176
DEV_SM_LIMIT = 180
DEV_PEAK = 184
DEV_UTIL = 192
DEV_ACTIVE_PROCS = 196

# struct vgpu_region_proc
PROC_STATE = 0
PROC_PID = 4
PROC_USED = 24
SLOT_ACTIVE = 1

_HEADER = struct.Struct("<QIIIIIIQIiiI")  # magic .. device_count (offsets 0..55)
_DEVICE_NUMBERS = struct.Struct("<QQIIQII")  # used, limit, has_limit, sm_limit, peak, util, active_procs
_PROC_STATE = struct.Struct("<I")


class RegionError(Exception):
    """The file is not a region of the layout we read (another version, truncated, garbage)."""


class RegionNotReady(RegionError):
    """The region is being created or a device record is being added: try again at the next scrape."""


@dataclass(frozen=True)
class RegionDevice:
    uuid: str  # as libvgpu wrote it, "GPU-..."
    used: int  # bytes charged by the live (not yet reclaimed) processes of the claim
    limit: int | None  # bytes; None = no limit published (no process ran yet, or unlimited)
    sm_limit: int  # percent of the GPU's SMs; 0 = no cap
    peak: int
    util: int  # last measured utilization attributed to the claim, percent


@dataclass(frozen=True)
class RegionSnapshot:
    devices: tuple[RegionDevice, ...]
    processes: int  # slots in use (live processes; dead ones until libvgpu reclaims them)

    def device(self, uuid: str) -> RegionDevice | None:
        key = uuid_key(uuid)
        for device in self.devices:
            if uuid_key(device.uuid) == key:
                return device
        return None


def uuid_key(uuid: str) -> str:
    """libvgpu compares UUIDs ignoring case and an optional "GPU-" prefix (vgpu_uuid_equal)."""
    lowered = uuid.strip().lower()
    return lowered[4:] if lowered.startswith("gpu-") else lowered


def read_region(path: Path) -> RegionSnapshot | None:
    """A snapshot of the region at ``path``; None when the file does not exist (no process started yet)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        head = os.pread(fd, PROCS_OFFSET, 0)
        snapshot_devices, proc_high = parse_head(head)
        processes = 0
        if proc_high:
            procs = os.pread(fd, proc_high * PROC_SIZE, PROCS_OFFSET)
            processes = count_active(procs, proc_high)
        return RegionSnapshot(snapshot_devices, processes)
    finally:
        os.close(fd)


def parse_head(head: bytes) -> tuple[tuple[RegionDevice, ...], int]:
    """The device records and proc_high from the first PROCS_OFFSET bytes of a region file."""
    if len(head) < PROCS_OFFSET:
        if len(head) == 0:
            raise RegionNotReady("empty file (being created)")
        raise RegionError(f"{len(head)} bytes, shorter than a version {VERSION} region ({TOTAL_SIZE} bytes)")
    (magic, version, header_size, device_size, proc_size, max_devices, max_procs, total_size, proc_high, _, _,
     device_count) = _HEADER.unpack_from(head, 0)  # fmt: skip
    if magic == 0:
        raise RegionNotReady("no magic yet (being initialised)")
    if magic != MAGIC:
        raise RegionError(f"magic {magic:#x} is not libvgpu's {MAGIC:#x}")
    layout = (version, header_size, device_size, proc_size, max_devices, max_procs, total_size)
    expected = (VERSION, HEADER_SIZE, DEVICE_SIZE, PROC_SIZE, MAX_DEVICES, MAX_PROCS, TOTAL_SIZE)
    if layout != expected:
        raise RegionError(f"layout {layout} (version, sizes) is not the one this exporter reads {expected}")
    devices = []
    for d in range(min(device_count, MAX_DEVICES)):
        base = DEVICES_OFFSET + d * DEVICE_SIZE
        raw_uuid = head[base + DEV_UUID : base + DEV_UUID + UUID_LEN].split(b"\0", 1)[0]
        if not raw_uuid:
            raise RegionNotReady(f"device record {d} has no UUID yet")
        try:
            uuid = raw_uuid.decode("ascii")
        except UnicodeDecodeError:
            raise RegionError(f"device record {d}: UUID is not ASCII") from None
        used, limit, has_limit, sm_limit, peak, util, _ = _DEVICE_NUMBERS.unpack_from(head, base + DEV_USED)
        devices.append(RegionDevice(uuid, used, limit if has_limit else None, sm_limit, peak, min(util, 100)))
    return tuple(devices), min(proc_high, MAX_PROCS)


def count_active(procs: bytes, proc_high: int) -> int:
    return sum(
        1
        for i in range(min(proc_high, len(procs) // PROC_SIZE))
        if _PROC_STATE.unpack_from(procs, i * PROC_SIZE + PROC_STATE)[0] == SLOT_ACTIVE
    )
