"""Policy mode on the real cluster: `dra-hami controller` places gated pods' claims by policy, then lifts the gate.

The node's kubelet plugin is switched to the fake `a100x4` profile (4 GPUs of 40Gi) for this module and back to
`t4x2` afterwards. Pods are created with the scheduling gate already set (the webhook is tested elsewhere).
"""

from __future__ import annotations

import os
import re
import sys
import time
import urllib.request
import uuid
from typing import Any

import pytest
from cluster import DRIVER, REPO_ROOT, Cluster, Component, HamiPlugin, free_port, wait_for
from e2e_objects import CLAIMS_API, GATE, allocated_claim, busybox_pod, claim_template

pytestmark = pytest.mark.e2e

CONDITION = "DraHamiAllocated"
A100_MEMORY_GI = 40


class Controller:
    """`dra-hami controller` as a subprocess of the test, logging into the harness's log directory."""

    def __init__(self, cluster: Cluster, identity: str, extra: list[str] | None = None) -> None:
        self.cluster = cluster
        self.identity = identity
        self.port = free_port()
        args = [
            sys.executable, "-m", "dra_hami", "controller",
            "--kubeconfig", str(cluster.admin_kubeconfig),
            "--identity", identity,
            "--lease-namespace", "default",
            "--lease-name", "dra-hami-controller-e2e",
            "--metrics-bind-address", f"127.0.0.1:{self.port}",
            "--orphan-grace", "2",
            "--log-level", "info",
            *(extra or []),
        ]  # fmt: skip
        env = {"PYTHONPATH": f"{REPO_ROOT}:{os.environ.get('PYTHONPATH', '')}".rstrip(":"), "PYTHONUNBUFFERED": "1"}
        self.component = Component(
            f"dra-hami-controller-{identity}", args, cluster.logs / f"controller-{identity}.log", env
        )

    def start(self) -> Controller:
        self.cluster.components[self.component.name] = self.component
        self.component.start()
        wait_for(self.healthy, 60, f"controller {self.identity} /healthz", details=self.component.tail)
        return self

    def healthy(self) -> bool:
        self.component.check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp:
                return resp.read() == b"ok"
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def stop(self) -> None:
        self.cluster.components.pop(self.component.name, None)  # stopped on purpose: not a harness failure
        self.component.stop()


def _plugin_devices(plugin: HamiPlugin) -> list[str]:
    return sorted(d["name"] for s in plugin.slices() for d in s["spec"].get("devices", []))


def _switch_profile(cluster: Cluster, plugin: HamiPlugin, profile: str) -> None:
    from dra_hami.discovery import load_discovery

    devices = len(load_discovery(profile).discover())
    plugin.profile = profile
    plugin.restart()
    expected = sorted(f"hami-gpu-{i}" for i in range(devices))
    wait_for(
        lambda: (plugin.check_alive(), _plugin_devices(plugin) == expected and plugin.kubelet_registered())[1],
        90,
        f"the plugin to publish {devices} {profile} GPUs",
        details=lambda: f"devices: {_plugin_devices(plugin)}\n{plugin.component.tail(30)}",
    )


@pytest.fixture(scope="module")
def four_gpus(cluster: Cluster, hami_plugin: HamiPlugin, device_class: dict):
    """The session's plugin, restarted with 4 fake A100s; restored to its own profile afterwards."""
    original = hami_plugin.profile
    _switch_profile(cluster, hami_plugin, "a100x4")
    yield hami_plugin
    _switch_profile(cluster, hami_plugin, original)


@pytest.fixture(scope="module")
def controller(cluster: Cluster, four_gpus: HamiPlugin):
    c = Controller(cluster, "e2e-controller-1").start()
    yield c
    c.stop()


# ----------------------------------------------------------------------------------------------- objects


def gated_pod(name: str, template: str, policy: str | None = None) -> dict[str, Any]:
    """A pod with the gate the webhook adds in policy mode; ``policy`` goes into both HAMi policy annotations."""
    annotations = {"hami.io/node-scheduler-policy": policy, "hami.io/gpu-scheduler-policy": policy} if policy else None
    return busybox_pod(name, template=template, gate=GATE, annotations=annotations)


