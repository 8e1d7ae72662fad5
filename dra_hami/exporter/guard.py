"""The node guard: driver-truth enforcement of each claim's memory cap, whatever its processes did to libvgpu.

libvgpu enforces a claim's slice inside the container, precisely, but only for processes that load it: a
static binary, a process with its own loader or one that issues the driver's ioctls itself escapes it.
The guard looks from outside. Every ``interval`` seconds it asks NVML which processes hold memory on each
GPU (the driver's own accounting), attributes each process to a claim using only facts the tenant cannot
forge (``procfs``: for a process of a pod, the claim directory in its mount table, else its pod's UID
matched against the claim's reservedFor), and compares each claim's total with the cap the plugin prepared:

* ``event`` (the default): a claim over its cap is exported as a metric, logged and reported as a
  Kubernetes Event on the ResourceClaim, once per episode;
* ``kill``: additionally, once a claim has been over its cap for ``grace`` seconds, its largest process on
  that GPU gets SIGKILL (through a pidfd, after checking that the PID still names the same process),
  one process per poll until the claim is back under its cap.

Processes that see several claims' directories are judged against the sum of those claims' caps on the
GPU. Memory held by processes of no claim (host processes, pods given a GPU outside any claim) is
exported as ``dra_hami_guard_unattributed_memory_bytes`` and never acted on.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dra_hami.exporter.claims import PreparedClaim
from dra_hami.exporter.procfs import MountEntry, ProcFs, device_id, parse_mountinfo

log = logging.getLogger(__name__)

GuardAction = Literal["off", "event", "kill"]
GUARD_ACTIONS: tuple[GuardAction, ...] = ("off", "event", "kill")
COMPONENT = "dra-hami-node-guard"


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    uuid: str
    used: int  # bytes the driver charges to the process on the GPU


class ProcessSource(Protocol):
    def processes(self, uuids: Iterable[str]) -> list[GpuProcess]:
        """Every process holding memory on these GPUs; a GPU that cannot be read is left out (and logged)."""
        ...


@dataclass(frozen=True)
class ClaimMount:
    """How the claim's directory shows in a process's mount table."""

    device: str  # major:minor
    root: str  # "/" for the claim's own tmpfs; the directory's path within its filesystem otherwise
    whole: bool  # the claim directory is a mount of its own: the root must be "/" exactly

    def matches(self, entry: MountEntry) -> bool:
        if entry.device != self.device:
            return False
        return entry.root == "/" if self.whole else entry.root == self.root


@dataclass(frozen=True)
class GuardedClaim:
    claim: PreparedClaim
    mount: ClaimMount | None
    pod_uids: frozenset[str]

    def limit(self, uuid: str) -> int | None:
        """The claim's cap on the GPU; None when it has none there (unlimited) or does not use that GPU."""
        for gpu in self.claim.gpus:
            if gpu.uuid == uuid:
                return gpu.memory_limit
        return None

    def uses(self, uuid: str) -> bool:
        return any(gpu.uuid == uuid for gpu in self.claim.gpus)


@dataclass(frozen=True)
class Attributed:
    process: GpuProcess
    claims: tuple[str, ...]  # claim UIDs; empty: no claim
    by: Literal["mount", "cgroup", "none"]
    start_time: int | None  # with the PID: the process the guard saw (a reused PID is never killed)


@dataclass(frozen=True)
class Verdict:
    """One claim (or claims seen together by one process) on one GPU in one poll."""

    claims: tuple[str, ...]
    uuid: str
    used: int
    limit: int | None  # None: unlimited
    processes: tuple[Attributed, ...]

    @property
    def over(self) -> bool:
        return self.limit is not None and self.used > self.limit


def claim_mount(claims_root: Path, uid: str) -> ClaimMount | None:
    """The claim directory's identity as the exporter sees it (None when it does not exist)."""
    path = claims_root / uid
    try:
        st = os.lstat(path)
        parent = os.lstat(claims_root)
    except OSError:
        return None
    whole = st.st_dev != parent.st_dev
    return ClaimMount(device_id(st.st_dev), "/" if whole else _path_in_filesystem(path), whole)


def _path_in_filesystem(path: Path) -> str:
    """``path`` relative to the root of the filesystem it lives on, as mountinfo's root field shows it."""
    best: MountEntry | None = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            entries = parse_mountinfo(f.read())
    except OSError:
        return str(path)
    text = str(path)
    for entry in entries:
        point = entry.mount_point.rstrip("/") or "/"
        if (text == point or text.startswith(point.rstrip("/") + "/")) and (
            best is None or len(point) >= len(best.mount_point)
        ):
            best = entry
    if best is None:
        return text
    rest = text[len(best.mount_point.rstrip("/")) :]
    return (best.root.rstrip("/") + rest) or "/"


