"""Fixtures of the e2e suite: a real v1.36 control plane, kubelet and containerd on 127.0.0.1 (see cluster.py).

Fixtures (all lazy: nothing is built or started unless a test asks for one):
  e2e_bin_dir  session  the binaries of tests/e2e/build.sh (builds them when the cache is cold, ~20 min, with its
                        progress on the terminal; run tests/e2e/build.sh first to see it outside pytest)
  cluster      session  the running Cluster (API: cluster.kube, pods: cluster.wait_pod_phase / pod_log, ...)
  images       session  the cluster's ImageStore: busybox and pause are imported; ``images.add(ImageSpec(...))``
  hami_plugin  session  the dra-hami kubelet plugin (fake t4x2 GPUs) running against the cluster
  device_class session  the DeviceClass of examples/deviceclass.yaml, created
  namespace    function a fresh namespace, deleted afterwards

A harness failure (no Go module proxy, a component that does not start) is an error, never a skip.
Environment: DRA_HAMI_CACHE (build cache root), E2E_KEEP=1 (keep the harness dir's state after the run),
E2E_SNAPSHOTTER (overlayfs|native), E2E_FEATURE_GATES (extra/overriding gates, ``Name=true,...``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from pathlib import Path

import netns
import pytest
from cluster import DRIVER, REPO_ROOT, Cluster, HamiPlugin, build_binaries, load_manifests, wait_for
from shipped_image import BuiltImage
from shipped_image import build as build_image

_state: dict[str, Cluster] = {}


@pytest.fixture(scope="session")
def e2e_bin_dir(request: pytest.FixtureRequest) -> Path:
    if os.geteuid() != 0:
        why = "the e2e cluster needs root (kubelet, containerd, runc): run `pytest -m e2e` as root"
        pytest.fail(why, pytrace=False)
    t0 = time.monotonic()
    # Output capture off while build.sh runs, so a cold build shows its progress instead of a silent pause.
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        bin_dir = build_binaries(stream=True)
    sys.stderr.write(f"\n[e2e] binaries ready in {time.monotonic() - t0:.1f} s: {bin_dir}\n")
    return bin_dir


@pytest.fixture(scope="session")
def cluster(e2e_bin_dir: Path):
    c = Cluster(e2e_bin_dir)
    _state["cluster"] = c
    try:
        c.start()
    except BaseException:
        c.stop(keep=True)
        raise
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in c.timings.items())
    sys.stderr.write(f"\n[e2e] cluster up in {c.timings['total']:.1f} s ({timings}); dir {c.dir}\n")
    yield c
    c.stop()
    _state.pop("cluster", None)


@pytest.fixture(scope="session")
def images(cluster: Cluster):
    return cluster.images


@pytest.fixture(scope="session")
def hami_plugin(cluster: Cluster):
    plugin = HamiPlugin(cluster).start()

    def published() -> bool:
        plugin.check_alive()
        return bool(plugin.slices()) and plugin.kubelet_registered()

    wait_for(
        published,
        60,
        "the dra-hami plugin to register with the kubelet and publish its ResourceSlices",
        details=lambda: (
            f"slices: {len(plugin.slices())}; registered: {plugin.kubelet_registered()}\n"
            f"--- plugin log\n{plugin.component.tail(40)}\n--- kubelet log\n{cluster.components['kubelet'].tail(20)}"
        ),
    )
    yield plugin
    plugin.stop()


@pytest.fixture(scope="session")
def device_class(cluster: Cluster) -> dict:
    (obj,) = load_manifests(REPO_ROOT / "examples" / "deviceclass.yaml")
    assert obj["metadata"]["name"] == DRIVER
    return cluster.kube.apply(obj)


@pytest.fixture(scope="session")
def shipped_image(cluster: Cluster) -> BuiltImage:
    """The product image (build_image.sh; built in the host's namespace when its cache is cold), imported into the
    cluster's containerd under the name the chart's default values give (docker.io/library/dra-hami:<version>)."""
    built = build_image()
    proc = cluster.ctr("images", "import", "--platform", "linux/amd64", str(built.archive), timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"ctr images import {built.archive} failed: {proc.stderr.strip()}", pytrace=False)
    return built


@pytest.fixture
def namespace(cluster: Cluster):
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    wait_for(
        lambda: cluster.kube.get_or_none(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        60,
        f"the default service account of namespace {name}",
    )
    yield name
    for pod in cluster.kube.get(f"/api/v1/namespaces/{name}/pods").get("items", []):
        cluster.kube.delete(f"/api/v1/namespaces/{name}/pods/{pod['metadata']['name']}", grace_seconds=0)
    cluster.kube.delete(f"/api/v1/namespaces/{name}")


@contextlib.contextmanager
def _in_cluster_netns():
    """Each test phase of this suite runs in the cluster's network namespace once the cluster is up (the component
    addresses, the pods and the Services are there), and the thread is back where it was afterwards."""
    with netns.restored():
        c = _state.get("cluster")
        if c is not None and c.netns.exists():
            c.netns.enter()
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    with _in_cluster_netns():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with _in_cluster_netns():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    with _in_cluster_netns():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    c = _state.get("cluster")
    if report.failed and c is not None and "cluster" in getattr(item, "fixturenames", ()):
        report.sections.append(("e2e component logs", c.diagnostics(30)))
    return report
