"""Per-claim directories on the host: made at prepare, removed at unprepare, whatever a tenant left in them.

The claim's containers share their claim directory read-write (libvgpu's region file lives there), so it
must not be a foothold on the host:

* the claims root (``<vgpu-dir>/claims``) is 0700 and owned by the plugin (root): nothing on the host but
  the plugin and the exporter can reach into it; containers get their own claim directory bind-mounted;
* with ``storage="tmpfs"`` (the default) each claim directory is its own tmpfs, mounted
  ``nosuid,nodev,noexec`` with a size and an inode bound: a tenant cannot fill the host's disk (the
  checkpoint and the CDI specs live there), and a setuid binary or device node it plants is inert. The
  plugin needs CAP_SYS_ADMIN for that, and the claims' mounts must reach the host (a Bidirectional
  volume in the chart). Without those rights prepares fail with an error that says so;
  ``storage="directory"`` (plain directories on the host filesystem, no bound, no mount options) must be
  chosen explicitly and is meant for tests and single-user demos only;
* removal never recurses and never gives up the claim: a tmpfs is unmounted (its content goes with it),
  what cannot be removed from a plain directory is moved aside under a ``.trash-`` name, so the claim's
  unprepare succeeds and the periodic sweep retries the leftovers (each attempt logged with the reasons).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import time
from pathlib import Path
from typing import Literal

from dra_hami.plugin.tree_removal import TreeRemovalError, remove_tree

log = logging.getLogger(__name__)

Storage = Literal["tmpfs", "directory"]
STORAGES: tuple[Storage, ...] = ("tmpfs", "directory")
TRASH_PREFIX = ".trash-"
DEFAULT_SIZE = 8 << 20  # the region is about 200 KiB; room for libvgpu's other per-claim files
MAX_INODES = 1024  # tmpfs inode bound: a tenant cannot exhaust kernel memory with empty files
CLAIM_DIR_MODE = 0o777  # containers of any UID sharing the claim must create and open the region

# <sys/mount.h>
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MNT_DETACH, UMOUNT_NOFOLLOW = 0x2, 0x8


def entries(root: Path) -> list[str]:
    """The names in ``root``, sorted; none when it does not exist yet (nothing was prepared since boot)."""
    try:
        return sorted(os.listdir(root))
    except FileNotFoundError:
        return []


class ClaimDirError(OSError):
    """A claim directory could not be made or removed; the message names the path, the cause and the fix."""


class ClaimDirs:
    """The claims root and one directory per claim UID below it."""

    def __init__(self, root: Path, storage: Storage = "directory", size: int = DEFAULT_SIZE):
        if storage not in STORAGES:
            raise ValueError(f"claim directory storage {storage!r}: choose one of {', '.join(STORAGES)}")
        if size < 256 << 10:
            raise ValueError(f"claim directory size {size} bytes: at least 256Ki (the shared region alone is 200Ki)")
        self.root = root
        self.storage = storage
        self.size = size

    def path(self, claim_uid: str) -> Path:
        return self.root / claim_uid

    def names(self) -> list[str]:
        """Every entry of the claims root: claim UIDs and leftovers moved aside by an earlier removal."""
        return entries(self.root)

    def ensure_root(self) -> None:
        """The claims root exists, is 0700 and (when the plugin is root) root-owned."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(self.root)
        if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
            os.chown(self.root, 0, 0, follow_symlinks=False)
        if st.st_mode & 0o7777 != 0o700:
            self.root.chmod(0o700)

    def intact(self, claim_uid: str) -> bool:
        """The claim's directory exists as this storage makes it (a tmpfs is still mounted there)."""
        path = self.path(claim_uid)
        return path.is_dir() and (self.storage == "directory" or os.path.ismount(path))

    def create(self, claim_uid: str) -> Path:
        """A fresh, empty directory for the claim (whatever was there before is removed first)."""
        self.ensure_root()
        self.remove(claim_uid)
        path = self.path(claim_uid)
        path.mkdir(mode=0o700)
        if self.storage == "directory":
            path.chmod(CLAIM_DIR_MODE)
            return path
        options = f"size={self.size},nr_inodes={MAX_INODES},mode={CLAIM_DIR_MODE:o}"
        try:
            _mount_tmpfs(path, MS_NOSUID | MS_NODEV | MS_NOEXEC, options)
        except OSError as err:
            path.rmdir()
            raise ClaimDirError(
                err.errno,
                f"mounting the claim's tmpfs ({options},nosuid,nodev,noexec) on {path}: {err.strerror}. The "
                "kubelet plugin needs CAP_SYS_ADMIN and a mount-propagating (Bidirectional) volume for "
                f"{self.root}; --claim-dir-storage=directory avoids the mount but gives up the size bound and "
                "nosuid/nodev/noexec (tests and demos only)",
            ) from None
        return path

    def remove(self, name: str) -> None:
        """Remove a claim's directory (unmounting its tmpfs first). Leftovers that resist are moved aside
        (the sweep retries them); ClaimDirError is raised only when even that fails."""
        path = self.root / name
        self._unmount(path)
        try:
            remove_tree(path)
        except FileNotFoundError:
            return
        except TreeRemovalError as err:
            if name.startswith(TRASH_PREFIX):
                raise  # already aside: the sweep logs it and tries again next round
            aside = self.root / f"{TRASH_PREFIX}{name}-{time.time_ns()}"
            try:
                os.rename(path, aside)
            except OSError as rename_err:
                raise ClaimDirError(rename_err.errno, f"{err}; moving it aside failed: {rename_err}") from err
            log.error("%s; moved what is left to %s, the sweep retries it", err, aside)

    def _unmount(self, path: Path) -> None:
        """Unmount everything stacked on ``path`` (a crash between mount and checkpoint can stack two)."""
        for _ in range(16):
            if not os.path.ismount(path):
                return
            try:
                _umount(path, UMOUNT_NOFOLLOW)
            except OSError as err:
                if err.errno != errno.EBUSY:
                    raise ClaimDirError(err.errno, f"unmounting the claim's tmpfs at {path}: {err.strerror}") from None
                # Still in use (a container that outlived its pod?): detach now, the kernel frees it when
                # the last user goes. The claim's name is free again either way.
                log.warning("claim tmpfs %s is busy; detaching it lazily", path)
                _umount(path, UMOUNT_NOFOLLOW | MNT_DETACH)
        raise ClaimDirError(errno.EBUSY, f"{path}: still a mount point after 16 unmounts")


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _mount_tmpfs(path: Path, flags: int, options: str) -> None:
    if _libc.mount(b"dra-hami-claim", os.fsencode(path), b"tmpfs", flags, options.encode()) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))


def _umount(path: Path, flags: int) -> None:
    if _libc.umount2(os.fsencode(path), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))