def attribute(processes: Iterable[GpuProcess], claims: dict[str, GuardedClaim], proc: ProcFs) -> list[Attributed]:
    """Each process's claims. Only processes of a pod count (a kubepods cgroup with a pod UID): a host
    process shares the host's mount table, which holds every claim's directory. Within a pod the claim
    directories in the process's own mount table decide; the pod's UID against the claims' reservedFor
    is the fallback (a process that unmounted its claim directory in a namespace of its own)."""
    out = []
    for process in processes:
        users = [c for c in claims.values() if c.uses(process.uuid)]
        found: tuple[str, ...] = ()
        by: Literal["mount", "cgroup", "none"] = "none"
        pod = proc.pod_uid(process.pid) if users else None
        if pod:
            mounts = proc.mounts(process.pid) or []
            found = tuple(sorted(c.claim.uid for c in users if c.mount and any(c.mount.matches(m) for m in mounts)))
            by = "mount" if found else by
            if not found:
                found = tuple(sorted(c.claim.uid for c in users if pod in c.pod_uids))
                by = "cgroup" if found else by
        out.append(Attributed(process, found, by, proc.start_time(process.pid)))
    return out


def judge(attributed: Iterable[Attributed], claims: dict[str, GuardedClaim]) -> list[Verdict]:
    """Usage against caps per GPU; claims that share a process on a GPU are judged together."""
    by_gpu: dict[str, list[Attributed]] = {}
    for a in attributed:
        if a.claims:
            by_gpu.setdefault(a.process.uuid, []).append(a)
    verdicts = []
    for uuid, items in sorted(by_gpu.items()):
        for uids, group in _groups(items):
            limits = [claims[u].limit(uuid) for u in uids]
            limit = None if any(x is None for x in limits) else sum(x for x in limits if x is not None)
            used = sum(a.process.used for a in group)
            verdicts.append(Verdict(uids, uuid, used, limit, tuple(group)))
    return verdicts


def _groups(items: list[Attributed]) -> list[tuple[tuple[str, ...], list[Attributed]]]:
    """Processes grouped by connected claims (union-find over the claims each process sees)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a in items:
        for uid in a.claims[1:]:
            parent[find(uid)] = find(a.claims[0])
    groups: dict[str, list[Attributed]] = {}
    members: dict[str, set[str]] = {}
    for a in items:
        root = find(a.claims[0])
        groups.setdefault(root, []).append(a)
        members.setdefault(root, set()).update(a.claims)
    return [(tuple(sorted(members[root])), group) for root, group in groups.items()]


class Killer(Protocol):
    def kill(self, pid: int, start_time: int | None) -> str:
        """SIGKILL the process if ``pid`` still names the process started at ``start_time``; '' or why not."""
        ...


class PidfdKiller:
    """Signals through a pidfd opened before the identity check: the PID cannot be reused in between."""

    def __init__(self, proc: ProcFs):
        self._proc = proc

    def kill(self, pid: int, start_time: int | None) -> str:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return "the process already ended"
        except OSError as err:
            return f"pidfd_open: {err.strerror}"
        try:
            if start_time is None or self._proc.start_time(pid) != start_time:
                return "the PID names another process now"
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            return ""
        except ProcessLookupError:
            return "the process already ended"
        except OSError as err:
            return f"kill: {err.strerror} (the exporter needs CAP_KILL and hostPID)"
        finally:
            os.close(fd)


class EventSink(Protocol):
    def emit(self, claim: PreparedClaim, reason: str, message: str) -> None: ...


class ApiEvents:
    """Kubernetes Events on the ResourceClaim, sent by a thread of their own: a slow API server never
    delays a poll (or a kill). At most ``backlog`` wait; more are dropped and counted."""

    def __init__(self, api: Any, node: str, backlog: int = 100):
        self._api = api
        self._node = node
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(backlog)
        self.dropped = 0
        self.failed = 0
        threading.Thread(target=self._run, name="guard-events", daemon=True).start()

    def emit(self, claim: PreparedClaim, reason: str, message: str) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{claim.name}.{time.time_ns():x}", "namespace": claim.namespace},
            "involvedObject": {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaim",
                "namespace": claim.namespace,
                "name": claim.name,
                "uid": claim.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning",
            "source": {"component": COMPONENT, "host": self._node},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                self._api.request("POST", f"/api/v1/namespaces/{event['metadata']['namespace']}/events", body=event)
            except Exception as err:  # an event is best effort: the metric and the log carry the same news
                self.failed += 1
                log.warning("node guard: cannot record event %s: %s", event["reason"], err)


@dataclass
class _Episode:
    since: float
    verdict: Verdict


@dataclass
class GuardState:
    """What the metrics show: the last poll's verdicts and the counters since start."""

    verdicts: list[Verdict] = field(default_factory=list)
    unattributed: Counter[str] = field(default_factory=Counter)  # uuid -> bytes
    attributed_by: Counter[tuple[str, str]] = field(default_factory=Counter)  # (uuid, how) -> processes
    violations: Counter[tuple[str, str]] = field(default_factory=Counter)  # (claim uid, uuid) -> episodes
    kills: Counter[tuple[str, str]] = field(default_factory=Counter)  # (claim uid, uuid) -> processes
    polls: int = 0
    poll_errors: int = 0
    last_poll: float = 0.0