def _run_pair(cluster: Cluster, namespace: str, policy: str) -> list[dict[str, Any]]:
    cluster.kube.create(claim_template("small", "2Gi", 10), namespace)
    for name in ("first", "second"):
        cluster.kube.create(gated_pod(f"{policy}-{name}", "small", policy), namespace)
    claims = []
    for name in ("first", "second"):
        pod = cluster.wait_pod_phase(f"{policy}-{name}", ["Running"], namespace, timeout=120)
        assert pod["spec"]["nodeName"] == cluster.node_name
        assert not pod["spec"].get("schedulingGates"), pod["spec"]
        claims.append(allocated_claim(cluster, f"{policy}-{name}", namespace))
    for claim in claims:
        alloc = claim["status"]["allocation"]
        (result,) = alloc["devices"]["results"]
        assert result["consumedCapacity"] == {"cores": "10", "memory": "2Gi", "shares": "1"}
        assert result["shareID"]
        assert alloc["allocationTimestamp"]
        # Ours, not the scheduler's: the scheduler marks its own allocations with this finalizer.
        assert "resource.kubernetes.io/delete-protection" not in claim["metadata"].get("finalizers", [])
        assert [r["name"] for r in claim["status"].get("reservedFor", [])] in (
            [f"{policy}-first"],
            [f"{policy}-second"],
        )
    return [c["status"]["allocation"]["devices"]["results"][0]["device"] for c in claims]


# ----------------------------------------------------------------------------------------------- scenarios


def test_binpack_puts_two_small_claims_on_one_gpu(cluster: Cluster, controller: Controller, namespace: str) -> None:
    first, second = _run_pair(cluster, namespace, "binpack")
    assert first == second, (first, second)
    # The HAMi allocation gauges moved to the exporter (one source in both modes); the controller counts its decisions.
    placed = re.search(r'^dra_hami_controller_decisions_total\{result="allocated"\} (\S+)$', controller.metrics(), re.M)
    assert placed and float(placed.group(1)) >= 2, controller.metrics()


def test_spread_puts_two_small_claims_on_two_gpus(cluster: Cluster, controller: Controller, namespace: str) -> None:
    first, second = _run_pair(cluster, namespace, "spread")
    assert first != second, (first, second)


