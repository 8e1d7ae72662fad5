"""`dra-hami demo --output DIR`: write the demo's files and nothing else.

A directory is the demo's when it holds the marker file, which lists what the last run wrote; only those files are
ever replaced or removed. Any other non-empty directory is refused unless --force, and even then only files
with the demo's names are written: nothing already there is deleted (``--output /etc`` must not touch /etc/cdi).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

MARKER = ".dra-hami-demo"


class OutputError(ValueError):
    """--output names a directory the demo must not write into; the message says why and what to do."""


def check_output(directory: Path, force: bool) -> None:
    """Raises OutputError unless ``directory`` is new, empty, the demo's own, or ``force`` is given."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise OutputError(f"--output {directory}: exists and is not a directory")
    if (directory / MARKER).is_file() or force:
        return
    entries = sorted(p.name for p in directory.iterdir())
    if entries:
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise OutputError(
            f"--output {directory}: not empty ({shown}) and not written by dra-hami demo (no {MARKER} file); "
            f"name a new or empty directory, or pass --force to write the demo's files (resourceslices.yaml, "
            f"claims.yaml, cdi/*.json) beside what is there (nothing else is changed or deleted)"
        )


def _previous(directory: Path) -> list[str]:
    try:
        names = json.loads((directory / MARKER).read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [n for n in names if isinstance(n, str)]


def write_output(
    directory: Path, slices: list[dict[str, Any]], claims: list[dict[str, Any]], cdi_dir: Path
) -> list[str]:
    """Write the demo's files; remove only files an earlier demo run listed in the marker. Returns what it wrote."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cdi").mkdir(exist_ok=True)
    written = ["resourceslices.yaml", "claims.yaml"]
    (directory / "resourceslices.yaml").write_text(yaml.safe_dump_all(slices, sort_keys=False))
    (directory / "claims.yaml").write_text(yaml.safe_dump_all(claims, sort_keys=False))
    for spec in sorted(cdi_dir.glob("*.json")):
        shutil.copy2(spec, directory / "cdi" / spec.name)
        written.append(f"cdi/{spec.name}")
    for stale in set(_previous(directory)) - set(written):
        path = directory / stale
        # Only plain files of ours, inside the directory (the marker is a file anyone could edit).
        if path.resolve().is_relative_to(directory.resolve()) and path.is_file() and not path.is_symlink():
            path.unlink()
    (directory / MARKER).write_text(json.dumps({"writer": "dra-hami demo", "files": written}, indent=1) + "\n")
    return written
