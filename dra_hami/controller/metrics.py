"""Prometheus metrics of the controller: its decisions, and HAMi's scheduler allocation gauges from the view.

The HAMi gauges (GPUDeviceSharedNum, GPUDeviceMemoryAllocated, GPUDeviceCoreAllocated, vGPUMemoryAllocated,
vGPUCoreAllocated) keep HAMi's names so existing dashboards work; they count every allocation on our devices,
the scheduler's and ours, and are computed from the view at scrape time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dra_hami import wire
from dra_hami.allocator import DeviceKey, ParseError
from dra_hami.allocator.model import claim_results

from . import pods as p
from .core import claim_users
from .view import View

DECISION_RESULTS = ("allocated", "ungated", "waiting", "unplaceable", "invalid", "released", "conflict", "error")


def device_usage(view: View, driver: str) -> tuple[dict[DeviceKey, list[int]], dict[tuple, list[int]]]:
    """Per device [shares, memory bytes, cores], and per (device, namespace, pod) [memory, cores].

    Results are counted by the rule all readers share (``AllocatedDevice.taken``): a result without a shareID
    holds the whole device (nothing is known of a device the view does not publish).
    """
    state = view.state
    per_device: dict[DeviceKey, list[int]] = {}
    per_pod: dict[tuple, list[int]] = {}
    users = claim_users(view)
    for key, claim in view.claims.items():
        try:
            results = claim_results(claim, driver)
        except ParseError:
            continue  # the allocator reports a claim it cannot read; the gauges show the readable ones
        if not results:
            continue
        namespace = key.split("/", 1)[0]
        pod_names = sorted({u.split("/", 1)[1] for u in users.get(key, ())}) or sorted(
            {r.get("name", "") for r in p.reserved_for(claim) if r.get("resource") == "pods"}
        )
        for result in results:
            if result.admin_access:
                continue
            device = state.devices.get(result.device)
            capacity = {k: c.value for k, c in device.capacity.items()} if device is not None else None
            memory = result.amount(wire.CAPACITY_MEMORY, capacity)
            cores = result.amount(wire.CAPACITY_CORES, capacity)
            row = per_device.setdefault(result.device, [0, 0, 0])
            row[0] += 1
            row[1] += memory
            row[2] += cores
            for pod_name in pod_names:
                pod_row = per_pod.setdefault((result.device, namespace, pod_name), [0, 0])
                pod_row[0] += memory
                pod_row[1] += cores
    return per_device, per_pod


class HamiGauges(Collector):
    def __init__(self, view: View, driver: str, lock: AbstractContextManager | None = None) -> None:
        self.view = view
        self.driver = driver
        self.lock = lock or threading.Lock()

    def _labels(self, key: DeviceKey) -> tuple[str, str]:
        device = self.view.state.devices.get(key)
        node = (device.node_name if device else None) or key.pool
        uuid = device.attributes.get(f"{self.driver}/uuid") if device else None
        return node, str(uuid or key.device)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        shared = GaugeMetricFamily("GPUDeviceSharedNum", "Claims sharing the GPU", labels=["nodeid", "deviceuuid"])
        memory = GaugeMetricFamily(
            "GPUDeviceMemoryAllocated", "GPU memory allocated, bytes", labels=["nodeid", "deviceuuid"]
        )
        cores = GaugeMetricFamily(
            "GPUDeviceCoreAllocated", "GPU cores allocated, percent", labels=["nodeid", "deviceuuid"]
        )
        pod_labels = ["nodeid", "deviceuuid", "podnamespace", "podname"]
        vmemory = GaugeMetricFamily("vGPUMemoryAllocated", "GPU memory allocated to a pod, bytes", labels=pod_labels)
        vcores = GaugeMetricFamily("vGPUCoreAllocated", "GPU cores allocated to a pod, percent", labels=pod_labels)
        with self.lock:
            per_device, per_pod = device_usage(self.view, self.driver)
            for key, (count, mem, core) in sorted(per_device.items()):
                labels = list(self._labels(key))
                shared.add_metric(labels, count)
                memory.add_metric(labels, mem)
                cores.add_metric(labels, core)
            for (key, namespace, pod_name), (mem, core) in sorted(per_pod.items()):
                labels = [*self._labels(key), namespace, pod_name]
                vmemory.add_metric(labels, mem)
                vcores.add_metric(labels, core)
        yield from (shared, memory, cores, vmemory, vcores)


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.decisions = Counter(
            "dra_hami_controller_decisions",
            "Decisions about gated pods, by result",
            ["result"],
            registry=self.registry,
        )
        for result in DECISION_RESULTS:
            self.decisions.labels(result)
        self.decision_seconds = Histogram(
            "dra_hami_controller_decision_seconds",
            "Time to decide one gated pod (allocator included, API writes excluded)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=self.registry,
        )
        self.placement_seconds = Histogram(
            "dra_hami_controller_placement_seconds",
            "Time from deciding to having written the claims and removed the gate",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
            registry=self.registry,
        )
        self.leader = Counter(
            "dra_hami_controller_leader_transitions", "Times this replica became leader", registry=self.registry
        )
        self.api_writes = Counter(
            "dra_hami_controller_api_writes",
            "API writes the controller sent, by what they wrote",
            ["write"],
            registry=self.registry,
        )

    def watch_view(self, view: View, driver: str = wire.DEFAULT_DRIVER_NAME, lock: Any = None) -> None:
        self.registry.register(HamiGauges(view, driver, lock))

    def count(self, result: str) -> None:
        self.decisions.labels(result).inc()
