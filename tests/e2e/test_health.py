"""Device health on the real node: the kubelet's DRAResourceHealth stream is served (no more Unimplemented),
an injected XID taints the device in our ResourceSlice, new claims avoid it, the pod using it is reported
Unhealthy in its status, and removing the fault clears all of it without restarting the plugin."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cluster import DRIVER, Cluster, HamiPlugin, wait_for
from e2e_objects import CLAIMS_API, busybox_pod, claim_template

pytestmark = pytest.mark.e2e


def slice_taints(plugin: HamiPlugin) -> dict[str, list[dict[str, Any]]]:
    return {d["name"]: d.get("taints") or [] for s in plugin.slices() for d in s["spec"].get("devices", [])}


def pool_generation(plugin: HamiPlugin) -> int:
    return max(s["spec"]["pool"]["generation"] for s in plugin.slices())


def claim_device(cluster: Cluster, pod: dict[str, Any], namespace: str) -> str:
    name = pod["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
    claim = cluster.kube.get(f"{CLAIMS_API}/namespaces/{namespace}/resourceclaims/{name}")
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    return result["device"]


def resource_health(cluster: Cluster, name: str, namespace: str) -> list[str]:
    pod = cluster.pod(name, namespace) or {}
    return [
        r.get("health", "")
        for cs in pod.get("status", {}).get("containerStatuses", [])
        for s in cs.get("allocatedResourcesStatus") or []
        for r in s.get("resources") or []
    ]


def test_injected_xid_taints_streams_and_clears(
    cluster: Cluster, hami_plugin: HamiPlugin, device_class: dict, namespace: str
) -> None:
    kubelet = cluster.components["kubelet"]
    assert hami_plugin.component is not None
    plugin_pid = hami_plugin.component.pid
    wait_for(
        lambda: kubelet.grep("Successfully started WatchResources health stream"),
        60,
        "the kubelet to open the DRAResourceHealth stream",
        details=lambda: kubelet.tail(20),
    )
    assert not kubelet.grep("WatchResources", "Unimplemented", f'pluginName="{DRIVER}"'), kubelet.grep("Unimplemented")

    kube = cluster.kube
    kube.create(claim_template("slice-1g", "1Gi", 10), namespace)
    kube.create(busybox_pod("victim", template="slice-1g"), namespace)
    running = cluster.wait_pod_phase("victim", ["Running"], namespace, timeout=180)
    sick = claim_device(cluster, running, namespace)
    other = ({"hami-gpu-0", "hami-gpu-1"} - {sick}).pop()
    wait_for(
        lambda: resource_health(cluster, "victim", namespace) == ["Healthy"],
        90,
        "the kubelet to report the pod's GPU Healthy from our stream",
        details=lambda: json.dumps((cluster.pod("victim", namespace) or {}).get("status"), indent=1)[-3000:],
    )

    health_file = hami_plugin.plugin_dir / "fake-health.yaml"
    try:
        health_file.write_text(f"{sick}: {{xid: 79}}\n")
        wait_for(
            lambda: slice_taints(hami_plugin).get(sick),
            30,
            f"a taint on {sick} in the ResourceSlice",
            details=lambda: json.dumps(hami_plugin.slices(), indent=1)[-3000:] + hami_plugin.component.tail(20),
        )
        (taint,) = slice_taints(hami_plugin)[sick]
        assert (taint["key"], taint["value"], taint["effect"]) == (f"{DRIVER}/unhealthy", "xid-79", "NoSchedule")
        assert taint.get("timeAdded")
        assert slice_taints(hami_plugin)[other] == []
        generation = pool_generation(hami_plugin)
        wait_for(
            lambda: resource_health(cluster, "victim", namespace) == ["Unhealthy"],
            90,
            "the kubelet to report the pod's GPU Unhealthy",
            details=lambda: json.dumps((cluster.pod("victim", namespace) or {}).get("status"), indent=1)[-3000:],
        )
        assert (cluster.pod("victim", namespace) or {})["status"]["phase"] == "Running"  # NoSchedule: not evicted
        # the stored taint compares equal to ours: no rewrite of the pool on every pass
        assert pool_generation(hami_plugin) == generation

        # a new claim avoids the tainted GPU
        kube.create(busybox_pod("newcomer", template="slice-1g"), namespace)
        newcomer = cluster.wait_pod_phase("newcomer", ["Running"], namespace, timeout=180)
        assert claim_device(cluster, newcomer, namespace) == other
    finally:
        health_file.unlink(missing_ok=True)

    wait_for(
        lambda: slice_taints(hami_plugin).get(sick) == [],
        30,
        f"the taint on {sick} to be removed after recovery",
        details=lambda: json.dumps(hami_plugin.slices(), indent=1)[-3000:],
    )
    wait_for(
        lambda: resource_health(cluster, "victim", namespace) == ["Healthy"],
        90,
        "the kubelet to report the pod's GPU Healthy again",
    )
    hami_plugin.check_alive()
    assert hami_plugin.component.pid == plugin_pid  # recovered without a restart
    assert not kubelet.grep("WatchResources", "Unimplemented", f'pluginName="{DRIVER}"')
