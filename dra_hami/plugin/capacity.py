"""The node-side guard against over-commit: the claims prepared on a GPU never add up past its capacity.

The controller's allocator should never over-commit a GPU, and leader election should never let two
controllers act at once; this is the last line if either fails (two leaders during a partition, a hand-written
allocation): a prepare that would take a GPU's prepared memory, cores or shares past what the node
publishes is refused, naming the claims already there, and the pod does not start on an over-committed GPU.
Pure: the caller passes the records and the published devices, under its own lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dra_hami import wire
from dra_hami.plugin.checkpoint import ClaimRecord, ShareUse
from dra_hami.plugin.claim import NodeDevice


@dataclass
class _Load:
    memory: int = 0
    cores: int = 0
    shares: int = 0
    claims: list[str] | None = None


def record_shares(record: ClaimRecord) -> list[ShareUse]:
    """The shares a record holds; for records of older versions, read back from their CDI spec."""
    if record.shares is not None:
        return record.shares
    out = []
    spec_devices = (record.spec or {}).get("devices") or []
    for prepared, spec_device in zip(record.devices, spec_devices, strict=False):
        for entry in (spec_device.get("containerEdits") or {}).get("env") or []:
            key, _, value = entry.partition("=")
            if key.startswith(wire.ENV_DEVICE_LIMIT_PREFIX):
                _uuid, memory, cores = value.split(",")
                out.append(ShareUse(prepared.device_name, int(memory), int(cores)))
    return out


def _label(record: ClaimRecord) -> str:
    return f"{record.namespace}/{record.name} ({record.uid})"


def _amount(memory: int) -> str:
    return f"{memory // wire.MEMORY_STEP}Mi"


def admit(planned: ClaimRecord, held: Iterable[ClaimRecord], devices: dict[str, NodeDevice]) -> str:
    """'' if ``planned`` fits next to ``held`` on every GPU it uses, else why not (naming the claims)."""
    mine: dict[str, _Load] = {}
    for share in record_shares(planned):
        want = mine.setdefault(share.device, _Load())
        want.memory += share.memory
        want.cores += share.cores
        want.shares += 1
    # Runs on every prepare over every prepared claim: only the GPUs the planned claim uses are added up.
    loads: dict[str, _Load] = {}
    for record in held:
        if record.uid == planned.uid:
            continue
        for share in record_shares(record):
            if share.device not in mine:
                continue
            load = loads.setdefault(share.device, _Load(claims=[]))
            load.memory += share.memory
            load.cores += share.cores
            load.shares += 1
            assert load.claims is not None
            label = _label(record)
            if label not in load.claims:
                load.claims.append(label)
    for name, want in sorted(mine.items()):
        device = devices.get(name)
        if device is None:
            continue  # read_allocation already refused a device this node does not publish
        have = loads.get(name, _Load(claims=[]))
        over = []
        if have.memory + want.memory > device.memory:
            over.append(
                f"memory {_amount(have.memory)} prepared + {_amount(want.memory)} asked > {_amount(device.memory)}"
            )
        if have.cores + want.cores > wire.CORES_TOTAL:
            over.append(f"cores {have.cores} prepared + {want.cores} asked > {wire.CORES_TOTAL}")
        if device.shares and have.shares + want.shares > device.shares:
            over.append(f"shares {have.shares} prepared + {want.shares} asked > {device.shares}")
        if over:
            return (
                f"refusing to over-commit GPU {name}: {'; '.join(over)}; already prepared there: "
                f"{', '.join(have.claims or []) or 'none'}. Two allocations took the same capacity (two "
                "controllers acting at once, or an allocation written by hand): delete one of the claims"
            )
    return ""
