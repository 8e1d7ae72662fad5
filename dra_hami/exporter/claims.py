"""Prepared claims as the exporter sees them: the plugin's checkpoint joined with the node's GPUs (pure core
plus a small cached reader; the checkpoint is only ever read)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dra_hami import wire
from dra_hami.discovery.model import GpuInfo, pci_sort_key
from dra_hami.plugin.checkpoint import Checkpoint, CheckpointError, ClaimRecord, ClaimState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimGpu:
    device: str  # hami-gpu-<minor>
    uuid: str
    index: int  # CUDA ordinal inside the claim's containers (PCI order; HAMi's "vdeviceid")
    memory_limit: int | None  # bytes; None = unlimited (admin access)
    cores: int  # SM cap in percent; 0 = none


@dataclass(frozen=True)
class PreparedClaim:
    uid: str
    namespace: str
    name: str
    gpus: tuple[ClaimGpu, ...]


def claim_limits(spec: dict | None) -> dict[str, tuple[int, int]]:
    """(bytes, cores) per GPU UUID from the spec's VGPU_DEVICE_LIMIT_* entries. One entry (one name) is
    counted once although every share device of its GPU carries it; distinct entries of one GPU (one per
    share, in specs of older plugins) are summed."""
    entries: dict[str, str] = {}
    for device in (spec or {}).get("devices") or []:
        for entry in ((device.get("containerEdits") or {}).get("env")) or []:
            entries.setdefault(entry.partition("=")[0], entry)
    limits: dict[str, tuple[int, int]] = {}
    for entry in entries.values():
        parsed = wire.parse_device_limit(entry)
        if parsed is not None:
            uuid, memory, cores = parsed
            have = limits.get(uuid, (0, 0))
            limits[uuid] = (have[0] + memory, have[1] + cores)
    return limits


def prepared_claim(record: ClaimRecord, gpus: dict[str, GpuInfo]) -> PreparedClaim:
    """The claim's GPUs in the order its containers see them; devices no longer discovered are left out."""
    names = {device.device_name for device in record.devices}
    known = sorted((gpus[name] for name in names if name in gpus), key=lambda gpu: pci_sort_key(gpu.pci_bus_id))
    limits = claim_limits(record.spec)
    out = []
    for index, gpu in enumerate(known):
        memory, cores = limits.get(gpu.uuid, (None, 0))
        out.append(ClaimGpu(gpu.device_name, gpu.uuid, index, memory, min(cores, wire.CORES_TOTAL)))
    return PreparedClaim(record.uid, record.namespace, record.name, tuple(out))


def prepared_claims(records: Iterable[ClaimRecord], gpus: Iterable[GpuInfo]) -> list[PreparedClaim]:
    by_name = {gpu.device_name: gpu for gpu in gpus}
    return [
        prepared_claim(record, by_name)
        for record in sorted(records, key=lambda r: r.uid)
        if record.state is ClaimState.COMPLETED
    ]


class CheckpointReader:
    """Re-reads the plugin's checkpoint only when the file changed; a bad read keeps the last good one."""

    def __init__(self, path: Path):
        self._checkpoint = Checkpoint(path)
        self._stamp: tuple[int, int, int] | None = None
        self._records: list[ClaimRecord] = []

    @property
    def path(self) -> Path:
        return self._checkpoint.path

    def records(self) -> list[ClaimRecord]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._records = None, []
            return []
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)  # atomic_write replaces the inode
        if stamp != self._stamp:
            self._stamp = stamp  # a bad file is reported once per version of it, not once per scrape
            try:
                self._records = list(self._checkpoint.load().values())
            except (CheckpointError, OSError) as err:
                # The plugin rewrites it atomically, so this is a real problem, not a torn read: say so.
                log.warning("cannot read the plugin checkpoint, serving the last good one: %s", err)
        return self._records
