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

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dra_hami import wire
from dra_hami.discovery.model import Discovery, DiscoveryError, GpuInfo
from dra_hami.exporter.claims import CheckpointReader, PreparedClaim, prepared_claims
from dra_hami.exporter.gpus import GpuStats
from dra_hami.exporter.identity import ClaimUsers, IdentityCache
from dra_hami.exporter.region import RegionError, RegionNotReady, RegionSnapshot, RegionUnsafe, read_region

log = logging.getLogger(__name__)

CLAIM_LABELS = ["node", "namespace", "pod", "container", "claim", "claim_uid", "device", "uuid"]
GPU_LABELS = ["node", "device", "uuid", "index", "product"]
# HAMi's vGPU monitor label names, so dashboards built for it keep working.
HAMI_CONTAINER_LABELS = ["podnamespace", "podname", "ctrname", "vdeviceid", "deviceuuid"]
HAMI_HOST_LABELS = ["nodeid", "deviceidx", "deviceuuid", "devicetype"]

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
    ):
        self._node = node_name
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
        per_gpu_used: defaultdict[str, int] = defaultdict(int)
        per_gpu_util: defaultdict[str, int] = defaultdict(int)
        allocated_memory: defaultdict[str, int] = defaultdict(int)
        allocated_cores: defaultdict[str, int] = defaultdict(int)
        claim_count: defaultdict[str, int] = defaultdict(int)
        by_uuid = {gpu.uuid: gpu for gpu in gpus}
        hami_used: defaultdict[tuple[str, ...], int] = defaultdict(int)
        hami_limit: defaultdict[tuple[str, ...], int] = defaultdict(int)
        hami_util: defaultdict[tuple[str, ...], int] = defaultdict(int)

        for reading in readings:
            claim, users = reading.claim, reading.users
            pod, container = users.pod, users.container
            base = [self._node, claim.namespace, pod, container, claim.name, claim.uid]
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
                hami = (claim.namespace, pod, container, str(gpu.index), gpu.uuid)
                record = reading.region.device(gpu.uuid) if reading.region is not None else None
                limit = gpu.memory_limit if gpu.memory_limit is not None else (record.limit if record else None)
                if limit is not None:
                    f.limit.add_metric(labels, limit)
                    allocated_memory[gpu.uuid] += limit
                hami_limit[hami] += limit if limit is not None else by_uuid[gpu.uuid].memory_bytes
                f.cap.add_metric(labels, gpu.cores)
                allocated_cores[gpu.uuid] += gpu.cores
                claim_count[gpu.uuid] += 1
                if not reading.readable:
                    continue
                used = record.used if record else 0
                util = record.util if record else 0
                f.used.add_metric(labels, used)
                f.peak.add_metric(labels, record.peak if record else 0)
                f.util.add_metric(labels, util)
                per_gpu_used[gpu.uuid] += used
                per_gpu_util[gpu.uuid] += util
                hami_used[hami] += used
                hami_util[hami] += util

        for key, value in hami_used.items():
            f.hami_used.add_metric(list(key), value)
            f.hami_util.add_metric(list(key), min(hami_util[key], 100))
        for key, value in hami_limit.items():
            f.hami_limit.add_metric(list(key), value)

        for card in gpus:  # not `gpu`: that name held a ClaimGpu above
            labels = [self._node, card.device_name, card.uuid, str(card.index), card.name]
            usage = self._stats.usage(card, per_gpu_used[card.uuid], per_gpu_util[card.uuid])
            host = [self._node, str(card.index), card.uuid, f"NVIDIA-{card.name}"]
            f.gpu_total.add_metric(labels, usage.memory_total if usage.memory_total is not None else card.memory_bytes)
            if usage.memory_used is not None:
                f.gpu_used.add_metric(labels, usage.memory_used)
                f.host_memory.add_metric(host, usage.memory_used)
            if usage.utilization is not None:
                f.gpu_util.add_metric(labels, usage.utilization)
                f.host_core.add_metric(host, usage.utilization)
            f.gpu_claims_used.add_metric(labels, per_gpu_used[card.uuid])
            f.gpu_allocated_memory.add_metric(labels, allocated_memory[card.uuid])
            f.gpu_allocated_cores.add_metric(labels, allocated_cores[card.uuid])
            f.gpu_claims.add_metric(labels, claim_count[card.uuid])

        for reason, count in self._regions.error_counts().items():
            f.read_errors.add_metric([reason], count)
        return f.all()


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
        hami = HAMI_CONTAINER_LABELS
        self.hami_used = GaugeMetricFamily(
            "vGPU_device_memory_usage_in_bytes",
            "vGPU device usage (HAMi-compatible; per claim). " + WHY_NO_CONTAINER,
            labels=hami,
        )
        self.hami_limit = GaugeMetricFamily(
            "vGPU_device_memory_limit_in_bytes", "vGPU device limit (HAMi-compatible; per claim).", labels=hami
        )
        self.hami_util = GaugeMetricFamily(
            "Device_utilization_desc_of_container",
            "Container device utilization (HAMi-compatible; per claim, measured for capped claims).",
            labels=hami,
        )
        self.host_memory = GaugeMetricFamily(
            "HostGPUMemoryUsage", "GPU device memory usage (HAMi-compatible).", labels=HAMI_HOST_LABELS
        )
        self.host_core = GaugeMetricFamily(
            "HostCoreUtilization", "GPU core utilization (HAMi-compatible).", labels=HAMI_HOST_LABELS
        )

    def all(self) -> list[Metric]:
        return list(vars(self).values())