class NodeGuard(Collector):
    def __init__(
        self,
        node: str,
        action: GuardAction,
        grace: float,
        claims_root: Path,
        claims: Callable[[], list[PreparedClaim]],
        pod_uids: Callable[[PreparedClaim], frozenset[str]],
        source: ProcessSource,
        proc: ProcFs | None = None,
        killer: Killer | None = None,
        events: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if action not in GUARD_ACTIONS:
            raise ValueError(f"guard action {action!r}: choose one of {', '.join(GUARD_ACTIONS)}")
        self._node = node
        self.action = action
        self.grace = grace
        self._claims_root = claims_root
        self._claims = claims
        self._pod_uids = pod_uids
        self._source = source
        self._proc = proc or ProcFs()
        self._killer = killer or PidfdKiller(self._proc)
        self._events = events
        self._clock = clock
        self._episodes: dict[tuple[tuple[str, ...], str], _Episode] = {}
        self._lock = threading.Lock()
        self._state = GuardState()
        self._by_uid: dict[str, PreparedClaim] = {}

    # -- one look at the driver -------------------------------------------------------------------------

    def poll(self) -> list[Verdict]:
        now = self._clock()
        prepared = self._claims()
        claims = {c.uid: GuardedClaim(c, claim_mount(self._claims_root, c.uid), self._pod_uids(c)) for c in prepared}
        uuids = sorted({gpu.uuid for c in prepared for gpu in c.gpus})
        attributed = attribute(self._source.processes(uuids), claims, self._proc) if uuids else []
        verdicts = judge(attributed, claims)
        self._act(verdicts, {c.uid: c for c in prepared}, now)
        with self._lock:
            state = self._state
            state.verdicts = verdicts
            state.unattributed = Counter()
            state.attributed_by = Counter()
            for a in attributed:
                state.attributed_by[(a.process.uuid, a.by)] += 1
                if not a.claims:
                    state.unattributed[a.process.uuid] += a.process.used
            state.polls += 1
            state.last_poll = time.time()
            self._by_uid = {c.uid: c for c in prepared}
            live = set(self._by_uid)
            for counter in (state.violations, state.kills):
                for key in [k for k in counter if k[0] not in live]:
                    del counter[key]
        return verdicts

    def _act(self, verdicts: list[Verdict], by_uid: dict[str, PreparedClaim], now: float) -> None:
        seen = set()
        for v in verdicts:
            key = (v.claims, v.uuid)
            if not v.over:
                continue
            seen.add(key)
            names = ", ".join(f"{by_uid[u].namespace}/{by_uid[u].name}" for u in v.claims if u in by_uid)
            episode = self._episodes.get(key)
            if episode is None:
                episode = self._episodes[key] = _Episode(now, v)
                pids = ", ".join(f"{a.process.pid} ({a.process.used} B)" for a in v.processes)
                message = (
                    f"processes of claim {names} hold {v.used} bytes on GPU {v.uuid}, over the claim's limit of "
                    f"{v.limit} bytes (driver accounting; processes {pids})"
                    + (f"; the largest is killed after {self.grace:g}s over the limit" if self.action == "kill" else "")
                )
                log.warning("node guard: %s", message)
                with self._lock:
                    for uid in v.claims:
                        self._state.violations[(uid, v.uuid)] += 1
                self._emit(v.claims, by_uid, "GpuMemoryOverLimit", message)
            if self.action == "kill" and now - episode.since >= self.grace:
                self._kill_largest(v, names, by_uid)
        for key in [k for k in self._episodes if k not in seen]:
            log.info("node guard: claim(s) %s back within the limit on GPU %s", ",".join(key[0]), key[1])
            del self._episodes[key]

    def _kill_largest(self, v: Verdict, names: str, by_uid: dict[str, PreparedClaim]) -> None:
        target = max(v.processes, key=lambda a: (a.process.used, a.process.pid))
        why = self._killer.kill(target.process.pid, target.start_time)
        if why:
            log.warning("node guard: not killing PID %d of claim %s: %s", target.process.pid, names, why)
            return
        message = (
            f"killed PID {target.process.pid} (host PID namespace), which held {target.process.used} bytes on GPU "
            f"{v.uuid}: claim {names} held {v.used} bytes for more than {self.grace:g}s over its limit of {v.limit}"
        )
        log.warning("node guard: %s", message)
        with self._lock:
            for uid in v.claims:
                self._state.kills[(uid, v.uuid)] += 1
        self._emit(v.claims, by_uid, "GpuProcessKilled", message)

    def _emit(self, uids: tuple[str, ...], by_uid: dict[str, PreparedClaim], reason: str, message: str) -> None:
        if self._events is None:
            return
        for uid in uids:
            if uid in by_uid:
                self._events.emit(by_uid[uid], reason, message)

    def run(self, stop: threading.Event, interval: float) -> None:
        while not stop.is_set():
            try:
                self.poll()
            except Exception:  # never let one bad poll end the guard
                log.exception("node guard poll failed")
                with self._lock:
                    self._state.poll_errors += 1
            stop.wait(interval)

    # -- metrics ----------------------------------------------------------------------------------------

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        labels = ["node", "namespace", "claim", "claim_uid", "uuid"]
        used = GaugeMetricFamily(
            "dra_hami_guard_claim_memory_used_bytes",
            "GPU memory the claim's processes hold according to the driver (NVML), as the node guard attributed "
            "them; claim_uid lists several claims when one process sees them all (judged together).",
            labels=labels,
        )
        over = GaugeMetricFamily(
            "dra_hami_guard_claim_over_limit",
            "1 while the claim's processes hold more GPU memory than its limit (driver accounting), else 0.",
            labels=labels,
        )
        violations = CounterMetricFamily(
            "dra_hami_guard_violations",
            "Episodes in which the claim's processes held more GPU memory than its limit (driver accounting).",
            labels=labels,
        )
        kills = CounterMetricFamily(
            "dra_hami_guard_kills", "Processes of the claim the node guard killed (action 'kill').", labels=labels
        )
        unattributed = GaugeMetricFamily(
            "dra_hami_guard_unattributed_memory_bytes",
            "GPU memory held by processes the guard could not attribute to any claim prepared on this node.",
            labels=["node", "uuid"],
        )
        processes = GaugeMetricFamily(
            "dra_hami_guard_processes",
            "GPU processes seen in the last poll, by how they were attributed (mount, cgroup, none).",
            labels=["node", "uuid", "by"],
        )
        polls = CounterMetricFamily("dra_hami_guard_polls", "Polls of the driver by the node guard.", labels=["node"])
        errors = CounterMetricFamily("dra_hami_guard_poll_errors", "Guard polls that failed.", labels=["node"])
        last = GaugeMetricFamily(
            "dra_hami_guard_last_poll_timestamp_seconds", "When the guard last looked (Unix time).", labels=["node"]
        )
        with self._lock:
            state, by_uid = self._state, self._by_uid

            def ids(uids: tuple[str, ...]) -> list[str]:
                known = [by_uid[u] for u in uids if u in by_uid]
                return [
                    self._node,
                    ",".join(sorted({c.namespace for c in known})),
                    ",".join(c.name for c in known),
                    ",".join(uids),
                ]

            for v in state.verdicts:
                used.add_metric([*ids(v.claims), v.uuid], v.used)
                over.add_metric([*ids(v.claims), v.uuid], 1.0 if v.over else 0.0)
            for (uid, uuid), count in state.violations.items():
                violations.add_metric([*ids((uid,)), uuid], count)
            for (uid, uuid), count in state.kills.items():
                kills.add_metric([*ids((uid,)), uuid], count)
            for uuid, amount in state.unattributed.items():
                unattributed.add_metric([self._node, uuid], amount)
            for (uuid, how), count in state.attributed_by.items():
                processes.add_metric([self._node, uuid, how], count)
            polls.add_metric([self._node], state.polls)
            errors.add_metric([self._node], state.poll_errors)
            last.add_metric([self._node], state.last_poll)
        return iter([used, over, violations, kills, unattributed, processes, polls, errors, last])
