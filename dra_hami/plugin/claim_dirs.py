"""Per-claim directories on the host: made at prepare, removed at unprepare, whatever a tenant left in them.

The claim's containers share the directory read-write (libvgpu's region file lives there), so at
unprepare it may hold anything. Removal never recurses and never gives up the claim: what cannot be
removed is moved aside under a ``.trash-`` name, so the claim's unprepare succeeds and the periodic
sweep retries the leftovers (each attempt is logged with the paths and the reasons).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from dra_hami.plugin.tree_removal import TreeRemovalError, remove_tree

log = logging.getLogger(__name__)

TRASH_PREFIX = ".trash-"


class ClaimDirs:
    """The claims root (``<vgpu-dir>/claims``) and one directory per claim UID below it."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, claim_uid: str) -> Path:
        return self.root / claim_uid

    def names(self) -> list[str]:
        """Every entry of the claims root: claim UIDs and leftovers moved aside by an earlier removal."""
        try:
            return sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []

    def create(self, claim_uid: str) -> Path:
        """A fresh, empty directory for the claim (whatever was there before is removed first)."""
        self.remove(claim_uid)
        path = self.path(claim_uid)
        path.mkdir(parents=True)
        path.chmod(0o777)  # containers of any UID sharing the claim must open the region read-write
        return path

    def remove(self, name: str) -> None:
        """Remove the claim's directory. Leftovers that resist are moved aside (the sweep retries them);
        an OSError is raised only when even that fails, naming the path and the reason."""
        path = self.root / name
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
                raise TreeRemovalError(rename_err.errno, f"{err}; moving it aside failed: {rename_err}") from err
            log.error("%s; moved what is left to %s, the sweep retries it", err, aside)
