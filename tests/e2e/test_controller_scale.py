"""Issue 5's scale scenario in CI: `dra-hami controller` places 100 gated pods on Node objects without a kubelet.

The scenario of tests/bench/bench_controller.py (its objects, pod watch and capacity check are imported from
it), on the session's cluster and smaller: 20 fake nodes, each with one ResourceSlice of 8 fake H100s (80Gi,
100 cores, 10 shares); 100 ResourceClaims of 8Gi / 10 cores and 100 pods gated by our scheduling gate. The
controller starts once everything exists; every pod must lose its gate and be bound by the scheduler to a
fake node, and no device may hold more than its capacity. Placements per second are printed (the benchmark
itself, with 1,000 pods, is the bench script's job).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from cluster import DRIVER, REPO_ROOT, Cluster, Component, free_port, wait_for

from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.discovery import load_discovery
from dra_hami.publisher.slices import build_pool
from dra_hami.quantity import to_int

sys.path.insert(0, str(REPO_ROOT / "tests" / "bench"))
import bench_controller as bench  # tests/bench is not a package: its directory is put on the path

pytestmark = pytest.mark.e2e

PODS = 100
NODES = 20
RESOURCE_API = "/apis/resource.k8s.io/v1"
Capacity = dict[tuple[str, str], dict[str, int]]


def node_name(i: int) -> str:
    return f"scale-node-{i:03d}"


@pytest.fixture
def fake_nodes(cluster: Cluster, device_class: dict) -> Iterator[Capacity]:
    """NODES kubelet-less Nodes, each with a published pool of 8 fake H100s; all removed afterwards."""
    kube = cluster.kube
    gpus = load_discovery("h100x8").discover()
    capacity: Capacity = {}

    def make_node(i: int) -> None:
        name = node_name(i)
        kube.create(bench.fake_node(name))
        kube.patch(f"/api/v1/nodes/{name}/status", bench.node_status(), "strategic")
        for s in build_pool(gpus, PublisherConfig(node_name=name), generation=1):
            kube.create(s)
            for d in s["spec"]["devices"]:
                capacity[(name, d["name"])] = {k: to_int(v["value"], k) for k, v in d["capacity"].items()}

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(make_node, range(NODES)))
        yield capacity
    finally:
        for i in range(NODES):
            name = node_name(i)
            for s in kube.get(f"{RESOURCE_API}/resourceslices", fieldSelector=f"spec.nodeName={name}")["items"]:
                kube.delete(f"{RESOURCE_API}/resourceslices/{s['metadata']['name']}")
            kube.delete(f"/api/v1/nodes/{name}")


@pytest.fixture
def bench_namespace(cluster: Cluster) -> Iterator[str]:
    """The bench's fixed namespace (its objects name it); pods are force-deleted, claims go with it."""
    kube = cluster.kube
    ns = bench.NAMESPACE
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    wait_for(lambda: kube.get_or_none(f"/api/v1/namespaces/{ns}/serviceaccounts/default"), 60, f"namespace {ns}")
    try:
        yield ns
    finally:
        for pod in kube.get(f"/api/v1/namespaces/{ns}/pods").get("items", []):
            kube.delete(f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}", grace_seconds=0)
        kube.delete(f"/api/v1/namespaces/{ns}")  # its claims go with it


def test_controller_places_100_gated_pods_on_kubeletless_nodes(
    cluster: Cluster, fake_nodes: Capacity, bench_namespace: str
) -> None:
    kube = cluster.kube
    t0 = time.monotonic()

    def make_pod(i: int) -> None:
        kube.create(bench.claim(f"c-{i:04d}"))
        kube.create(bench.gated_pod(f"p-{i:04d}", f"c-{i:04d}"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(make_pod, range(PODS)))
    setup_s = time.monotonic() - t0
    version = kube.get(f"/api/v1/namespaces/{bench_namespace}/pods", limit="1")["metadata"]["resourceVersion"]
    watch = bench.PodWatch(cluster, version)
    watch.start()

    port = free_port()
    controller = Component(
        "dra-hami-controller-scale",
        [
            sys.executable, "-m", "dra_hami", "controller",
            "--kubeconfig", str(cluster.admin_kubeconfig),
            "--identity", "scale", "--lease-namespace", "default", "--lease-name", "dra-hami-controller-scale",
            "--node-policy", "binpack", "--gpu-policy", "binpack",
            "--metrics-bind-address", f"127.0.0.1:{port}",
        ],
        cluster.logs / "dra-hami-controller-scale.log",
        {"PYTHONPATH": f"{REPO_ROOT}:{os.environ.get('PYTHONPATH', '')}".rstrip(":"), "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    cluster.components[controller.name] = controller
    started = time.monotonic()
    controller.start()
    try:

        def all_bound() -> bool:
            controller.check_alive()
            return len(watch.bound) >= PODS

        wait_for(
            all_bound,
            45,
            f"all {PODS} pods to be placed and bound",
            details=lambda: f"ungated {len(watch.ungated)}, bound {len(watch.bound)}\n{controller.tail(30)}",
        )
        finished = time.monotonic()
    finally:
        watch.stop.set()
        cluster.components.pop(controller.name, None)  # stopped on purpose: not a harness failure
        controller.stop()

    pods = kube.get(f"/api/v1/namespaces/{bench_namespace}/pods")["items"]
    assert len(pods) == PODS
    for pod in pods:
        assert not pod["spec"].get("schedulingGates"), pod["metadata"]["name"]
        assert pod["spec"].get("nodeName") in {node_name(i) for i in range(NODES)}, pod["spec"]
    claims = kube.get(f"{RESOURCE_API}/namespaces/{bench_namespace}/resourceclaims")["items"]
    for claim in claims:
        (result,) = claim["status"]["allocation"]["devices"]["results"]
        assert result["driver"] == DRIVER and (result["pool"], result["device"]) in fake_nodes, result
    assert len(claims) == PODS
    assert bench._check_capacity(cluster, fake_nodes) == []  # also fails on a shareID used twice

    ungated = sorted(watch.ungated.values())
    span = ungated[-1] - ungated[0]
    print(f"\n{NODES} fake nodes x 8 GPUs, {PODS} gated pods (8Gi, 10 cores each); setup {setup_s:.1f} s")
    print(
        f"placements/s: {PODS / (ungated[-1] - started):.1f} from controller start (start-up included), "
        f"{(PODS - 1) / max(span, 1e-9):.1f} first to last; all bound {finished - started:.1f} s after start"
    )
