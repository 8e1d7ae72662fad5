"""The Grafana dashboard: valid JSON, queries that name only metrics our components export, shipped as a
ConfigMap for Grafana's sidecar when ``dashboards.enabled``.

The exported names come from live collectors (the exporter on fake GPUs under each ``--hami-metrics``
setting, the controller's registry), as Prometheus would scrape them: counters with ``_total``, histograms
with ``_bucket``, ``_sum`` and ``_count``. Both install modes are checked: every panel outside the
controller's row has data from the exporter alone (the default install), whichever HAMi name set is on."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from chart_render import CHART, INSTALL, find, render
from prometheus_client import CollectorRegistry

from dra_hami.controller.metrics import ControllerMetrics
from dra_hami.discovery import FakeDiscovery
from dra_hami.exporter.claims import CheckpointReader
from dra_hami.exporter.collector import ExporterCollector
from dra_hami.exporter.gpus import FakeGpuStats
from dra_hami.exporter.hami import CHOICES
from dra_hami.exporter.identity import IdentityCache

DASHBOARD = CHART / "dashboards" / "dra-hami.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "unknown": ("",)}
# PromQL words that are not metric names (functions are recognised by the "(" after them).
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def _series(registry: CollectorRegistry) -> set[str]:
    names = set()
    for family in registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


@pytest.fixture(scope="module")
def by_setting(tmp_path_factory) -> dict[str, set[str]]:
    """--hami-metrics setting -> the names the exporter alone serves (the default install)."""
    tmp: Path = tmp_path_factory.mktemp("exporter")
    gpus = FakeDiscovery.from_profile("t4x2").discover()
    out = {}
    for setting, names in CHOICES.items():
        exporter = CollectorRegistry(auto_describe=False)
        exporter.register(ExporterCollector("node-1", tmp / "vgpu", CheckpointReader(tmp / "checkpoint.json"),
                                            lambda: gpus, FakeGpuStats(), IdentityCache(None), names))  # fmt: skip
        out[setting] = _series(exporter)
    return out


@pytest.fixture(scope="module")
def exported(by_setting) -> set[str]:
    names = by_setting["both"] | _series(ControllerMetrics().registry)
    # The collectors are really read: both sides' headline names are there.
    assert {"dra_hami_claim_memory_used_bytes", "vGPU_device_memory_usage_in_bytes", "GPUDeviceMemoryAllocated",
            "dra_hami_controller_decisions_total", "dra_hami_controller_decision_seconds_bucket"} <= names  # fmt: skip
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (or a Grafana ``label_values(metric, label)`` query)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    text = re.sub(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,[^)]*\)", r"\1", text)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)\b(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if not call and word not in KEYWORDS:
            names.add(word)
    return names


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels_by_row(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    row, out = "", []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
        else:
            out.append((row, panel))
    return out


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    out = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            out.append((f"variable {var['name']}", var["query"]["query"]))
    return out


def test_the_name_reader_finds_metrics_and_only_metrics():
    expr = ('histogram_quantile(0.99, sum by (le) (rate(dra_hami_controller_decision_seconds_bucket'
            '{node=~"$node", result="ok"}[$__rate_interval]))) / on (node) group_left '
            'sum without (uuid) (dra_hami_gpu_memory_total_bytes offset 5m) > bool 0')  # fmt: skip
    assert metric_names(expr) == {"dra_hami_controller_decision_seconds_bucket", "dra_hami_gpu_memory_total_bytes"}
    assert metric_names("label_values(dra_hami_gpu_claims, node)") == {"dra_hami_gpu_claims"}


def test_the_dashboard_parses_and_is_complete():
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert [t["refId"] for t in panel["targets"]] == [chr(65 + i) for i in range(len(panel["targets"]))]
        assert panel["datasource"]["uid"] == "${datasource}"
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in dashboard["templating"]["list"])


def test_every_query_names_only_exported_metrics(exported):
    used: set[str] = set()
    for title, expr in _queries(_dashboard()):
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= exported, f"{title}: {sorted(names - exported)} is not exported (expr {expr!r})"
        used |= names
    # What the dashboard is for: per-claim memory and compute, per-GPU physical usage, allocations, decisions.
    assert {
        "dra_hami_claim_memory_used_bytes",
        "dra_hami_claim_memory_limit_bytes",
        "dra_hami_claim_compute_utilization_percent",
        "dra_hami_claim_compute_cap_percent",
        "dra_hami_gpu_memory_used_bytes",
        "dra_hami_gpu_utilization_percent",
        "dra_hami_gpu_memory_allocated_bytes",
        "dra_hami_gpu_cores_allocated_percent",
        "GPUDeviceMemoryAllocated",
        "dra_hami_controller_decisions_total",
        "dra_hami_controller_decision_seconds_bucket",
        "dra_hami_controller_placement_seconds_bucket",
    } <= used


@pytest.mark.parametrize("setting", ["both", "current", "legacy"])  # "none": only the HAMi-gauge targets empty
def test_the_default_install_fills_every_panel_but_the_controllers(by_setting, setting):
    """No policy mode: only the exporters run. Every query outside the controller's row must name a series
    they serve (a query may offer HAMi's current and legacy name with ``or``: one of them is enough)."""
    served = by_setting[setting]
    rows = set()
    for row, panel in _panels_by_row(_dashboard()):
        rows.add(row)
        if row == "Controller (policy mode)":
            continue
        for target in panel["targets"]:
            assert metric_names(target["expr"]) & served, f"{panel['title']}: empty without policy mode ({setting})"
    assert "Controller (policy mode)" in rows and "Allocated" in rows


def test_the_allocation_panel_reads_the_allocation_results(exported):
    panels = {p["id"]: p for _, p in _panels_by_row(_dashboard())}
    expr = panels[7]["targets"][0]["expr"]
    assert metric_names(expr) == {"hami_gpu_memory_allocated_bytes", "GPUDeviceMemoryAllocated"}


def test_a_misspelled_metric_would_be_caught(exported):
    assert not metric_names("rate(dra_hami_controller_decisions[5m])") <= exported  # a counter without _total
    assert not metric_names("vGPU_device_memory_usage_bytes") <= exported


def test_the_configmap_renders_for_the_sidecar(helm):
    assert not [o for o in render(helm, INSTALL) if o["metadata"]["name"].endswith("-dashboards")]  # off by default
    objects = render(helm, {**INSTALL, "dashboards.enabled": "true", "dashboards.annotations.grafana_folder": "GPUs"})
    cm = find(objects, "ConfigMap", "-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "dra-hami"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "GPUs"}
    assert json.loads(cm["data"]["dra-hami.json"]) == _dashboard()
    objects = render(helm, {**INSTALL, "dashboards.enabled": "true", "dashboards.namespace": "monitoring"})
    assert find(objects, "ConfigMap", "-dashboards")["metadata"]["namespace"] == "monitoring"
