"""First e2e scenarios: the cluster itself, a plain pod, the dra-hami plugin's registration, one GPU-slice pod."""

from __future__ import annotations

import json
import ssl
import urllib.request

import pytest
from cluster import DRIVER, Cluster, HamiPlugin, wait_for
from e2e_images import IMAGE_PREFIX
from e2e_objects import CLAIMS_API, busybox_pod, claim_template

pytestmark = pytest.mark.e2e


def test_control_plane_healthy_and_node_ready(cluster: Cluster) -> None:
    cluster.check_alive()
    assert cluster.kube.get("/readyz") == "ok"
    assert cluster.kube.get("/livez") == "ok"
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    for port in (cluster.ports.controller_manager, cluster.ports.scheduler):
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=insecure, timeout=5) as resp:
            assert resp.read() == b"ok"
    version = cluster.kube.get("/version")
    assert version["gitVersion"].startswith("v1.36."), version

    node = cluster.node()
    assert node is not None
    assert cluster.node_ready(), cluster.node_conditions()
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == version["gitVersion"]
    assert info["containerRuntimeVersion"].startswith("containerd://2."), info
    # resource.k8s.io/v1 is served, with the consumable-capacity fields (DRAConsumableCapacity on)
    groups = cluster.kube.get("/apis/resource.k8s.io")
    assert "v1" in [v["version"] for v in groups["versions"]]


def test_busybox_pod_runs_to_completion(cluster: Cluster, namespace: str) -> None:
    cluster.kube.create(busybox_pod("hello", "echo hello from e2e; id -u; echo to-stderr >&2"), namespace)
    pod = cluster.wait_pod_phase("hello", ["Succeeded"], namespace, timeout=120)
    assert pod["spec"]["nodeName"] == cluster.node_name
    log = cluster.pod_log("hello", "main", namespace)
    # stdout and stderr are separate pipes: only the order within each stream is defined
    assert [line for line in log.splitlines() if line != "to-stderr"] == ["hello from e2e", "0"], log
    assert "to-stderr" in log.splitlines(), log


def test_images_fixture_adds_an_image(cluster: Cluster, images, namespace: str, tmp_path) -> None:
    """What later scenarios do to ship a test program: busybox plus files, imported, then run."""
    (tmp_path / "hello.sh").write_text("#!/bin/sh\necho hello from an added image\n")
    (tmp_path / "hello.sh").chmod(0o755)
    name = images.add_busybox_based(f"{IMAGE_PREFIX}/extra:1", {"/usr/bin/hello": tmp_path / "hello.sh"})
    assert name in images.list()
    cluster.kube.create(busybox_pod("extra", "hello", image=name), namespace)
    cluster.wait_pod_phase("extra", ["Succeeded"], namespace, timeout=120)
    assert cluster.pod_log("extra", "main", namespace) == "hello from an added image\n"


def test_pod_gets_a_service_account_token(cluster: Cluster, namespace: str) -> None:
    """Projected token volumes work (kube-controller-manager signs, the kubelet mounts a tmpfs the harness unmounts)."""
    pod = busybox_pod(
        "sa",
        "wc -c < /var/run/secrets/kubernetes.io/serviceaccount/token; ls /var/run/secrets/kubernetes.io/serviceaccount",
        automountServiceAccountToken=True,
    )
    cluster.kube.create(pod, namespace)
    cluster.wait_pod_phase("sa", ["Succeeded"], namespace, timeout=120)
    lines = cluster.pod_log("sa", "main", namespace).split()
    assert int(lines[0]) > 100, lines
    assert {"ca.crt", "namespace", "token"} <= set(lines[1:]), lines


def test_plugin_registers_and_republishes_slices(cluster: Cluster, hami_plugin: HamiPlugin) -> None:
    # the hami_plugin fixture waited for registration and slices; check what they say
    assert hami_plugin.kubelet_registered()
    slices = hami_plugin.slices()
    assert slices
    devices = [d for s in slices for d in s["spec"].get("devices", [])]
    assert {d["name"] for d in devices} == {"hami-gpu-0", "hami-gpu-1"}, json.dumps(slices, indent=1)
    for s in slices:
        assert s["spec"]["nodeName"] == cluster.node_name
        assert s["spec"]["pool"]["name"] == cluster.node_name
    for d in devices:
        assert d.get("allowMultipleAllocations") is True
        assert set(d["capacity"]) >= {"memory", "cores", "shares"}

    # the kubelet (or anybody) deleting them: they come back
    cluster.kube.delete(
        "/apis/resource.k8s.io/v1/resourceslices",
        fieldSelector=f"spec.nodeName={cluster.node_name},spec.driver={DRIVER}",
    )
    old = {s["metadata"]["uid"] for s in slices}
    wait_for(
        lambda: (back := hami_plugin.slices()) and not old & {s["metadata"]["uid"] for s in back},
        30,
        "the plugin to re-create its deleted ResourceSlices",
        details=lambda: hami_plugin.component.tail(30),
    )


def test_gpu_slice_pod_is_allocated_prepared_and_running(
    cluster: Cluster, hami_plugin: HamiPlugin, device_class: dict, namespace: str
) -> None:
    kube = cluster.kube
    kube.create(claim_template("slice-4g-30", "4Gi", 30), namespace)
    command = "env | sort; echo PRELOAD=$(cat /etc/ld.so.preload); echo READY; sleep 3600"
    kube.create(busybox_pod("gpu-env", command, template="slice-4g-30"), namespace)

    running = cluster.wait_pod_phase("gpu-env", ["Running"], namespace, timeout=180)
    assert running["spec"]["nodeName"] == cluster.node_name

    # the real scheduler allocated the claim from our slice, with the capacity asked for
    claim_name = running["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
    claim = kube.get(f"{CLAIMS_API}/namespaces/{namespace}/resourceclaims/{claim_name}")
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    assert result["driver"] == DRIVER and result["pool"] == cluster.node_name
    assert result["device"] in ("hami-gpu-0", "hami-gpu-1")
    assert result["consumedCapacity"]["memory"] == "4Gi"
    assert result["consumedCapacity"]["cores"] == "30"
    assert result.get("shareID")

    # the plugin prepared it: a CDI spec per claim in containerd's CDI dir, its env in the container
    specs = list(cluster.cdi_dir.glob("*.json")) + list(cluster.cdi_dir.glob("*.yaml"))
    assert any(claim["metadata"]["uid"] in p.read_text() for p in specs), [p.name for p in specs]
    log = cluster.wait_pod_log("gpu-env", r"^READY$", "main", namespace, timeout=60)
    env = dict(line.split("=", 1) for line in log.splitlines() if "=" in line)
    assert env.get("CUDA_DEVICE_MEMORY_LIMIT_0") == "4096m", log
    assert env.get("CUDA_DEVICE_SM_LIMIT_0") == "30", log
    # the CDI mounts were applied too: ld.so.preload names the (stand-in) libvgpu
    assert env.get("PRELOAD", "").strip().endswith("libvgpu.so"), log

    # deleting the pod unprepares the claim: its CDI spec goes away
    cluster.delete_pod("gpu-env", namespace)
    wait_for(
        lambda: not any(claim["metadata"]["uid"] in p.read_text() for p in cluster.cdi_dir.glob("*")),
        60,
        "the plugin to remove the claim's CDI spec after the pod was deleted",
        details=lambda: hami_plugin.component.tail(30),
    )
