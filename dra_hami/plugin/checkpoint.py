"""The plugin's durable record of prepared claims: versioned, checksummed, replaced atomically (the file's
shape: dra_hami/api/checkpoint.py).

Each claim records the boot it was prepared in, so that after a reboot (CDI dir wiped, boot id changed)
a re-prepare rebuilds the spec instead of failing, and the spec content itself, so a rebuild needs no API.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from cdi import atomic_write
from dra_hami.api.checkpoint import KIND, VERSION, CheckpointData, ClaimEntry
from dra_hami.plugin.cdi_spec import PreparedDevice


class CheckpointError(Exception):
    """The checkpoint file cannot be used as it is."""


class CheckpointTooNew(CheckpointError):
    pass


class ClaimState(StrEnum):
    STARTED = "PrepareStarted"  # spec may or may not be on disk: redo or undo, never trust
    COMPLETED = "PrepareCompleted"


@dataclass(frozen=True)
class ShareUse:
    """What one share of a prepared claim takes of a GPU (the node-side capacity guard adds these up)."""

    device: str
    memory: int  # bytes
    cores: int

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "memory": self.memory, "cores": self.cores}


@dataclass
class ClaimRecord:
    uid: str
    namespace: str
    name: str
    state: ClaimState
    boot_id: str
    spec: dict[str, Any] | None = None
    devices: list[PreparedDevice] = field(default_factory=list)
    # None: recorded by a plugin version that did not keep it (read back from the spec when needed)
    shares: list[ShareUse] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        # Any assignment (state, boot id ...) voids the cached encoding; the spec dict is never changed in place.
        object.__setattr__(self, "_canonical", None)
        object.__setattr__(self, name, value)

    def canonical(self) -> str:
        """``"<uid>":<record>`` in canonical JSON (sorted keys, compact), computed once per change: every
        checkpoint write re-encodes all records, and encoding them anew each time made a prepare's cost grow
        with the number of claims already prepared on the node."""
        cached = getattr(self, "_canonical", None)
        if cached is None:
            record = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
            cached = f"{json.dumps(self.uid)}:{record}"
            object.__setattr__(self, "_canonical", cached)
        return cached

    def to_json(self) -> dict[str, Any]:
        data = {
            "namespace": self.namespace,
            "name": self.name,
            "state": self.state.value,
            "bootID": self.boot_id,
            "spec": self.spec,
            "devices": [d.to_json() for d in self.devices],
        }
        if self.shares is not None:
            data["shares"] = [s.to_json() for s in self.shares]
        return data

    @classmethod
    def from_entry(cls, uid: str, entry: ClaimEntry) -> ClaimRecord:
        return cls(
            uid=uid,
            namespace=entry.namespace,
            name=entry.name,
            state=ClaimState(entry.state),
            boot_id=entry.boot_id,
            spec=entry.spec,
            devices=[
                PreparedDevice(tuple(d.request_names), d.pool_name, d.device_name, tuple(d.cdi_device_ids), d.share_id)
                for d in entry.devices
            ],
            shares=None if entry.shares is None else [ShareUse(s.device, s.memory, s.cores) for s in entry.shares],
        )


def _canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _checksum_text(canonical: str) -> str:
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _checksum(data: dict[str, Any]) -> str:
    return _checksum_text(_canonical(data))


@dataclass
class Checkpoint:
    path: Path

    def load(self) -> dict[str, ClaimRecord]:
        """Records by claim UID; an absent file is an empty checkpoint."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            document = json.loads(raw)
            version = document["version"]
            if document.get("kind") != KIND:
                raise CheckpointError(f"{self.path}: kind is {document.get('kind')!r}, expected {KIND!r}")
            if not isinstance(version, int):
                raise CheckpointError(f"{self.path}: version {version!r} is not an integer")
            if version > VERSION:
                raise CheckpointTooNew(
                    f"{self.path}: checkpoint version {version} was written by a newer dra-hami "
                    f"(this one reads up to {VERSION}); upgrade the plugin or move the file aside"
                )
            data = document["data"]
            if document.get("checksum") != _checksum(data):
                raise CheckpointError(f"{self.path}: checksum mismatch, the file is corrupt")
            claims = CheckpointData.model_validate(data).claims
            return {uid: ClaimRecord.from_entry(uid, entry) for uid, entry in claims.items()}
        except CheckpointError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{self.path}: unreadable checkpoint ({err.__class__.__name__}: {err})") from err

    def save(self, records: dict[str, ClaimRecord]) -> None:
        self.write(self.encode(records))

    @staticmethod
    def encode(records: dict[str, ClaimRecord]) -> bytes:
        # ``data`` is written in its canonical form (what the checksum covers), assembled from each record's
        # cached canonical text: exactly json.dumps(data, sort_keys=True, separators=(",", ":")), since
        # sort_keys orders the claims by UID as sorted() does here.
        if any(uid != rec.uid for uid, rec in records.items()):
            raise ValueError("checkpoint records must be keyed by their claim UID")
        claims = ",".join(rec.canonical() for _, rec in sorted(records.items()))
        data = f'{{"claims":{{{claims}}}}}'
        checksum = _checksum_text(data)
        return f'{{"kind":"{KIND}","version":{VERSION},"checksum":"{checksum}","data":{data}}}'.encode()

    def write(self, content: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, content, mode=0o600)

    def quarantine(self) -> Path:
        """Move an unusable checkpoint aside (kept for inspection, never deleted) and return its new path."""
        target = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        self.path.rename(target)
        return target


def read_boot_id(path: Path = Path("/proc/sys/kernel/random/boot_id")) -> str:
    return path.read_text().strip()
