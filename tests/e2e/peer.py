"""The peer comparison's harness: the upstream example DRA driver as a subprocess, a burst of pods, the figures.

The same workload runs against dra-hami and against the upstream example driver (``sigs.k8s.io/dra-example-driver``,
built by build.sh as ``bin/dra-example-kubeletplugin``): N pods, each with its own claim from one
ResourceClaimTemplate, created at once. Measured per run:

- the wall time from the first pod create to all pods Running (and to all pods scheduled), by polling the API;
- the latency of every NodePrepareResources call, timed at the kubelet. The kubelet logs each call before and
  after it (``--vmodule=dra_plugin=4``) with the pod and the driver name; the pairs give the round trip the
  kubelet waits for, the same measuring point for both drivers. The kubelet's own histogram
  (``dra_grpc_operations_duration_seconds``) starts at a 100 ms bucket, too coarse for drivers this fast.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster import Cluster, Component, HarnessError, wait_for
from e2e_objects import CLAIMS_API, busybox_pod

EXAMPLE_DRIVER = "gpu.example.com"  # the example driver's fixed driver name; its DeviceClass has the same name
EXAMPLE_BINARY = "dra-example-kubeletplugin"


def example_device_class() -> dict[str, Any]:
    """The DeviceClass the example driver's Helm chart installs: every device of its driver."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": EXAMPLE_DRIVER},
        "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{EXAMPLE_DRIVER}'"}}]},
    }


class ExampleDriverPlugin:
    """The example driver's kubelet plugin, wired to the cluster's kubelet, API server and CDI dir.

    Its devices are fake GPUs of 80Gi each, ``gpu-0`` ... ``gpu-<n-1>``, one claim per device (this release
    does not share devices). ``qps``/``burst`` are its API client's rate limits (its defaults are 5/10).
    """

    def __init__(self, cluster: Cluster, num_devices: int, qps: int = 5, burst: int = 10) -> None:
        if num_devices < 1:
            raise ValueError(f"num_devices must be at least 1, got {num_devices}")
        self.cluster = cluster
        self.num_devices = num_devices
        self.qps, self.burst = qps, burst
        self.component: Component | None = None

    def args(self) -> list[str]:
        return [
            self.cluster.binary(EXAMPLE_BINARY),
            "--node-name", self.cluster.node_name,
            "--kubeconfig", str(self.cluster.admin_kubeconfig),
            "--kube-api-qps", str(self.qps),
            "--kube-api-burst", str(self.burst),
            "--cdi-root", str(self.cluster.cdi_dir),
            "--num-devices", str(self.num_devices),
            "--kubelet-registrar-directory-path", str(self.cluster.plugins_registry),
            "--kubelet-plugins-directory-path", str(self.cluster.plugins_dir),
            "-v", "2",
        ]  # fmt: skip

    def start(self, timeout: float = 60) -> ExampleDriverPlugin:
        registered_before = len(self._registrations())
        self.component = Component(
            "dra-example-kubeletplugin",
            self.args(),
            self.cluster.logs / "dra-example-kubeletplugin.log",
            env={"NODE_NAME": self.cluster.node_name},  # it seeds its fake UUIDs from the env var, not the flag
        )
        self.cluster.components[self.component.name] = self.component
        self.component.start()

        def ready() -> bool:
            self.component.check_alive()
            devices = [d for s in self.slices() for d in s["spec"].get("devices", [])]
            return len(devices) == self.num_devices and len(self._registrations()) > registered_before

        wait_for(
            ready,
            timeout,
            f"the example driver to register and publish {self.num_devices} devices",
            details=lambda: f"{self.component.tail(30)}\n--- kubelet\n{self.cluster.components['kubelet'].tail(10)}",
        )
        return self

    def _registrations(self) -> list[str]:
        return self.cluster.components["kubelet"].grep("Registered DRA plugin", f'driverName="{EXAMPLE_DRIVER}"')

    def slices(self) -> list[dict[str, Any]]:
        return self.cluster.kube.get(
            "/apis/resource.k8s.io/v1/resourceslices",
            fieldSelector=f"spec.nodeName={self.cluster.node_name},spec.driver={EXAMPLE_DRIVER}",
        ).get("items", [])

    def stop(self) -> None:
        """Stop it, remove its slices (the kubelet would only after a grace period) and its common CDI spec."""
        if self.component is not None:
            self.component.stop()
            # a stopped component left in the cluster would fail every later check_alive() (wait_pod_phase, ...)
            self.cluster.components.pop(self.component.name, None)
        for spec in self.cluster.cdi_dir.glob(f"k8s.{EXAMPLE_DRIVER}*"):  # its claims' specs went at unprepare
            spec.unlink(missing_ok=True)
        self.cluster.kube.delete(
            "/apis/resource.k8s.io/v1/resourceslices",
            fieldSelector=f"spec.nodeName={self.cluster.node_name},spec.driver={EXAMPLE_DRIVER}",
        )


