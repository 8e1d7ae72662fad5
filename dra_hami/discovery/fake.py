"""Fake GPUs for nodes without any: from a built-in profile, a YAML file, or a list set by a test."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from dra_hami.discovery.model import DiscoveryError, GpuInfo, check_unique, sort_gpus
from dra_hami.discovery.profile import load_profile_file

PROFILES_DIR = Path(__file__).parent / "profiles"


def builtin_profiles() -> list[str]:
    return sorted(path.stem for path in PROFILES_DIR.glob("*.yaml"))


def resolve_profile(profile: str) -> Path:
    """A built-in name (``t4x2``) or a path to a YAML file."""
    builtin = PROFILES_DIR / f"{profile}.yaml"
    if "/" not in profile and builtin.is_file():
        return builtin
    path = Path(profile)
    if path.is_file():
        return path
    raise DiscoveryError(
        f"fake profile {profile!r}: no such file and not a built-in profile ({', '.join(builtin_profiles())})"
    )


class FakeDiscovery:
    """Serves a fixed inventory, or re-reads its profile file on every call so a test can edit it live."""

    def __init__(self, gpus: Sequence[GpuInfo] = (), path: Path | None = None):
        self._lock = threading.Lock()
        self._gpus = sort_gpus(list(gpus))
        self._path = path
        if path is not None:
            self._gpus = load_profile_file(path)  # fail at start, not at the first publish

    @classmethod
    def from_profile(cls, profile: str) -> FakeDiscovery:
        return cls(path=resolve_profile(profile))

    @property
    def path(self) -> Path | None:
        return self._path

    def set_gpus(self, gpus: Sequence[GpuInfo]) -> None:
        """Replace the inventory (and stop following the profile file)."""
        ordered = sort_gpus(list(gpus))
        check_unique(ordered, "FakeDiscovery.set_gpus")
        with self._lock:
            self._gpus = ordered
            self._path = None

    def discover(self) -> list[GpuInfo]:
        with self._lock:
            if self._path is not None:
                self._gpus = load_profile_file(self._path)
            return list(self._gpus)
