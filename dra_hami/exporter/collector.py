"""The scrape-time collector: prepared claims x their shared regions x the node's GPUs -> metric families.

Everything here runs inside one scrape, so it only touches local files and cached state: the checkpoint
(re-parsed when it changed), one small read per claim region, two NVML queries per GPU.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dra_hami import wire
from dra_hami.discovery.model import Discovery, DiscoveryError, GpuInfo
from dra_hami.exporter import hami as h
from dra_hami.exporter.allocation import node_allocation
from dra_hami.exporter.claims import CheckpointReader, PreparedClaim, prepared_claims
from dra_hami.exporter.gpus import GpuStats
from dra_hami.exporter.identity import PENDING, ClaimUsers, IdentityCache
from dra_hami.exporter.region import RegionError, RegionNotReady, RegionSnapshot, RegionUnsafe, read_region

log = logging.getLogger(__name__)

CLAIM_LABELS = ["node", "namespace", "pod", "container", "claim", "claim_uid", "device", "uuid"]
GPU_LABELS = ["node", "device", "uuid", "index", "product"]

WHY_NO_CONTAINER = (
    "pod and container are empty when not exactly one pod (container) uses the claim: the claim's region is "
    "shared by all of them, so its usage cannot be split; see dra_hami_claim_consumer_info"
)


class Inventory:
    """The node's GPUs, refreshed off the scrape path (NVML discovery walks every NVLink)."""

    def __init__(self, discovery: Discovery):
        self._discovery = discovery
        self._gpus: list[GpuInfo] = []
        self.refresh()

    def refresh(self) -> None:
        try:
            self._gpus = self._discovery.discover()
        except DiscoveryError as err:
            log.warning("GPU discovery failed, keeping the last inventory: %s", err)

    @property
    def gpus(self) -> list[GpuInfo]:
        return self._gpus

    def run(self, stop: threading.Event, interval: float = 60.0) -> None:
        while not stop.wait(interval):
            self.refresh()


@dataclass(frozen=True)
class ClaimReading:
    claim: PreparedClaim
    users: ClaimUsers
    region: RegionSnapshot | None  # None: no process has used the claim yet
    readable: bool  # False: the region could not be read this scrape (usage series left out)


READ_ERROR_REASONS = ("not_ready", "bad_layout", "unsafe", "io")


class RegionReader:
    """read_region with the exporter's tolerance: retry a region caught mid-initialisation once, then skip
    it for this scrape; log each problem once per claim until it goes away; count every failure.
    Thread-safe: scrapes read regions concurrently, outside the collector's lock."""

    def __init__(self, retries: int = 1):
        self._retries = retries
        self._complaints: dict[str, str] = {}
        self._lock = threading.Lock()
        self.errors: Counter[str] = Counter()

    def read(self, uid: str, path: Path, dir_owner: int | None = None) -> tuple[RegionSnapshot | None, bool]:
        for attempt in range(self._retries + 1):
            try:
                snapshot = read_region(path, dir_owner)
            except RegionUnsafe as err:
                self._complain(uid, "unsafe", f"region of claim {uid} refused: {err}")
                return None, False
            except RegionNotReady as err:
                if attempt < self._retries:
                    continue
                self._complain(uid, "not_ready", f"region {path} is being written ({err}); skipped this scrape")
                return None, False
            except RegionError as err:
                self._complain(uid, "bad_layout", f"region {path} cannot be read: {err}")
                return None, False
            except OSError as err:
                self._complain(uid, "io", f"region {path}: {err}")
                return None, False
            with self._lock:
                recovered = self._complaints.pop(uid, None) is not None
            if recovered:
                log.info("region %s is readable again", path)
            return snapshot, True
        raise AssertionError("unreachable")

    def _complain(self, uid: str, reason: str, message: str) -> None:
        with self._lock:
            self.errors[reason] += 1
            new = self._complaints.get(uid) != message
            self._complaints[uid] = message
        if new:
            (log.debug if reason == "not_ready" else log.warning)("%s", message)

    def error_counts(self) -> dict[str, int]:
        with self._lock:
            return {reason: self.errors[reason] for reason in READ_ERROR_REASONS}

    def forget_except(self, uids: set[str]) -> None:
        with self._lock:
            for uid in set(self._complaints) - uids:
                del self._complaints[uid]


