"""The allocation controller against a real kube-apiserver and kube-scheduler (the e2e harness's v1.36 cluster),
next to the stock scheduler placing the same pods on its own.

    python tests/bench/bench_controller.py [--pods 100] [--nodes 50] [--policy binpack] [--json]
    BENCH_CONTROLLER_PODS=1000 python tests/bench/bench_controller.py

Fake nodes: Node objects with no kubelet (pods tolerate the taints the node lifecycle controller puts on them
and select them by label) and one ResourceSlice of 8 fake H100s (80Gi, 100 cores, 10 shares) each, created
straight through the API. Two sets of the same pods (one ResourceClaim of 8Gi / 10 cores each) are created
first, both held by a scheduling gate:

* stock: gated by a gate of the bench's own; the bench lifts all gates at once (16 writers) and kube-scheduler
  allocates and binds them itself (its DRA plugin), as it would without policy mode;
* policy: gated by our gate; `dra-hami controller` starts and places them, the scheduler then binds them.

The script watches the pods: when each gate came off and when the scheduler bound each pod (spec.nodeName).
The pods never run. kube-scheduler's client limits are raised (--scheduler-qps; its default of 50 QPS would
be the bottleneck of both runs alike). Needs root and the e2e binaries (tests/e2e/build.sh).

Reports: placements per second (gate removals over time, from the controller's start and from its first
placement), API writes per pod (the controller's own count), gate-removal-to-bound latency (p50/p99/max),
time until all pods are bound in both runs and their ratio, the controller's decision time from its /metrics,
and a check that no device is over capacity.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from cluster import DRIVER, REPO_ROOT, Cluster, Component, build_binaries, free_port, load_manifests, wait_for

from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.discovery import load_discovery
from dra_hami.publisher.slices import build_pool
from dra_hami.quantity import to_int

GATE = f"{DRIVER}/allocation"
HOLD_GATE = "bench.dra-hami.example/hold"  # the stock run's gate: lifted by the bench, not by our controller
NAMESPACE = "bench"
STOCK_NAMESPACE = "bench-stock"
SERIAL_NAMESPACE = "bench-serial"  # the controller with --writes-in-flight 0 (each write awaited), if asked for
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


def claim(name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    request = {"deviceClassName": DRIVER, "capacity": {"requests": {"memory": "8Gi", "cores": "10"}}}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": request}]}},
    }


def gated_pod(name: str, claim_name: str, namespace: str = NAMESPACE, gate: str = GATE) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedulingGates": [{"name": gate}],
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

    def __init__(self, cluster: Cluster, resource_version: str, namespace: str = NAMESPACE, gate: str = GATE) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.version = resource_version
        self.namespace, self.gate = namespace, gate
        self.ungated: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        pki = self.cluster.pki_dir
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        while not self.stop.is_set():
            url = (
                f"{self.cluster.server}/api/v1/namespaces/{self.namespace}/pods?watch=1&allowWatchBookmarks=true"
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
                if not any(g.get("name") == self.gate for g in pod["spec"].get("schedulingGates") or []):
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
    parser.add_argument("--writes-in-flight", type=int, default=16, help="the controller's --writes-in-flight")
    parser.add_argument(
        "--order",
        default="stock,policy",
        help="the runs, in order: stock and policy, optionally serial (the controller awaiting each write)",
    )
    parser.add_argument("--scheduler-qps", type=int, default=500, help="kube-scheduler's client QPS (0: its default)")
    parser.add_argument("--py-spy", metavar="FILE", help="record the controller with py-spy (raw stacks) into FILE")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    order = args.order.split(",")
    if not {"policy", "stock"} <= set(order) or not set(order) <= {"policy", "stock", "serial"}:
        parser.error("--order: stock and policy (and optionally serial), comma-separated")
    namespaces = {"policy": NAMESPACE, "serial": SERIAL_NAMESPACE, "stock": STOCK_NAMESPACE}

    qps = args.scheduler_qps
    cluster = Cluster(
        build_binaries(), scheduler_args=(f"--kube-api-qps={qps}", f"--kube-api-burst={2 * qps}") if qps else ()
    )
    cluster.start()
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
        for namespace in (namespaces[run] for run in order):
            kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            wait_for(lambda n=namespace: kube.get_or_none(f"/api/v1/namespaces/{n}/serviceaccounts/default"), 60, "SA")

        def make_pods(run: str) -> None:
            namespace, gate = namespaces[run], HOLD_GATE if run == "stock" else GATE

            def make_pod(i: int) -> None:
                kube.create(claim(f"c-{i:04d}", namespace))
                kube.create(gated_pod(f"p-{i:04d}", f"c-{i:04d}", namespace, gate))

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(make_pod, range(args.pods)))

        setup_s = time.monotonic() - t0
        load_before = os.getloadavg()[0]
        runs: dict[str, dict[str, Any]] = {}
        for run in order:
            # Each run's pods are made when its turn comes: a controller would place any pod of ours it sees.
            make_pods(run)
            if run == "stock":
                runs[run] = _run_stock(cluster, args)
            else:
                in_flight = args.writes_in_flight if run == "policy" else 0
                runs[run] = _run_policy(cluster, args, namespaces[run], in_flight)
        overcommitted = _check_capacity(cluster, capacity, tuple(namespaces[run] for run in order))
        result = {
            "pods": args.pods,
            "nodes": args.nodes,
            "policy": args.policy,
            "writes_in_flight": args.writes_in_flight,
            "scheduler_qps": qps,
            "order": order,
            "setup_s": setup_s,
            "load_average": {"before": load_before, "after": os.getloadavg()[0]},
            "runs": runs,
            "policy_to_stock_all_bound": runs["policy"]["all_bound_s"] / runs["stock"]["all_bound_s"],
            "policy_to_stock_all_bound_from_first_placement": (
                runs["policy"]["all_bound_from_first_release_s"] / runs["stock"]["all_bound_s"]
            ),
            "devices_over_capacity": overcommitted,
        }
        if args.json:
            print(json.dumps(result, indent=1))
        else:
            _report(result)
        if any(r["bound"] < args.pods for r in runs.values()) or overcommitted:
            sys.exit(1)
    finally:
        cluster.stop()


def _version(cluster: Cluster, namespace: str) -> str:
    return cluster.kube.get(f"/api/v1/namespaces/{namespace}/pods", limit="1")["metadata"]["resourceVersion"]


def _wait_bound(watch: PodWatch, pods: int, deadline: float, alive: Any = None) -> float:
    while len(watch.bound) < pods and time.monotonic() < deadline:
        if alive is not None:
            alive()
        time.sleep(0.2)
    watch.stop.set()
    return max(watch.bound.values(), default=time.monotonic())


def _latencies(watch: PodWatch) -> dict[str, float]:
    values = [watch.bound[n] - watch.ungated[n] for n in watch.bound if n in watch.ungated]
    if not values:
        return {}
    return {"p50_ms": statistics.median(values) * 1000, "p99_ms": percentile(values, 0.99) * 1000,
            "max_ms": max(values) * 1000}  # fmt: skip


def _run_stock(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    """kube-scheduler alone: the bench lifts its own gate from every pod, the scheduler allocates and binds."""
    kube = cluster.kube
    watch = PodWatch(cluster, _version(cluster, STOCK_NAMESPACE), STOCK_NAMESPACE, HOLD_GATE)
    watch.start()
    started = time.monotonic()

    def release(i: int) -> None:
        path = f"/api/v1/namespaces/{STOCK_NAMESPACE}/pods/p-{i:04d}"
        kube.patch(path, [{"op": "remove", "path": "/spec/schedulingGates"}], "json")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(release, range(args.pods)))
    released = time.monotonic()
    last = _wait_bound(watch, args.pods, started + args.timeout)
    return {
        "released_s": released - started,
        "bound": len(watch.bound),
        "all_bound_s": last - started,
        "release_to_bound": _latencies(watch),
    }


def _run_policy(cluster: Cluster, args: argparse.Namespace, namespace: str, in_flight: int) -> dict[str, Any]:
    """Our controller places the namespace's pods (it sees the others' too, already placed or still held)."""
    watch = PodWatch(cluster, _version(cluster, namespace), namespace)
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
            "--writes-in-flight", str(in_flight),
            "--metrics-bind-address", f"127.0.0.1:{port}",
        ],
        cluster.logs / "dra-hami-controller.log",
        env,
    )  # fmt: skip
    cluster.components[controller.name] = controller
    started = time.monotonic()
    controller.start()
    spy = None
    if args.py_spy and namespace == NAMESPACE:  # the pipelined run only
        assert controller.proc is not None
        time.sleep(1.0)  # py-spy cannot attach before the interpreter is up
        spy = subprocess.Popen(
            [
                "py-spy",
                "record",
                "--nonblocking",
                "--pid",
                str(controller.proc.pid),
                "--format",
                "raw",
                "-r",
                "100",
                "-o",
                args.py_spy,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        last = _wait_bound(watch, args.pods, started + args.timeout, controller.check_alive)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        cluster.components.pop(controller.name, None)
        controller.stop()
    ungated = sorted(watch.ungated.values())
    first, final = (ungated[0], ungated[-1]) if ungated else (started, started)
    decisions = _sample(metrics, "dra_hami_controller_decision_seconds_count")
    writes = {
        kind: _sample(metrics, f'dra_hami_controller_api_writes_total{{write="{kind}"}}')
        for kind in ("allocation", "deallocation", "gate", "condition", "event")
    }
    return {
        "writes_in_flight": in_flight,
        "ungated": len(ungated),
        "bound": len(watch.bound),
        "placements_per_s_first_to_last": (len(ungated) - 1) / max(1e-9, final - first),
        "placements_per_s_from_start": len(ungated) / max(1e-9, final - started),
        "first_placement_s": first - started,
        "all_bound_s": last - started,
        "all_bound_from_first_release_s": last - first,
        "api_writes": writes,
        "api_writes_per_pod": sum(writes.values()) / max(1, len(ungated)),
        "decision_ms_mean": _sample(metrics, "dra_hami_controller_decision_seconds_sum") / max(1, decisions) * 1000,
        "decisions": decisions,
        "release_to_bound": _latencies(watch),
    }


def _report(r: dict[str, Any]) -> None:
    policy = r["runs"]["policy"]
    print(f"\ncluster: {r['nodes']} fake nodes x 8 GPUs; {r['pods']} gated pods per run, 1 claim each (8Gi, 10 cores)")
    print(f"setup: {r['setup_s']:.1f} s; policy {r['policy']}/{r['policy']}; writes in flight {r['writes_in_flight']}; "
          f"kube-scheduler QPS {r['scheduler_qps'] or 'default'}; order {','.join(r['order'])}; "
          f"load average {r['load_average']['before']:.1f} -> {r['load_average']['after']:.1f}")  # fmt: skip
    print(f"policy: placements/s {policy['placements_per_s_first_to_last']:.1f} first to last, "
          f"{policy['placements_per_s_from_start']:.1f} from controller start (first placement at "
          f"{policy['first_placement_s']:.1f} s); API writes per pod {policy['api_writes_per_pod']:.2f} "
          f"{policy['api_writes']}; decision mean {policy['decision_ms_mean']:.2f} ms")  # fmt: skip
    if "serial" in r["runs"]:
        serial = r["runs"]["serial"]
        print(f"serial (each write awaited): placements/s {serial['placements_per_s_first_to_last']:.1f} first to "
              f"last; all bound {serial['all_bound_s']:.1f} s; pipelined / serial placements/s "
              f"{policy['placements_per_s_first_to_last'] / serial['placements_per_s_first_to_last']:.2f}")  # fmt: skip
    for name, run in r["runs"].items():
        lat = run["release_to_bound"]
        p50, p99, top = (lat.get(k, 0.0) for k in ("p50_ms", "p99_ms", "max_ms"))
        print(f"{name}: bound {run['bound']}/{r['pods']}, all bound {run['all_bound_s']:.1f} s; gate removal -> bound "
              f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {top:.0f} ms")  # fmt: skip
    print(f"policy / stock time to all bound: {r['policy_to_stock_all_bound']:.2f} from controller start, "
          f"{r['policy_to_stock_all_bound_from_first_placement']:.2f} from its first placement")  # fmt: skip
    print(f"devices over capacity: {r['devices_over_capacity'] or 'none'}")


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _check_capacity(
    cluster: Cluster, capacity: dict[tuple[str, str], dict[str, int]], namespaces: tuple[str, ...] = (NAMESPACE,)
) -> list[str]:
    used: dict[tuple[str, str], dict[str, int]] = {}
    shares: set[str] = set()
    claims = [
        c for ns in namespaces for c in cluster.kube.get(f"{RESOURCE_API}/namespaces/{ns}/resourceclaims")["items"]
    ]
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
