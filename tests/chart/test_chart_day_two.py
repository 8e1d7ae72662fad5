"""Day-two operation of the installed chart (issue 19): honest probes."""

from __future__ import annotations

import pytest
from chart_render import INSTALL, HelmError, container, find, render


def plugin_daemonset(helm, **values: str):
    return find(render(helm, {**INSTALL, **values}), "DaemonSet", "kubelet-plugin")


def test_plugin_is_ready_only_when_registered_and_published(helm):
    plugin = container(plugin_daemonset(helm), "kubelet-plugin")
    (port,) = [p for p in plugin["ports"] if p["name"] == "health"]
    assert f"--health-bind-address=0.0.0.0:{port['containerPort']}" in plugin["args"]
    ready, live = plugin["readinessProbe"], plugin["livenessProbe"]
    assert ready["httpGet"] == {"path": "/readyz", "port": "health"}
    assert live["httpGet"] == {"path": "/livez", "port": "health"}
    # Ready within seconds of registering, not at the next of long periods.
    assert ready["periodSeconds"] <= 2
    # A slow start (NVML, an API server outage) must not get the plugin killed before it serves.
    assert live["initialDelaySeconds"] + live["periodSeconds"] * live["failureThreshold"] >= 60


def test_probe_port_and_timing_come_from_the_values(helm):
    plugin = container(
        plugin_daemonset(
            helm,
            **{"kubeletPlugin.healthPort": "9999", "kubeletPlugin.readinessProbe.periodSeconds": "7"},
        ),
        "kubelet-plugin",
    )
    assert "--health-bind-address=0.0.0.0:9999" in plugin["args"]
    assert plugin["ports"] == [{"name": "health", "containerPort": 9999, "protocol": "TCP"}]
    assert plugin["readinessProbe"]["periodSeconds"] == 7


def test_exporter_is_probed_often_enough_to_be_ready_in_seconds(helm):
    probe = container(plugin_daemonset(helm), "exporter")["readinessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] <= 5


@pytest.mark.parametrize("key", ["kubeletPlugin.readinessProbe.periodSeconds", "exporter.readinessProbe.port"])
def test_bad_probe_values_are_refused_by_the_schema(helm, key):
    with pytest.raises(HelmError, match="readinessProbe"):
        render(helm, {**INSTALL, key: "0"})
