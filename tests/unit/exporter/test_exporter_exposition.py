"""Our fast text exposition writes exactly what prometheus_client's generate_latest writes."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dra_hami.exporter.exposition import render


class Fixed(Collector):
    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self):
        return self.families


def families() -> list[Metric]:
    g = GaugeMetricFamily("g_bytes", 'help with \\ backslash and\nnewline "quoted"', labels=["b", "a"])
    g.add_metric(["plain", "x"], 3221225472)
    g.add_metric(['quo"te', "back\\slash\nnew"], 0.5)
    g.add_metric(["nan", "inf"], math.nan)
    g.add_metric(["inf", "-inf"], -math.inf)
    g.add_metric(["unicode ✓", ""], 1e-9)
    empty = GaugeMetricFamily("no_labels", "a scalar", value=42)
    c = CounterMetricFamily("events", "a counter", labels=["reason"])
    c.add_metric(["io"], 3)
    mixed = GaugeMetricFamily("mixed", "samples with different label sets")
    mixed.add_sample("mixed", {"z": "1"}, 1)
    mixed.add_sample("mixed", {"a": "2", "z": "3"}, 2)
    h = HistogramMetricFamily("lat_seconds", "a histogram", buckets=[("0.1", 1), ("+Inf", 2)], sum_value=0.3)
    i = InfoMetricFamily("build", "an info", value={"version": "1"})
    weird = GaugeMetricFamily("weird", "a label name prometheus must escape")
    weird.add_sample("weird", {"bad.label": "v"}, 1)
    return [g, empty, c, mixed, h, i, weird]


def test_render_equals_generate_latest() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed(families()))
    assert render(registry) == generate_latest(registry)


def test_render_of_an_empty_registry() -> None:
    assert render(CollectorRegistry(auto_describe=False)) == b""
