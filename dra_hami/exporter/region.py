"""Read-only reader of libvgpu's per-claim shared accounting region (libvgpu/src/region.h).

The layout below mirrors the C structs; tests/unit/exporter/test_exporter_region_layout.py compiles a tiny
C program against region.h and fails when any offset here drifts from the header.

The file is written concurrently by the processes of the claim: every field we read is one naturally
aligned atomic word, so a read never sees half a number, but a header or device record can be caught
mid-initialisation. Such a snapshot is refused (RegionNotReady / RegionError), never guessed at.

The file and its directory belong to the tenant's containers, so the exporter (which can read any file on
the node) never lets them choose what it opens: the region is first opened with O_PATH|O_NOFOLLOW (no
symlink is followed; a FIFO or device node is not opened for real, so it cannot block or trigger a
driver), checked to be a regular file with one link and exactly the region's size, and only then re-opened
for reading through that very descriptor (RegionUnsafe otherwise).
"""

from __future__ import annotations

import errno
import os
import stat
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


class RegionUnsafe(RegionError):
    """The path is not a plain region file (a symlink, FIFO, device node, hard link, directory not owned by
    the plugin, or a file of another size): refused without reading it."""


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


def read_region(path: Path, dir_owner: int | None = None) -> RegionSnapshot | None:
    """A snapshot of the region at ``path``; None when the file does not exist (no process started yet).

    ``dir_owner``: the UID that must own the claim directory (the plugin's), when known.
    """
    fd = open_region(path, dir_owner)
    if fd is None:
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


_KINDS = {stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory"}  # fmt: skip


def open_region(path: Path, dir_owner: int | None = None) -> int | None:
    """A read-only descriptor of the region file after the checks above; None when it does not exist."""
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise RegionUnsafe(f"claim directory {path.parent} is not a directory (a symlink?)") from None
        raise
    try:
        if dir_owner is not None and (owner := os.fstat(dir_fd).st_uid) != dir_owner:
            raise RegionUnsafe(f"claim directory {path.parent} is owned by UID {owner}, not the plugin's {dir_owner}")
        try:
            path_fd = os.open(path.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(path_fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise RegionUnsafe(f"{path} is {kind}, not a regular file: not read")
        if st.st_nlink != 1:
            raise RegionUnsafe(f"{path} has {st.st_nlink} hard links (a region has one): not read")
        if st.st_size == 0:
            raise RegionNotReady("empty file (being created)")
        if st.st_size != TOTAL_SIZE:
            what = "shorter than" if st.st_size < TOTAL_SIZE else "not the size of"
            raise RegionError(f"{st.st_size} bytes, {what} a version {VERSION} region ({TOTAL_SIZE} bytes)")
        # The same inode, now opened for reading: nothing can be swapped in between.
        return os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    finally:
        os.close(path_fd)


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
