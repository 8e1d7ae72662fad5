"""The allocation controller against a real kube-apiserver and kube-scheduler (the e2e harness's v1.36 cluster).

    python tests/bench/bench_controller.py [--pods 100] [--nodes 50] [--policy binpack]
    BENCH_CONTROLLER_PODS=1000 python tests/bench/bench_controller.py

Fake nodes: Node objects with no kubelet (pods tolerate the taints the node lifecycle controller puts on them
and select them by label) and one ResourceSlice of 8 fake H100s (80Gi, 100 cores, 10 shares) each, created
straight through the API. All ResourceClaims (8Gi, 10 cores) and gated pods are created first; then
`dra-hami controller` starts and the script watches the pods: when each gate came off and when the scheduler
bound each pod (spec.nodeName). The pods never run. Needs root and the e2e binaries (tests/e2e/build.sh).

Reports: placements per second (gate removals over time, from the controller's start and from its first
placement), gate-removal-to-bound latency (p50/p99/max), the controller's own decision time from its /metrics,
and a check that no device is over capacity.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from cluster import DRIVER, REPO_ROOT, Cluster, Component, build_binaries, free_port, load_manifests, wait_for

from dra_hami.discovery import load_discovery
from dra_hami.publisher.config import PublisherConfig
from dra_hami.publisher.slices import build_pool
from dra_hami.quantity import to_int

GATE = f"{DRIVER}/allocation"
NAMESPACE = "bench"
LABEL = "dra-hami.project-hami.io/bench"
RESOURCE_API = "/apis/resource.k8s.io/v1"


def fake_node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {LABEL: "true", "kubernetes.io/hostname": name}},
    }


def node_status() -> dict[str, Any]:
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110"}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ready = {"type": "Ready", "status": "True", "reason": "Bench", "lastHeartbeatTime": now, "lastTransitionTime": now}
    return {"status": {"capacity": resources, "allocatable": resources, "conditions": [ready]}}


def claim(name: str) -> dict[str, Any]:
    request = {"deviceClassName": DRIVER, "capacity": {"requests": {"memory": "8Gi", "cores": "10"}}}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": request}]}},
    }


def gated_pod(name: str, claim_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "schedulingGates": [{"name": GATE}],
            "nodeSelector": {LABEL: "true"},
            "tolerations": [{"operator": "Exists"}],  # the fake nodes never report: not-ready/unreachable taints
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "main",
                    "image": "bench/none:1",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "claims": [{"name": "gpu"}]},
                }
            ],
            "resourceClaims": [{"name": "gpu", "resourceClaimName": claim_name}],
        },
    }


class PodWatch(threading.Thread):
    """Records when each pod of the namespace lost its gate and when it got a node."""

    def __init__(self, cluster: Cluster, resource_version: str) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.version = resource_version
        self.ungated: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        pki = self.cluster.pki_dir
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        while not self.stop.is_set():
            url = (
                f"{self.cluster.server}/api/v1/namespaces/{NAMESPACE}/pods?watch=1&allowWatchBookmarks=true"
                f"&resourceVersion={self.version}&timeoutSeconds=60"
            )
            try:
                self._watch(url, ctx)
            except OSError as err:
                print(f"pod watch: {err}; watching again", file=sys.stderr)
                time.sleep(1)

    def _watch(self, url: str, ctx: ssl.SSLContext) -> None:
        with urllib.request.urlopen(url, context=ctx, timeout=90) as stream:
            for line in stream:
                now = time.monotonic()
                event = json.loads(line)
                pod = event.get("object") or {}
                self.version = pod.get("metadata", {}).get("resourceVersion", self.version)
                if event.get("type") not in ("ADDED", "MODIFIED"):
                    continue
                name = pod["metadata"]["name"]
                if not any(g.get("name") == GATE for g in pod["spec"].get("schedulingGates") or []):
                    self.ungated.setdefault(name, now)
                if pod["spec"].get("nodeName"):
                    self.bound.setdefault(name, now)
                if self.stop.is_set():
                    return


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=int(os.environ.get("BENCH_CONTROLLER_PODS", "100")))
    parser.add_argument("--nodes", type=int, default=int(os.environ.get("BENCH_CONTROLLER_NODES", "50")))
    parser.add_argument("--policy", default="binpack", choices=["binpack", "spread"])
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()

    cluster = Cluster(build_binaries())
    cluster.start()
    controller: Component | None = None
    try:
        kube = cluster.kube
        (device_class,) = load_manifests(REPO_ROOT / "examples" / "deviceclass.yaml")
        kube.apply(device_class)
        gpus = load_discovery("h100x8").discover()
        capacity: dict[tuple[str, str], dict[str, int]] = {}
        t0 = time.monotonic()

        def make_node(i: int) -> None:
            name = f"bench-node-{i:03d}"
            kube.create(fake_node(name))
            kube.patch(f"/api/v1/nodes/{name}/status", node_status(), "strategic")
            for s in build_pool(gpus, PublisherConfig(node_name=name), generation=1):
                kube.create(s)
                for d in s["spec"]["devices"]:
                    capacity[(name, d["name"])] = {k: to_int(v["value"], k) for k, v in d["capacity"].items()}

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(make_node, range(args.nodes)))
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        wait_for(lambda: kube.get_or_none(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"), 60, "bench SA")

        def make_pod(i: int) -> None:
            kube.create(claim(f"c-{i:04d}"))
            kube.create(gated_pod(f"p-{i:04d}", f"c-{i:04d}"))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(make_pod, range(args.pods)))
        setup_s = time.monotonic() - t0
        version = kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods", limit="1")["metadata"]["resourceVersion"]
        watch = PodWatch(cluster, version)
        watch.start()

        port = free_port()
        env = {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
        controller = Component(
            "dra-hami-controller",
            [
                sys.executable, "-m", "dra_hami", "controller",
                "--kubeconfig", str(cluster.admin_kubeconfig),
                "--identity", "bench", "--lease-namespace", "default",
                "--node-policy", args.policy, "--gpu-policy", args.policy,
                "--metrics-bind-address", f"127.0.0.1:{port}",
            ],
            cluster.logs / "dra-hami-controller.log",
            env,
        )  # fmt: skip
        cluster.components[controller.name] = controller
        started = time.monotonic()
        controller.start()
        deadline = started + args.timeout
        while len(watch.bound) < args.pods and time.monotonic() < deadline:
            controller.check_alive()
            time.sleep(0.5)
        finished = time.monotonic()
        watch.stop.set()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()

        ungated = sorted(watch.ungated.values())
        latencies = [watch.bound[n] - watch.ungated[n] for n in watch.bound if n in watch.ungated]
        first, last = (ungated[0], ungated[-1]) if ungated else (started, started)
        decision_sum = _sample(metrics, "dra_hami_controller_decision_seconds_sum")
        decision_count = _sample(metrics, "dra_hami_controller_decision_seconds_count")
        overcommitted = _check_capacity(cluster, capacity)
        print(f"\ncluster: {args.nodes} fake nodes x 8 GPUs; {args.pods} gated pods, 1 claim each (8Gi, 10 cores)")
        print(f"setup (nodes, slices, claims, pods): {setup_s:.1f} s; policy {args.policy}/{args.policy}")
        print(f"gates removed: {len(ungated)}/{args.pods}; bound: {len(watch.bound)}/{args.pods}")
        if ungated:
            print(
                f"placements/s: {len(ungated) / (last - started):.1f} from controller start "
                f"({last - started:.1f} s, start-up included), "
                f"{(len(ungated) - 1) / max(1e-9, last - first):.1f} from first to last placement"
            )
        if latencies:
            print(
                f"gate removal -> bound: p50 {statistics.median(latencies) * 1000:.0f} ms, "
                f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
                f"all bound {finished - started:.1f} s after controller start"
            )
        if decision_count:
            print(f"controller decision time: mean {decision_sum / decision_count * 1000:.2f} ms over "
                  f"{decision_count:.0f} decisions")  # fmt: skip
        print(f"devices over capacity: {overcommitted or 'none'}")
        if len(watch.bound) < args.pods or overcommitted:
            sys.exit(1)
    finally:
        if controller is not None:
            controller.stop()
        cluster.stop()


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _check_capacity(cluster: Cluster, capacity: dict[tuple[str, str], dict[str, int]]) -> list[str]:
    used: dict[tuple[str, str], dict[str, int]] = {}
    shares: set[str] = set()
    claims = cluster.kube.get(f"{RESOURCE_API}/namespaces/{NAMESPACE}/resourceclaims")["items"]
    for c in claims:
        for r in ((c.get("status") or {}).get("allocation") or {}).get("devices", {}).get("results", []):
            assert r["shareID"] not in shares, f"shareID {r['shareID']} used twice"
            shares.add(r["shareID"])
            row = used.setdefault((r["pool"], r["device"]), {})
            for key, value in r.get("consumedCapacity", {}).items():
                row[key] = row.get(key, 0) + to_int(value, key)
    return [
        f"{pool}/{device} {key}"
        for (pool, device), row in sorted(used.items())
        for key, value in row.items()
        if value > capacity[(pool, device)][key]
    ]


if __name__ == "__main__":
    main()
