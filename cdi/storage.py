"""Spec files in a CDI directory (e.g. /var/run/cdi): atomic writes, removal, listing, reading.

Runtimes watch these directories and may read a file at any moment, so a spec only ever appears
complete: it is written to a hidden temp file in the same directory (same filesystem, so the rename
is atomic), fsynced, renamed over the final name, and the directory is fsynced so the rename
survives a crash. Temp files do not end in .json/.yaml, so runtimes ignore them.
"""

import contextlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import NamedTuple

import yaml

from .codec import parse_spec, spec_to_json
from .errors import CDIError
from .models import Spec
from .names import parse_kind
from .validation import validate_spec

log = logging.getLogger(__name__)

SPEC_SUFFIXES = (".json", ".yaml")
TEMP_SUFFIX = ".tmp"
_FILE_ID = re.compile(r"[A-Za-z0-9_.:-]+")


class SpecListing(NamedTuple):
    """Specs of one kind in a directory, plus the files of that kind that could not be loaded."""

    specs: dict[Path, Spec]
    errors: dict[Path, CDIError]


def spec_file_name(kind: str, file_id: str) -> str:
    """Transient-spec file name ``<vendor>-<class>_<id>.json``, '/' in the id replaced by '_'."""
    vendor, cls = parse_kind(kind)
    safe_id = file_id.replace("/", "_") if isinstance(file_id, str) else ""
    if not _FILE_ID.fullmatch(safe_id) or safe_id.startswith("."):
        raise CDIError(
            f'"{file_id}" must be non-empty, use only letters, digits, "_", ".", ":", "-" and "/" '
            'and not start with "."',
            "file id",
        )
    return f"{vendor}-{cls}_{safe_id}.json"


def spec_path(directory: str | os.PathLike[str], kind: str, file_id: str) -> Path:
    return Path(directory) / spec_file_name(kind, file_id)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(target: Path, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``target`` so readers see the old content or the new, never a mix, even across a crash.

    Temp file beside the target (hidden, so runtimes ignore it), fsync, rename, fsync the directory.
    ``durable=False`` leaves out both fsyncs: still atomic for every reader and across a crash of the
    writing process, but a power loss may lose the file; only for files the caller rebuilds after a reboot.
    Raises OSError; the temp file never outlives a failure.
    """
    directory = target.parent
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=TEMP_SUFFIX)
    tmp = Path(tmp_name)
    try:
        with open(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)  # mkstemp makes 0600; runtimes may not run as our user
            out.write(data)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.replace(tmp, target)
        if durable:
            _fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def write_spec(directory: str | os.PathLike[str], spec: Spec, file_id: str, durable: bool = True) -> Path:
    """Validate ``spec`` and write it atomically as ``<vendor>-<class>_<id>.json``; returns the path.

    Creates the directory if needed. Replaces an existing file of the same name. ``durable``: see
    ``atomic_write``.
    """
    validate_spec(spec)
    target = spec_path(directory, spec.kind, file_id)
    data = spec_to_json(spec).encode()
    try:
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as err:
        raise CDIError(f"cannot create CDI spec directory {target.parent}: {err.strerror or err}") from err
    try:
        atomic_write(target, data, durable=durable)
    except OSError as err:
        raise CDIError(f"cannot write CDI spec {target}: {err.strerror or err}") from err
    return target


def remove_spec(directory: str | os.PathLike[str], target: str | Path, kind: str | None = None) -> bool:
    """Remove a spec file; ``target`` is a ``Path`` to the file or a file id (then ``kind`` is needed).

    Idempotent: returns False when the file was already gone.
    """
    directory = Path(directory)
    if isinstance(target, Path):
        path = target if target.is_absolute() else directory / target
        if path.parent.resolve() != directory.resolve():
            raise CDIError(f"{path} is not in the CDI directory {directory}", "path")
    else:
        if kind is None:
            raise CDIError("kind is needed to remove a spec by file id", "kind")
        path = spec_path(directory, kind, target)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as err:
        raise CDIError(f"cannot remove CDI spec {path}: {err.strerror or err}") from err
    with contextlib.suppress(OSError):
        _fsync_dir(directory)  # best effort: a resurrected file is cleaned up again later
    return True


def read_spec(path: str | os.PathLike[str]) -> Spec:
    """Read and validate one spec file (JSON, or YAML for .yaml files)."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as err:
        raise CDIError(f"cannot read CDI spec {path}: {err.strerror or err}") from err
    try:
        return parse_spec(text, yaml_format=path.suffix == ".yaml")
    except CDIError as err:
        raise CDIError(f"{err.reason} (in {path})", err.field) from None


def _declared_kind(path: Path) -> object:
    """The raw ``kind`` of a file that failed validation, or None when it cannot be decoded."""
    try:
        text = path.read_bytes()
        data = yaml.safe_load(text) if path.suffix == ".yaml" else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return data.get("kind") if isinstance(data, dict) else None


def _is_spec_file(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix in SPEC_SUFFIXES and path.is_file()


def list_specs(directory: str | os.PathLike[str], kind: str) -> SpecListing:
    """The specs of ``kind`` in ``directory``, in file name order; never raises for bad files.

    Files that cannot be read or validated land in ``errors`` when they are ours (their raw kind is
    ``kind``, or their name carries our ``<vendor>-<class>`` prefix); others' files are skipped.
    A missing directory holds no specs.
    """
    vendor, cls = parse_kind(kind)
    prefix = f"{vendor}-{cls}"
    listing = SpecListing({}, {})
    try:
        entries = sorted(Path(directory).iterdir())
    except FileNotFoundError:
        return listing
    except OSError as err:
        raise CDIError(f"cannot list CDI directory {directory}: {err.strerror or err}") from err
    for path in entries:
        if not _is_spec_file(path):
            continue
        try:
            spec = read_spec(path)
        except CDIError as err:
            ours = _declared_kind(path) == kind or path.name in (f"{prefix}.json", f"{prefix}.yaml")
            if ours or path.name.startswith(f"{prefix}_"):
                listing.errors[path] = err
            else:
                log.debug("skipping CDI spec %s of another owner: %s", path, err)
            continue
        if spec.kind == kind:
            listing.specs[path] = spec
    return listing