def test_unplaceable_pod_keeps_its_gate_with_the_reason(
    cluster: Cluster, controller: Controller, namespace: str
) -> None:
    cluster.kube.create(claim_template("huge", f"{A100_MEMORY_GI * 2}Gi", 10), namespace)
    cluster.kube.create(gated_pod("huge", "huge"), namespace)

    def condition() -> dict[str, Any] | None:
        pod = cluster.pod("huge", namespace) or {}
        return next((c for c in pod.get("status", {}).get("conditions", []) if c["type"] == CONDITION), None)

    found = wait_for(
        condition, 60, "the controller's condition on the unplaceable pod", details=controller.component.tail
    )
    assert found["status"] == "False" and found["reason"] == "Unschedulable"
    assert "capacity memory" in found["message"] and "80Gi" in found["message"], found["message"]
    assert cluster.node_name in found["message"]
    pod = cluster.pod("huge", namespace)
    assert pod["spec"]["schedulingGates"] == [{"name": GATE}]
    assert not pod["spec"].get("nodeName")
    events = cluster.kube.get(f"/api/v1/namespaces/{namespace}/events").get("items", [])
    ours = [e for e in events if e.get("source", {}).get("component") == "dra-hami-controller"]
    assert [e["reason"] for e in ours] == ["Unschedulable"], events
    assert ours[0]["involvedObject"]["name"] == "huge"
    # Its claim stays unallocated (nothing half-done is left behind).
    name = pod["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
    claim = cluster.kube.get(f"{CLAIMS_API}/namespaces/{namespace}/resourceclaims/{name}")
    assert not claim.get("status", {}).get("allocation")
    text = controller.metrics()
    assert 'dra_hami_controller_decisions_total{result="unplaceable"}' in text


def test_second_replica_stands_by_and_takes_over(cluster: Cluster, controller: Controller, namespace: str) -> None:
    """Two replicas: only the lease holder allocates; when it stops, the other takes over and places the next pod."""
    standby = Controller(cluster, "e2e-controller-2").start()
    try:
        lease = cluster.kube.get("/apis/coordination.k8s.io/v1/namespaces/default/leases/dra-hami-controller-e2e")
        assert lease["spec"]["holderIdentity"] == "e2e-controller-1"
        cluster.kube.create(claim_template("small", "2Gi", 10), namespace)
        cluster.kube.create(gated_pod("one", "small"), namespace)
        cluster.wait_pod_phase("one", ["Running"], namespace, timeout=120)
        assert standby.component.grep(": allocated ") == []  # the follower wrote nothing
        controller.stop()  # releases the lease on the way out
        wait_for(
            lambda: (
                cluster.kube.get("/apis/coordination.k8s.io/v1/namespaces/default/leases/dra-hami-controller-e2e")[
                    "spec"
                ].get("holderIdentity")
                == "e2e-controller-2"
            ),
            60,
            "the standby replica to take the lease",
        )
        cluster.kube.create(gated_pod("two", "small"), namespace)
        cluster.wait_pod_phase("two", ["Running"], namespace, timeout=120)
        assert standby.component.grep(": allocated ", f"{namespace}/two")
    finally:
        standby.stop()
        controller.start()  # later tests of this module get their controller back


def _allocate_by_hand(cluster: Cluster, namespace: str, claim_name: str, device: str) -> str:
    """Write an allocation the way the controller does (what a previous leader left behind); returns its shareID."""
    share_id = str(uuid.uuid4())
    allocation = {
        "devices": {
            "results": [
                {
                    "request": "gpu",
                    "driver": DRIVER,
                    "pool": cluster.node_name,
                    "device": device,
                    "shareID": share_id,
                    "consumedCapacity": {"memory": "2Gi", "cores": "10", "shares": "1"},
                }
            ]
        },
        "nodeSelector": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [cluster.node_name]}]}
            ]
        },
        "allocationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = f"{CLAIMS_API}/namespaces/{namespace}/resourceclaims/{claim_name}/status"
    cluster.kube.patch(path, {"status": {"allocation": allocation}})
    return share_id


def test_restart_repairs_half_done_pods_and_removes_orphans(
    cluster: Cluster, controller: Controller, namespace: str
) -> None:
    """The leader died after writing allocations: the next one lifts the gate of a pod whose claims are all
    allocated (without allocating again) and deallocates an allocation of ours that no pod uses."""
    controller.stop()
    try:
        cluster.kube.create(claim_template("small", "2Gi", 10), namespace)
        cluster.kube.create(gated_pod("half", "small"), namespace)

        def generated() -> str | None:
            statuses = (cluster.pod("half", namespace) or {}).get("status", {}).get("resourceClaimStatuses") or []
            return statuses[0].get("resourceClaimName") if statuses else None

        claim_name = wait_for(generated, 60, "the claim of pod half to be created from its template")
        share_id = _allocate_by_hand(cluster, namespace, claim_name, "hami-gpu-3")
        orphan = claim_template("orphan", "2Gi", 10)["spec"]
        cluster.kube.create({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                             "metadata": {"name": "orphan"}, **orphan}, namespace)  # fmt: skip
        _allocate_by_hand(cluster, namespace, "orphan", "hami-gpu-2")
    finally:
        controller.start()

    cluster.wait_pod_phase("half", ["Running"], namespace, timeout=120)
    claim = cluster.kube.get(f"{CLAIMS_API}/namespaces/{namespace}/resourceclaims/{claim_name}")
    assert claim["status"]["allocation"]["devices"]["results"][0]["shareID"] == share_id  # not allocated again
    wait_for(
        lambda: (
            not cluster.kube.get(f"{CLAIMS_API}/namespaces/{namespace}/resourceclaims/orphan")
            .get("status", {})
            .get("allocation")
        ),
        60,
        "the controller to deallocate the orphaned claim",
        details=controller.component.tail,
    )
    assert controller.component.grep("deallocating ResourceClaims no pod can use any more", f"{namespace}/orphan")