class ExporterCollector(Collector):
    def __init__(
        self,
        node_name: str,
        vgpu_dir: Path,
        checkpoint: CheckpointReader,
        gpus: Callable[[], list[GpuInfo]],
        stats: GpuStats,
        identities: IdentityCache,
        hami_names: tuple[str, ...] = (h.CURRENT, h.LEGACY),
    ):
        self._node = node_name
        self._hami_names = hami_names
        self._claims_dir = vgpu_dir / "claims"
        self._checkpoint = checkpoint
        self._gpus = gpus
        self._stats = stats
        self._identities = identities
        self._regions = RegionReader()
        self._lock = threading.Lock()  # guards the checkpoint cache; never held while a tenant file is read

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only; registering must not run a collection

    def region_path(self, uid: str) -> Path:
        return self._claims_dir / uid / wire.SHARED_CACHE_FILE

    def read_claims(self, gpus: list[GpuInfo]) -> list[ClaimReading]:
        with self._lock:
            claims = prepared_claims(self._checkpoint.records(), gpus)
        uids = {c.uid for c in claims}
        self._identities.forget_except(uids)
        self._regions.forget_except(uids)
        owner = self._claims_owner()
        readings = []
        for claim in claims:
            users = self._identities.lookup(claim.uid, claim.namespace, claim.name)
            region, readable = self._regions.read(claim.uid, self.region_path(claim.uid), owner)
            readings.append(ClaimReading(claim, users, region, readable))
        return readings

    def _claims_owner(self) -> int | None:
        """Who must own each claim directory: whoever owns the claims root (the plugin)."""
        try:
            return os.stat(self._claims_dir).st_uid
        except OSError:
            return None

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        families = self._collect()
        duration_seconds = time.perf_counter() - started
        yield from families
        duration = GaugeMetricFamily(
            "dra_hami_exporter_collect_seconds", "Time this scrape spent reading claims, regions and NVML."
        )
        duration.add_metric([], duration_seconds)
        yield duration

    def _collect(self) -> list[Metric]:
        gpus = self._gpus()
        readings = self.read_claims(gpus)
        f = _Families()
        hami = h.HamiSeries(self._hami_names)
        per_gpu_used: defaultdict[str, int] = defaultdict(int)
        per_gpu_util: defaultdict[str, int] = defaultdict(int)
        allocated_memory: defaultdict[str, int] = defaultdict(int)
        allocated_cores: defaultdict[str, int] = defaultdict(int)
        claim_count: defaultdict[str, int] = defaultdict(int)

        for reading in readings:
            claim, users = reading.claim, reading.users
            for gpu in claim.gpus:  # the card totals count every prepared claim, resolved or not
                record = reading.region.device(gpu.uuid) if reading.region is not None else None
                limit = gpu.memory_limit if gpu.memory_limit is not None else (record.limit if record else None)
                allocated_memory[gpu.uuid] += limit or 0
                allocated_cores[gpu.uuid] += gpu.cores
                claim_count[gpu.uuid] += 1
                if reading.readable:
                    per_gpu_used[gpu.uuid] += record.used if record else 0
                    per_gpu_util[gpu.uuid] += record.util if record else 0
            if users.why_unknown:
                f.unknown.add_metric([self._node, claim.namespace, claim.name, claim.uid, users.reason], 1.0)
            if users.reason == PENDING:
                continue  # resolved within seconds: exported then, never first under empty pod labels
            self._claim_series(f, hami, reading, {gpu.uuid: gpu.memory_bytes for gpu in gpus})

        allocation = node_allocation(((r.claim.uid, r.claim.namespace, r.users) for r in readings), gpus)
        for key, row in allocation.containers.items():
            fields: dict[str, Any] = {
                "namespace": key.namespace,
                "pod": key.pod,
                "cindex": key.container_index,
                "uuid": key.uuid,
            }
            hami.add(h.ALLOCATED, row.claims, node=self._node, memory=row.memory, cores=row.cores, **fields)

        for card in gpus:  # not `gpu`: that name held a ClaimGpu above
            labels = [self._node, card.device_name, card.uuid, str(card.index), card.name]
            usage = self._stats.usage(card, per_gpu_used[card.uuid], per_gpu_util[card.uuid])
            total = usage.memory_total if usage.memory_total is not None else card.memory_bytes
            device: dict[str, Any] = {
                "node": self._node,
                "index": card.index,
                "uuid": card.uuid,
                "type": f"NVIDIA-{card.name}",
            }
            f.gpu_total.add_metric(labels, total)
            if usage.memory_used is not None:
                f.gpu_used.add_metric(labels, usage.memory_used)
            if usage.utilization is not None:
                f.gpu_util.add_metric(labels, usage.utilization)
            hami.add(h.HOST, memory_used=usage.memory_used, util=usage.utilization, **device)
            dev = allocation.devices[card.uuid]
            ratio = dev.memory / card.memory_bytes if card.memory_bytes else 0.0
            hami.add(h.DEVICE, total=card.memory_bytes, core_total=100, memory=dev.memory, shares=dev.shares,
                     cores=dev.cores, ratio=ratio, **device)  # fmt: skip
            f.gpu_claims_used.add_metric(labels, per_gpu_used[card.uuid])
            f.gpu_allocated_memory.add_metric(labels, allocated_memory[card.uuid])
            f.gpu_allocated_cores.add_metric(labels, allocated_cores[card.uuid])
            f.gpu_claims.add_metric(labels, claim_count[card.uuid])

        for reason, count in self._regions.error_counts().items():
            f.read_errors.add_metric([reason], count)
        families = hami.families()
        for kind in (h.CONTAINER, h.ALLOCATED):
            f.hami_ambiguous.add_metric([kind], hami.ambiguous[kind])
        return f.all() + families

    def _claim_series(self, f: _Families, hami: h.HamiSeries, reading: ClaimReading, cards: dict[str, int]) -> None:
        """The claim's own series (labelled by claim UID: never merged with another claim's) and its HAMi
        per-container series (one per container of a known consumer and GPU)."""
        claim, users = reading.claim, reading.users
        base = [self._node, claim.namespace, users.pod, users.container, claim.name, claim.uid]
        for consumer in users.consumers:
            for name in consumer.containers or ("",):
                f.consumer.add_metric([self._node, claim.namespace, claim.name, claim.uid, consumer.pod, name], 1.0)
        f.readable.add_metric(base, 1.0 if reading.readable else 0.0)
        if reading.region is not None:
            f.processes.add_metric(base, reading.region.processes)
        elif reading.readable:
            f.processes.add_metric(base, 0)
        for gpu in claim.gpus:
            labels = [*base, gpu.device, gpu.uuid]
            record = reading.region.device(gpu.uuid) if reading.region is not None else None
            limit = gpu.memory_limit if gpu.memory_limit is not None else (record.limit if record else None)
            if limit is not None:
                f.limit.add_metric(labels, limit)
            f.cap.add_metric(labels, gpu.cores)
            used = util = None
            if reading.readable:
                used, util = (record.used, record.util) if record else (0, 0)
                f.used.add_metric(labels, used)
                f.peak.add_metric(labels, record.peak if record else 0)
                f.util.add_metric(labels, util)
            # Every container of the claim shares its region: each one's series carries the claim's numbers.
            for consumer in users.consumers:
                for name in consumer.containers:
                    hami.add(h.CONTAINER, (claim.uid,), namespace=claim.namespace, pod=consumer.pod,
                             container=name, vindex=gpu.index, uuid=gpu.uuid, used=used,
                             limit=cards.get(gpu.uuid) if limit is None else limit,  # unlimited: the card
                             util=None if util is None else min(util, 100))  # fmt: skip


