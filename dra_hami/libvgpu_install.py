"""Copying the libvgpu.so shipped in the package to the node's host directory, only when it changed.

The CDI specs mount <vgpu-dir>/libvgpu.so into every container, so replacing it must never expose a half-written
file: the copy goes to a temporary file in the same directory and is renamed over the old one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

PACKAGED = Path(__file__).resolve().parent / "lib" / "libvgpu.so"


class InstallError(Exception):
    pass


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install(dest_dir: Path, source: Path = PACKAGED) -> bool:
    """Puts ``source`` at ``dest_dir/libvgpu.so``; returns False when an identical file is already there."""
    if not source.is_file():
        raise InstallError(
            f"{source}: no libvgpu.so in this installation (wheels built with DRA_HAMI_LIBVGPU=<path> carry one; "
            "or pass --source)"
        )
    target = dest_dir / "libvgpu.so"
    if target.is_file() and sha256(target) == sha256(source):
        return False
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".libvgpu.so.", dir=dest_dir)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            while block := src.read(1 << 20):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
