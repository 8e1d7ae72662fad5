"""Prometheus metrics of the controller: its decisions.

HAMi's scheduler allocation gauges (GPUDeviceMemoryAllocated, vGPUMemoryAllocated, ... and their hami_*
names) come from the node exporter in every install, policy mode or not (dra_hami/exporter/hami.py): one
source, so a dashboard never sees the same allocation twice.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

DECISION_RESULTS = ("allocated", "ungated", "waiting", "unplaceable", "invalid", "released", "conflict", "error")


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

    def count(self, result: str) -> None:
        self.decisions.labels(result).inc()