class _Families:
    """Every family of one scrape; HELP texts say where each number comes from."""

    def __init__(self) -> None:
        claim, gpu = CLAIM_LABELS, GPU_LABELS
        src = "from the claim's shared region, written by libvgpu in its containers"
        self.used = GaugeMetricFamily(
            "dra_hami_claim_memory_used_bytes",
            f"GPU memory the claim's processes hold on the GPU ({src}).",
            labels=claim,
        )
        self.limit = GaugeMetricFamily(
            "dra_hami_claim_memory_limit_bytes",
            "GPU memory limit of the claim on the GPU (absent: unlimited, e.g. admin access).",
            labels=claim,
        )
        self.peak = GaugeMetricFamily(
            "dra_hami_claim_memory_peak_bytes", f"High-water mark of the claim's GPU memory ({src}).", labels=claim
        )
        self.util = GaugeMetricFamily(
            "dra_hami_claim_compute_utilization_percent",
            "Share of the GPU's time used by the claim, as measured by libvgpu's compute limiter (only claims "
            f"with a compute cap are measured; others read 0) ({src}).",
            labels=claim,
        )
        self.cap = GaugeMetricFamily(
            "dra_hami_claim_compute_cap_percent", "Compute (SM) cap of the claim on the GPU; 0 = no cap.", labels=claim
        )
        self.processes = GaugeMetricFamily(
            "dra_hami_claim_processes",
            f"Processes registered in the claim's region (dead ones until libvgpu reclaims them) ({src}).",
            labels=claim[:6],
        )
        self.readable = GaugeMetricFamily(
            "dra_hami_claim_region_readable",
            "1 when the claim's region was read this scrape (or no process created it yet), 0 when it could "
            "not be: being created, another layout, or refused as unsafe (a symlink, FIFO, device node, hard "
            "link or wrong size planted in the claim directory); see dra_hami_exporter_region_read_errors.",
            labels=claim[:6],
        )
        self.consumer = GaugeMetricFamily(
            "dra_hami_claim_consumer_info",
            "1 for every pod and container that uses the claim (container empty when none names it). "
            + WHY_NO_CONTAINER,
            labels=["node", "namespace", "claim", "claim_uid", "pod", "container"],
        )
        self.gpu_used = GaugeMetricFamily(
            "dra_hami_gpu_memory_used_bytes", "GPU memory in use on the card, all processes (NVML).", labels=gpu
        )
        self.gpu_total = GaugeMetricFamily("dra_hami_gpu_memory_total_bytes", "GPU memory of the card.", labels=gpu)
        self.gpu_util = GaugeMetricFamily(
            "dra_hami_gpu_utilization_percent", "Percent of time a kernel ran on the card (NVML).", labels=gpu
        )
        self.gpu_claims_used = GaugeMetricFamily(
            "dra_hami_gpu_claims_memory_used_bytes",
            "Sum of the GPU memory the prepared claims on this node hold on the card.",
            labels=gpu,
        )
        self.gpu_allocated_memory = GaugeMetricFamily(
            "dra_hami_gpu_memory_allocated_bytes",
            "Sum of the memory limits of the claims prepared on the card.",
            labels=gpu,
        )
        self.gpu_allocated_cores = GaugeMetricFamily(
            "dra_hami_gpu_cores_allocated_percent",
            "Sum of the compute caps of the claims prepared on the card.",
            labels=gpu,
        )
        self.gpu_claims = GaugeMetricFamily(
            "dra_hami_gpu_claims", "Claims prepared on the card (HAMi's shared count).", labels=gpu
        )
        self.read_errors = CounterMetricFamily(
            "dra_hami_exporter_region_read_errors",
            "Region reads that failed: not_ready (being created), bad_layout (another version or size), unsafe "
            "(not a plain region file: refused unread), io.",
            labels=["reason"],
        )
        self.unknown = GaugeMetricFamily(
            "dra_hami_claim_consumer_unknown",
            "1 for a prepared claim whose pod and containers are not known, by reason: pending (being resolved: "
            "its per-claim and HAMi series are left out until then, seconds), no_api, gone, no_pod, api_error "
            "(its series carry empty pod and container labels; HAMi's per-container series are left out).",
            labels=["node", "namespace", "claim", "claim_uid", "reason"],
        )
        self.hami_ambiguous = GaugeMetricFamily(
            "dra_hami_exporter_hami_ambiguous_series",
            "HAMi per-container series left out this scrape because two claims of one container are on one GPU "
            "(HAMi's labels cannot tell them apart, and adding claims up would misstate both), by kind.",
            labels=["kind"],
        )

    def all(self) -> list[Metric]:
        return list(vars(self).values())
