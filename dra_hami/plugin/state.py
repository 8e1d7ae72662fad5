"""Prepare and unprepare claims: idempotent, crash-safe, and recoverable after a reboot.

Order of effects for a prepare: record held in memory (PrepareStarted, for the capacity guard) -> claim
dir and CDI spec written -> checkpoint says PrepareCompleted (one fsynced write, shared by concurrent
prepares) -> answer. A crash anywhere leaves a state that the next prepare redoes and the next unprepare
(or the sweep, which removes specs and dirs no record names) undoes, so nothing is leaked and nothing
half-written is trusted. Claim dirs and specs are not fsynced: after a reboot (new boot id) they are
rebuilt from the checkpoint, which holds each spec.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from cdi import atomic_write
from dra_hami import wire
from dra_hami.kube import objects as k8s
from dra_hami.kube.client import ApiError
from dra_hami.plugin.capacity import admit
from dra_hami.plugin.cdi_spec import (
    CdiSettings,
    PreparedDevice,
    build_spec,
    claim_identity,
    limits_file,
    recorded_host_paths,
)
from dra_hami.plugin.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointTooNew,
    ClaimRecord,
    ClaimState,
    ShareUse,
)
from dra_hami.plugin.claim import ClaimError, NodeDevice, read_allocation
from dra_hami.plugin.claim_dirs import ClaimDirs
from dra_hami.plugin.limits_files import LimitsFiles

log = logging.getLogger(__name__)


class ClaimReader(Protocol):
    """The one API call a prepare makes (RawKubeApi has it)."""

    def get_resource_claim(self, namespace: str, name: str) -> dict[str, Any]: ...


class SpecStore(Protocol):
    """Where CDI specs live (the runtime's dynamic CDI dir); one spec per claim UID."""

    def write(self, claim_uid: str, spec: dict) -> None: ...

    def remove(self, claim_uid: str) -> None: ...

    def holds(self, claim_uid: str, spec: dict) -> bool:
        """Whether the claim's spec file exists with exactly this content."""
        ...

    def specs(self) -> dict[str, dict]:
        """Every spec this driver wrote, by claim UID (unreadable ones are skipped and logged)."""
        ...


@dataclass(frozen=True)
class ClaimRef:
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class PrepareResult:
    devices: tuple[PreparedDevice, ...] = ()
    error: str = ""


@dataclass
class SweepReport:
    unprepared: list[str]
    orphan_specs: list[str]
    orphan_dirs: list[str]


class PluginState:
    def __init__(
        self,
        api: ClaimReader,
        pool: str,
        devices: Callable[[], dict[str, NodeDevice]],
        settings: CdiSettings,
        specs: SpecStore,
        checkpoint: Checkpoint,
        boot_id: str,
        require_libvgpu: bool = True,
        api_workers: int = 16,
        claim_dirs: ClaimDirs | None = None,
    ):
        self._api = api
        self._pool = pool
        self._devices = devices
        self._settings = settings
        self._dirs = claim_dirs or ClaimDirs(settings.vgpu_dir / "claims")
        self._limits = LimitsFiles(settings.limits_root)
        self._specs = specs
        self._checkpoint = checkpoint
        self._boot_id = boot_id
        self._require_libvgpu = require_libvgpu
        self._lock = threading.Lock()  # guards _records and checkpoint writes
        self._claim_locks = ClaimLocks()
        self._pool_executor = ThreadPoolExecutor(api_workers, thread_name_prefix="claim-read")
        self._blocked = ""  # set when the checkpoint must not be touched (written by a newer version)
        self._pending_notice = ""  # told once to the kubelet after a corrupt checkpoint was rebuilt
        self._commits = GroupCommit(self._write_checkpoint)
        self._records = self._load()
        self._write_preload_file()

    # -- start-up -------------------------------------------------------------------------------------

    def _load(self) -> dict[str, ClaimRecord]:
        try:
            return self._checkpoint.load()
        except CheckpointTooNew as err:
            self._blocked = str(err)
            log.error("%s", err)
            return {}
        except CheckpointError as err:
            moved = self._checkpoint.quarantine()
            records = {}
            for uid, spec in self._specs.specs().items():
                namespace, name = claim_identity(spec)
                # PrepareStarted: a re-prepare rebuilds it from the API, the sweep removes it if gone.
                records[uid] = ClaimRecord(uid, namespace, name, ClaimState.STARTED, self._boot_id)
            self._checkpoint.save(records)
            self._pending_notice = (
                f"{err}; it was moved to {moved} and the state rebuilt from {len(records)} CDI spec(s): "
                "the kubelet will retry"
            )
            log.error("%s", self._pending_notice)
            return records

    def _write_preload_file(self) -> None:
        content = f"{wire.CONTAINER_LIBVGPU_PATH}\n".encode()
        path = self._settings.preload_path
        if not path.exists() or path.read_bytes() != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, content)

    # -- prepare --------------------------------------------------------------------------------------

    def prepare(self, claims: list[ClaimRef]) -> dict[str, PrepareResult]:
        if refusal := self._refusal():
            return {c.uid: PrepareResult(error=refusal) for c in claims}
        with self._locked(c.uid for c in claims):
            results: dict[str, PrepareResult] = {}
            todo: list[ClaimRef] = []
            for claim in claims:
                done = self._already_prepared(claim)
                if done is not None:
                    results[claim.uid] = done
                else:
                    todo.append(claim)
            if not todo:
                return results  # repeats only: answered from the checkpoint, no API server needed
            try:
                devices = self._devices()
            except Exception as err:  # InventoryError, or a bug: each claim gets the reason, none is lost
                results.update({c.uid: PrepareResult(error=f"the node's device inventory: {err}") for c in todo})
                return results
            planned = self._plan(todo, devices, results)
            if planned:
                self._commit(planned, devices, results)
            return results

    def _already_prepared(self, claim: ClaimRef) -> PrepareResult | None:
        """Answer a repeated prepare from the checkpoint, rebuilding what a reboot wiped."""
        record = self._records.get(claim.uid)
        if record is None or record.state is not ClaimState.COMPLETED or record.spec is None:
            return None
        try:
            self._rebuild(record)
        except OSError as err:
            return PrepareResult(error=f"rebuilding the CDI spec of claim {claim.uid}: {err}")
        return PrepareResult(devices=tuple(record.devices))

    def _rebuild(self, record: ClaimRecord) -> None:
        """Make a completed claim's claim dir and CDI spec what the checkpoint says (caller holds its lock)."""
        assert record.spec is not None
        if record.boot_id != self._boot_id:
            # No process of the previous boot is alive: its usage in the shared region is void.
            self._reset_claim_dir(record)
            self._specs.write(record.uid, record.spec)
            with self._lock:
                record.boot_id = self._boot_id
            self._persist()
        else:
            self._ensure_claim_dir(record)
            if not self._specs.holds(record.uid, record.spec):
                self._specs.write(record.uid, record.spec)  # heals a wiped or damaged CDI dir

    def heal(self) -> list[str]:
        """Rebuild the CDI specs and claim dirs of every completed claim that lost them (a wiped CDI dir).

        The kubelet prepares when it creates a pod sandbox, not when it restarts a container, so a spec
        that is only rewritten inside a prepare stays missing for running pods; this runs at start and in
        every sweep. Returns the UIDs rebuilt. Needs no API server."""
        healed = []
        with self._lock:
            records = [r for r in self._records.values() if r.state is ClaimState.COMPLETED and r.spec is not None]
        for record in records:
            with self._locked([record.uid]):
                if self._records.get(record.uid) is not record:
                    continue  # unprepared (or re-prepared) meanwhile
                intact = (
                    record.boot_id == self._boot_id
                    and self._specs.holds(record.uid, record.spec or {})
                    and self._dirs_of(record).intact(record.uid)
                    and self._limits_of(record).exists(record.uid)
                )
                if intact:
                    continue
                try:
                    self._rebuild(record)
                except (OSError, ValueError) as err:
                    log.error("rebuilding the CDI spec and claim dir of claim %s: %s", record.uid, err)
                    continue
                healed.append(record.uid)
        if healed:
            log.warning("rebuilt the CDI spec or claim dir of %d prepared claim(s): %s", len(healed), healed)
        return healed

    def _plan(
        self, claims: list[ClaimRef], devices: dict[str, NodeDevice], results: dict[str, PrepareResult]
    ) -> list[ClaimRecord]:
        """Read and check each claim (API reads in parallel) and build its spec; failures go to results."""
        planned = []
        if len(claims) == 1:  # the kubelet's usual call: no hand-off to a reader thread
            outcomes = [self._plan_one(claims[0], devices)]
        else:
            outcomes = list(self._pool_executor.map(lambda c: self._plan_one(c, devices), claims))
        for claim, outcome in zip(claims, outcomes, strict=True):
            if isinstance(outcome, str):
                results[claim.uid] = PrepareResult(error=outcome)
            else:
                planned.append(outcome)
        return planned

    def _plan_one(self, claim: ClaimRef, devices: dict[str, NodeDevice]) -> ClaimRecord | str:
        try:
            obj = self._api.get_resource_claim(claim.namespace, claim.name)
        except ApiError as err:
            if err.unreachable:
                return (
                    f"API server unreachable: reading ResourceClaim {claim.namespace}/{claim.name}: "
                    f"{err.message} (claims prepared before are still served; the kubelet retries this one)"
                )
            return f"reading ResourceClaim {claim.namespace}/{claim.name}: {err}"
        try:
            allocation = read_allocation(obj, claim.uid, self._settings.driver_name, self._pool, devices)
        except ClaimError as err:
            return str(err)
        spec, prepared = build_spec(allocation, devices, self._pool, self._settings)
        shares = [ShareUse(s.device, s.memory, s.cores) for s in allocation.shares if s.memory is not None]
        return ClaimRecord(
            claim.uid, claim.namespace, claim.name, ClaimState.STARTED, self._boot_id, spec, prepared, shares
        )

    def _commit(
        self, planned: list[ClaimRecord], devices: dict[str, NodeDevice], results: dict[str, PrepareResult]
    ) -> None:
        if self._require_libvgpu and not self._settings.libvgpu_path.is_file():
            error = (
                f"libvgpu is not installed at {self._settings.libvgpu_path} on this node: the DaemonSet's "
                "init container copies it there (check --libvgpu-path)"
            )
            results.update({r.uid: PrepareResult(error=error) for r in planned})
            return
        with self._lock:
            admitted = []
            for record in planned:
                # Checked and recorded under one lock: two batches cannot both take the last capacity.
                refusal = admit(record, self._records.values(), devices)
                if refusal:
                    log.error("claim %s/%s: %s", record.namespace, record.name, refusal)
                    results[record.uid] = PrepareResult(error=refusal)
                    continue
                self._records[record.uid] = record
                admitted.append(record)
        planned = admitted
        if not planned:
            return
        # The records are held in memory (PrepareStarted, counted by the capacity guard) but not written
        # yet: the claims' dirs and specs come first, then one checkpoint write records them completed. A
        # crash in between leaves a spec and a dir that no record names, which the next prepare rewrites
        # and the sweep removes (orphans), so the former PrepareStarted write bought nothing a second fsync.
        written = []
        for record in planned:
            try:
                self._reset_claim_dir(record)
                self._specs.write(record.uid, record.spec or {})
            except (OSError, ValueError) as err:
                try:
                    self._undo(record.uid)
                except (OSError, ValueError) as cleanup:
                    log.error("cleaning up the failed prepare of %s: %s", record.uid, cleanup)
                results[record.uid] = PrepareResult(error=f"writing the CDI spec of claim {record.uid}: {err}")
                continue
            written.append(record)
        with self._lock:
            for record in written:
                record.state = ClaimState.COMPLETED
        try:
            self._persist()
        except OSError as err:
            # The spec is usable; the record stays PrepareStarted and a retry completes it.
            with self._lock:
                for record in written:
                    record.state = ClaimState.STARTED
            results.update({r.uid: PrepareResult(error=f"writing the checkpoint: {err}") for r in written})
            return
        for record in written:
            results[record.uid] = PrepareResult(devices=tuple(record.devices))

    # -- unprepare ------------------------------------------------------------------------------------

    def unprepare(self, claims: list[ClaimRef]) -> dict[str, str]:
        """Error text per claim UID ('' when done). Unknown claims are cleaned by name and succeed."""
        if refusal := self._refusal():
            return {c.uid: refusal for c in claims}
        with self._locked(c.uid for c in claims):
            errors = {}
            for claim in claims:
                try:
                    self._undo(claim.uid)
                    errors[claim.uid] = ""
                except (OSError, ValueError) as err:  # ValueError: cdi.CDIError
                    errors[claim.uid] = f"removing the CDI spec or claim dir of {claim.uid}: {err}"
            return errors

    def _undo(self, claim_uid: str) -> None:
        record = self._records.get(claim_uid)
        self._dirs_of(record).remove(claim_uid)
        if record is not None and self._dirs_of(record) is not self._dirs:
            self._dirs.remove(claim_uid)  # a copy an earlier plugin version rebuilt under the new --vgpu-dir
        self._specs.remove(claim_uid)  # on failure the record stays, so a retry or the sweep finishes
        self._limits_of(record).remove(claim_uid)
        self._limits.remove(claim_uid)
        with self._lock:
            known = self._records.pop(claim_uid, None) is not None
        if known:
            self._persist()

    # -- periodic sweep -------------------------------------------------------------------------------

    def sweep(self) -> SweepReport:
        """Unprepare claims that no longer exist, and remove specs and dirs nobody recorded."""
        report = SweepReport([], [], [])
        if self._blocked:
            return report
        self.heal()
        with self._lock:
            records = list(self._records.values())
        for record in records:
            try:
                if not record.namespace or self._claim_exists(record):
                    continue  # a claim of unknown identity is kept: only the kubelet may unprepare it
            except ApiError as err:
                log.warning("sweep: cannot check claim %s/%s: %s", record.namespace, record.name, err)
                if err.unreachable:
                    break  # the others cannot be checked either; the next sweep tries again
                continue
            with self._locked([record.uid]):
                if record.uid in self._records:
                    self._undo(record.uid)
                    report.unprepared.append(record.uid)
        with self._lock:
            known = set(self._records)
        for uid in set(self._specs.specs()) - known:
            with self._locked([uid]):
                if uid not in self._records:
                    self._specs.remove(uid)
                    report.orphan_specs.append(uid)
        for name in self._limits.names():
            with self._locked([name]):
                if name not in self._records:
                    self._limits.remove(name)
        for name in self._dirs.names():
            with self._locked([name]):
                if name not in self._records:
                    try:
                        self._dirs.remove(name)
                    except OSError as err:
                        log.error("sweep: %s", err)
                        continue
                    report.orphan_dirs.append(name)
        if report.unprepared or report.orphan_specs or report.orphan_dirs:
            log.info("sweep: %s", report)
        return report

    def _claim_exists(self, record: ClaimRecord) -> bool:
        try:
            obj = self._api.get_resource_claim(record.namespace, record.name)
        except ApiError as err:
            if err.not_found:
                return False
            raise
        return k8s.meta(obj).get("uid") == record.uid

    # -- helpers --------------------------------------------------------------------------------------

    def _refusal(self) -> str:
        if self._blocked:
            return self._blocked
        notice, self._pending_notice = self._pending_notice, ""
        return notice

    def _locked(self, uids: Iterable[str]) -> AbstractContextManager[None]:
        return self._claim_locks.hold(uids)

    def _ensure_claim_dir(self, record: ClaimRecord) -> None:
        if not self._dirs_of(record).intact(record.uid):
            self._reset_claim_dir(record)
        elif not self._limits_of(record).exists(record.uid):
            self._write_limits(record)  # lost, or a claim prepared by a plugin version that did not write it

    def _reset_claim_dir(self, record: ClaimRecord) -> None:
        self._dirs_of(record).create(record.uid)
        self._write_limits(record)

    def _write_limits(self, record: ClaimRecord) -> None:
        self._limits_of(record).write(record.uid, limits_file(record.spec or {}))

    # A prepared claim lives where its spec (in the checkpoint) mounts it from, not under the current
    # --vgpu-dir: after hostPaths.vgpuDir moved, its containers still use the old place, and only that place
    # may be rebuilt and must be cleaned up.
    def _dirs_of(self, record: ClaimRecord | None) -> ClaimDirs:
        claim_dir = recorded_host_paths(record.spec, record.uid)[0] if record and record.spec else None
        if claim_dir is None or claim_dir.parent == self._dirs.root:
            return self._dirs
        return ClaimDirs(claim_dir.parent, self._dirs.storage, self._dirs.size)

    def _limits_of(self, record: ClaimRecord | None) -> LimitsFiles:
        limits = recorded_host_paths(record.spec, record.uid)[1] if record and record.spec else None
        if limits is None or limits.parent == self._limits.root:
            return self._limits
        return LimitsFiles(limits.parent)

    def _persist(self) -> None:
        """Make every change made so far durable; concurrent callers share one write (group commit)."""
        self._commits.wait_durable()

    def _write_checkpoint(self) -> None:
        with self._lock:
            content = self._checkpoint.encode(self._records)
        self._checkpoint.write(content)

    def records(self) -> dict[str, ClaimRecord]:
        with self._lock:
            return dict(self._records)

    def close(self) -> None:
        self._pool_executor.shutdown(wait=False, cancel_futures=True)