# ----------------------------------------------------------------------------------------------- the workload


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): the smallest value with at least q% of the values at or below it."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 < q <= 100:
        raise ValueError(f"q must be in (0, 100], got {q}")
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


_KLOG_TIME = re.compile(r"^[IWEF]\d{4} (\d{2}):(\d{2}):(\d{2})\.(\d{6}) ")
_DRIVER = re.compile(r' driverName="([^"]+)"')
# The kubelet logs the request and the response as protobuf text: the claim UID is `uid:\"...\"` in the
# request and the map key `key:\"...\"` in the response (one claim per call here: one claim per pod).
_REQUEST_UID = re.compile(r'request="claims:\{[^}]*?uid:\\"([0-9a-f-]{36})\\"')
_RESPONSE_UID = re.compile(r'response="claims:\{key:\\"([0-9a-f-]{36})\\"')
_CALL = '"Calling NodePrepareResources rpc"'
_DONE = '"Done calling NodePrepareResources rpc"'


def _klog_seconds(line: str) -> float | None:
    m = _KLOG_TIME.match(line)
    if not m:
        return None
    h, mi, s, us = (int(g) for g in m.groups())
    return h * 3600 + mi * 60 + s + us / 1e6


@dataclass
class PrepareCalls:
    """NodePrepareResources calls to one driver, as the kubelet saw them."""

    seconds: dict[str, float] = field(default_factory=dict)  # claim UID -> round trip of its successful call
    failed: int = 0  # calls answered with an error (their answer names no claim: not timed)
    unanswered: int = 0  # calls with no answer in the log (yet)


def prepare_rpc_latencies(lines: Iterable[str], driver: str) -> PrepareCalls:
    """Round trips of the NodePrepareResources calls to ``driver``, from the kubelet's log lines.

    A call is paired with the answer that names its claim; after a failed call, the retry's call is the one
    paired (the latest call of a claim wins).
    """
    calls = PrepareCalls()
    started: dict[str, float] = {}
    for line in lines:
        is_call, is_done = _CALL in line, _DONE in line
        if not (is_call or is_done):
            continue
        d, t = _DRIVER.search(line), _klog_seconds(line)
        if d is None or t is None or d.group(1) != driver:
            continue
        if is_call:
            if m := _REQUEST_UID.search(line):
                started[m.group(1)] = t
        elif (m := _RESPONSE_UID.search(line)) and m.group(1) in started:
            dt = t - started.pop(m.group(1))
            calls.seconds[m.group(1)] = dt + 86400 if dt < 0 else dt  # a run across midnight
        else:
            calls.failed += 1
    calls.unanswered = max(0, len(started) - calls.failed)
    return calls


@dataclass
class BurstResult:
    driver: str
    pods: int
    scheduled_s: float  # first create -> every pod has PodScheduled=True
    running_s: float  # first create -> every pod Running
    prepare_s: list[float] = field(default_factory=list)  # every NodePrepareResources round trip, seconds
    claim_uids: set[str] = field(default_factory=set)
    failed_prepares: int = 0  # NodePrepareResources calls that the driver answered with an error

    @property
    def prepare_p50_ms(self) -> float:
        return percentile(self.prepare_s, 50) * 1000

    @property
    def prepare_p99_ms(self) -> float:
        return percentile(self.prepare_s, 99) * 1000

    def row(self) -> str:
        prepare = (
            f"prepare p50={self.prepare_p50_ms:6.1f}ms p99={self.prepare_p99_ms:6.1f}ms"
            if self.prepare_s
            else "prepare: no timed calls"
        )
        return (
            f"{self.driver:30s} pods={self.pods} all-scheduled={self.scheduled_s:6.2f}s "
            f"all-Running={self.running_s:6.2f}s {prepare} (timed={len(self.prepare_s)}, "
            f"failed={self.failed_prepares})"
        )


