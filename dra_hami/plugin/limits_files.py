"""Per-claim limits files on the host: the only source of a claim's limits its processes cannot rewrite.

``<vgpu-dir>/limits/<claim uid>`` is written at prepare (root-owned, mode 0444, outside the claim's
tenant-writable directory) and bind-mounted read-only by the claim's CDI spec at
``/usr/local/vgpu/limits/<claim uid>``, the directory libvgpu reads (fixed at compile time). When such a
file is present libvgpu takes its limits from it alone; variables a process sets may only lower them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from cdi import atomic_write
from dra_hami.plugin.claim_dirs import entries


class LimitsFiles:
    """The limits root (``<vgpu-dir>/limits``) and one file per claim UID in it."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, claim_uid: str) -> Path:
        return self.root / claim_uid

    def names(self) -> list[str]:
        """The claim UIDs that have a file (temp files of an interrupted write included: they start with '.')."""
        return entries(self.root)

    def exists(self, claim_uid: str) -> bool:
        return self.path(claim_uid).is_file()

    def write(self, claim_uid: str, text: str) -> Path:
        """Write the claim's file atomically (a container started meanwhile sees all of it or none)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # only root writes here; containers get their file through a bind mount
        path = self.path(claim_uid)
        # Not fsynced, like the claim's CDI spec: after a reboot (the only way to lose unsynced data) the boot id
        # differs and the next prepare, or heal at start, rewrites it from the checkpoint before any container
        # of the claim can start.
        atomic_write(path, text.encode(), mode=0o444, durable=False)
        return path

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()