class GroupCommit:
    """Coalesce concurrent saves of one file: a caller returns once a save that started after its call
    has completed, so N concurrent changes cost one or two fsyncs instead of N."""

    def __init__(self, save: Callable[[], None]):
        self._save = save
        self._cond = threading.Condition()
        self._requested = 0
        self._durable = 0
        self._saving = False

    def wait_durable(self) -> None:
        with self._cond:
            self._requested += 1
            mine = self._requested
            while self._durable < mine:
                if self._saving:
                    self._cond.wait()
                    continue
                self._saving, target = True, self._requested
                self._cond.release()
                try:
                    self._save()
                finally:
                    self._cond.acquire()
                    self._saving = False
                    self._cond.notify_all()
                self._durable = max(self._durable, target)  # only reached when the save succeeded


class ClaimLocks:
    """One lock per claim UID while somebody holds or waits for it; the entry goes with its last user
    (a lock kept per UID forever grows with every claim the node ever prepared)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._entries: dict[str, list] = {}  # uid -> [lock, users]

    def __len__(self) -> int:
        with self._mutex:
            return len(self._entries)

    @contextmanager
    def hold(self, uids: Iterable[str]) -> Iterator[None]:
        """Acquire the UIDs' locks in sorted order (no deadlock between overlapping batches)."""
        keys = sorted(set(uids))
        with self._mutex:
            entries = []
            for key in keys:
                entry = self._entries.setdefault(key, [threading.Lock(), 0])
                entry[1] += 1
                entries.append(entry)
        acquired: list[threading.Lock] = []
        try:
            for entry in entries:
                entry[0].acquire()
                acquired.append(entry[0])
            yield
        finally:
            for lock in reversed(acquired):
                lock.release()
            with self._mutex:
                for key, entry in zip(keys, entries, strict=True):
                    entry[1] -= 1
                    if entry[1] == 0:
                        del self._entries[key]