def _scheduled(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "PodScheduled" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", [])
    )


def run_burst(cluster: Cluster, namespace: str, driver: str, template: dict[str, Any], pods: int,
              timeout: float = 180) -> BurstResult:  # fmt: skip
    """Create ``pods`` pods at once (each with a claim from ``template``) and time them to Running."""
    kube = cluster.kube
    tname = template["metadata"]["name"]
    kube.create(template, namespace)
    kubelet_log = cluster.components["kubelet"].log_path
    log_offset = kubelet_log.stat().st_size
    selector = f"peer-run={tname}"

    def listed() -> list[dict[str, Any]]:
        return kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector).get("items", [])

    bodies = [busybox_pod(f"{tname}-{i:03d}", "exec sleep 3600", template=tname, labels={"peer-run": tname})
              for i in range(pods)]  # fmt: skip
    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as pool:  # "at once": the API server sees them within a fraction of a second
        list(pool.map(lambda pod: kube.create(pod, namespace), bodies))
    scheduled_at: float | None = None

    def all_running() -> bool:
        nonlocal scheduled_at
        cluster.check_alive()
        items = listed()
        failed = [p["metadata"]["name"] for p in items if p.get("status", {}).get("phase") in ("Failed", "Succeeded")]
        if failed:
            raise HarnessError(f"pods ended before the run did: {failed}\n{cluster.describe_pod(failed[0], namespace)}")
        if scheduled_at is None and len(items) == pods and all(_scheduled(p) for p in items):
            scheduled_at = time.monotonic()
        return len(items) == pods and all(p.get("status", {}).get("phase") == "Running" for p in items)

    def pending_details() -> str:
        items = listed()
        slow = [p["metadata"]["name"] for p in items if p.get("status", {}).get("phase") != "Running"]
        return f"{len(slow)} of {pods} pods not Running\n" + (cluster.describe_pod(slow[0], namespace) if slow else "")

    wait_for(all_running, timeout, f"{pods} pods of {driver} to be Running", interval=0.2, details=pending_details)
    running_s = time.monotonic() - t0
    scheduled_s = (scheduled_at or time.monotonic()) - t0

    claims = kube.get(f"{CLAIMS_API}/namespaces/{namespace}/resourceclaims").get("items", [])
    uids = {c["metadata"]["uid"] for c in claims if c["metadata"]["name"].startswith(tname)}
    with kubelet_log.open(errors="replace") as f:
        f.seek(log_offset)
        calls = prepare_rpc_latencies(f, driver)
    latencies = [dt for uid, dt in calls.seconds.items() if uid in uids]
    return BurstResult(driver, pods, scheduled_s, running_s, latencies, uids, calls.failed)


def clean_up_burst(cluster: Cluster, namespace: str, result: BurstResult, cdi_dir: Path, timeout: float = 120) -> None:
    """Delete the run's pods and wait until every claim is unprepared (its CDI spec gone) and deleted."""
    kube = cluster.kube
    pods = kube.get(f"/api/v1/namespaces/{namespace}/pods").get("items", [])
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: cluster.delete_pod(p["metadata"]["name"], namespace, wait=False), pods))

    def unprepared() -> bool:
        cluster.check_alive()
        specs = " ".join(p.name for p in cdi_dir.iterdir())
        claims = kube.get(f"{CLAIMS_API}/namespaces/{namespace}/resourceclaims").get("items", [])
        return not any(uid in specs for uid in result.claim_uids) and not claims

    wait_for(unprepared, timeout, f"the {result.pods} claims of {result.driver} to be unprepared and deleted",
             details=lambda: f"CDI dir: {sorted(p.name for p in cdi_dir.iterdir())}")  # fmt: skip
