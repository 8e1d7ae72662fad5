"""`helm install` of charts/dra-hami with the shipped image, and the chart's own pods doing the work.

The image is the one tests/e2e/build_image.sh builds from the Dockerfile, imported into the cluster's containerd
under the name the chart's default values pull (`dra-hami:<appVersion>`, IfNotPresent). The values are the
defaults except what this node differs in: its kubelet, CDI and libvgpu directories live under the harness dir,
its GPUs are the fake t4x2 profile (no NVML, no NVIDIA Container Toolkit, so injection none), and the driver has a
name of its own, so nothing here touches the session plugin, and the webhook asks for no client certificate
(this API server presents none). The node gets the label of the chart's default
nodeSelector. Then, in the DaemonSet's pod: the init container installs libvgpu.so on the host, the plugin
container registers with the kubelet, publishes the slices and prepares the claim of examples/single-slice.yaml,
whose pod (on the pod network) sees its memory cap and libvgpu; the exporter, scraped from a pod at its Service's
endpoint, reports the claim's limit.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from typing import Any

import pytest
import yaml
from cluster import REPO_ROOT, ApiError, Cluster, wait_for
from e2e_objects import busybox_pod
from examples_support import example_objects
from shipped_image import BuiltImage

pytestmark = pytest.mark.e2e

RELEASE = "shipped"
NAMESPACE = "dra-hami-shipped"
DRIVER = "shipped-e2e.project-hami.io"
NODE_LABEL = "nvidia.com/gpu.present"  # the chart's default kubeletPlugin.nodeSelector
RESOURCE_API = "/apis/resource.k8s.io/v1"
EXPORTER_PORT = 9401  # the chart's default exporter.port
ENV_COMMAND = "env | sort; cat /etc/ld.so.preload; sha256sum /usr/local/vgpu/libvgpu.so; echo READY; exec sleep 3600"


def run_helm(helm: str, *args: str, timeout: float = 300) -> str:
    done = subprocess.run([helm, *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def helm() -> str:
    done = subprocess.run([str(REPO_ROOT / "tests" / "chart" / "build_helm.sh"), "--find"], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip().splitlines()[-1].removeprefix("HELM=")


def plugin_pods(cluster: Cluster) -> list[dict[str, Any]]:
    return cluster.kube.get(
        f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector="app.kubernetes.io/component=kubelet-plugin"
    ).get("items", [])


def exporter_slices(cluster: Cluster) -> list[dict[str, Any]]:
    return cluster.kube.get(
        f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices",
        labelSelector=f"kubernetes.io/service-name={RELEASE}-dra-hami-exporter",
    ).get("items", [])


def slices(cluster: Cluster) -> list[dict[str, Any]]:
    return cluster.kube.get(f"{RESOURCE_API}/resourceslices", fieldSelector=f"spec.driver={DRIVER}").get("items", [])


@pytest.fixture(scope="module")
def installed(cluster: Cluster, helm: str, shipped_image: BuiltImage, tmp_path_factory):
    vgpu = cluster.dir / "vgpu-shipped"
    values = {
        "driverName": DRIVER,
        "devices": {"fakeProfile": "t4x2", "injection": "none"},
        "hostPaths": {"kubeletDir": str(cluster.kubelet_root), "cdiDir": str(cluster.cdi_dir), "vgpuDir": str(vgpu)},
        "kubeletPlugin": {"publishInterval": 5},
        # This API server presents no admission client certificate (the install docs' clientAuth.enabled=false
        # case); the webhook's own serving certificate is the chart's self-signed default.
        "webhook": {"clientAuth": {"enabled": False}},
    }
    # The plugin mounts each claim's tmpfs there with Bidirectional propagation, which needs a shared mount. On a
    # real node systemd makes / shared; this VM's / is private, so the directory becomes a shared bind of itself
    # (below the harness dir: the cluster's teardown unmounts it).
    vgpu.mkdir(parents=True, exist_ok=True)
    for cmd in (["mount", "--bind", str(vgpu), str(vgpu)], ["mount", "--make-shared", str(vgpu)]):
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    path = tmp_path_factory.mktemp("shipped") / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    node = f"/api/v1/nodes/{cluster.node_name}"
    cluster.kube.patch(node, {"metadata": {"labels": {NODE_LABEL: "true"}}})
    kubeconfig = str(cluster.admin_kubeconfig)
    started = time.monotonic()
    run_helm(helm, "install", RELEASE, str(REPO_ROOT / "charts" / "dra-hami"), "--namespace", NAMESPACE,
             "--create-namespace", "--kubeconfig", kubeconfig, "--values", str(path))  # fmt: skip
    state = {"vgpu": vgpu, "started": started, "image": shipped_image, "helm": helm, "uninstalled": False}
    yield state
    if not state["uninstalled"]:
        run_helm(helm, "uninstall", RELEASE, "--namespace", NAMESPACE, "--kubeconfig", kubeconfig, "--wait")
    cluster.kube.patch(node, {"metadata": {"labels": {NODE_LABEL: None}}})
    wait_for(lambda: not plugin_pods(cluster), 120, "the plugin pod to be gone after helm uninstall")
    for item in slices(cluster):
        cluster.kube.delete(f"{RESOURCE_API}/resourceslices/{item['metadata']['name']}")
    cluster.kube.delete(f"/api/v1/namespaces/{NAMESPACE}")


def test_daemonset_installs_libvgpu_registers_and_publishes(cluster: Cluster, installed: dict) -> None:
    def running() -> dict[str, Any] | None:
        pods = plugin_pods(cluster)
        ready = [
            p for p in pods
            if p["status"].get("phase") == "Running"
            and all(c.get("ready") for c in p["status"].get("containerStatuses", []))
        ]  # fmt: skip
        return ready[0] if ready else None

    pod = wait_for(
        running,
        240,
        "the chart's kubelet-plugin pod to be Running and ready",
        details=lambda: (
            "\n".join(cluster.describe_pod(p["metadata"]["name"], NAMESPACE) for p in plugin_pods(cluster))
            + "\n"
            + cluster.diagnostics(20)
        ),
    )
    name = pod["metadata"]["name"]
    # The init container put the image's libvgpu.so on the host (the vgpuDir hostPath).
    host_lib = installed["vgpu"] / "libvgpu.so"
    assert host_lib.is_file() and host_lib.read_bytes()[:4] == b"\x7fELF"
    init_log = cluster.pod_log(name, "install-libvgpu", NAMESPACE)
    assert f"installed libvgpu.so ({hashlib.sha256(host_lib.read_bytes()).hexdigest()})" in init_log, init_log
    # The plugin container registered with the kubelet and published the fake node's two GPUs.
    wait_for(
        lambda: cluster.components["kubelet"].grep("Registered DRA plugin", f'driverName="{DRIVER}"'),
        120,
        f"the kubelet to register {DRIVER}",
        details=lambda: cluster.pod_log(name, "kubelet-plugin", NAMESPACE)[-4000:],
    )
    devices = wait_for(
        lambda: [d for s in slices(cluster) for d in s["spec"].get("devices", [])] or None,
        120,
        f"ResourceSlices of {DRIVER}",
        details=lambda: cluster.pod_log(name, "kubelet-plugin", NAMESPACE)[-4000:],
    )
    assert len(devices) == 2, devices


def test_webhook_pods_serve_admission_through_their_service(cluster: Cluster, namespace: str, installed: dict) -> None:
    # Both replicas ready (their readiness probes reach them on the pod network); claims and claim templates
    # are admitted only through them (failurePolicy Fail), so the example below also shows the API server
    # reaching them through the Service with the chart's certificate.
    path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{RELEASE}-dra-hami-webhook"
    wait_for(
        lambda: (cluster.kube.get(path).get("status") or {}).get("availableReplicas") == 2,
        240,
        "both webhook replicas to be available",
        details=lambda: json.dumps(cluster.kube.get(path).get("status"), indent=1) + "\n" + cluster.diagnostics(15),
    )
    args = cluster.kube.get(path)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--no-policy-mode" in args and "--config-validation" in args and "--quota" in args, args
    # and they judge, not only pass: the default install refuses an invalid VGpuConfig at creation (issue 14)
    config = {"apiVersion": "gpu.hami.io/v1alpha1", "kind": "VGpuConfig", "coreLimitPolicy": "sometimes"}
    claim = {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": "bad-config"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}],
                             "config": [{"requests": ["gpu"], "opaque": {"driver": DRIVER, "parameters": config}}]}},
    }  # fmt: skip
    with pytest.raises(ApiError) as refused:
        cluster.kube.create(claim, namespace)
    assert refused.value.status == 400 and "coreLimitPolicy: got 'sometimes'" in str(refused.value), refused.value


def test_example_pod_runs_with_its_memory_cap(cluster: Cluster, namespace: str, installed: dict) -> None:
    objects = example_objects("single-slice.yaml", driver=DRIVER, command=ENV_COMMAND)
    for obj in objects:
        obj["metadata"].pop("namespace", None)
        if obj["kind"] == "Pod":
            obj["spec"]["hostNetwork"] = False  # as written: on the pod network
        cluster.kube.create(obj, namespace)
    pod = cluster.wait_pod_phase("inference", ["Running"], namespace, timeout=180)
    first_running = time.monotonic() - installed["started"]
    log = cluster.wait_pod_log("inference", r"^READY$", "app", namespace, timeout=60)
    env = dict(line.split("=", 1) for line in log.splitlines() if "=" in line)
    # 4 GiB and 30% of one T4, as libvgpu reads them (HAMi-core's variables).
    assert (env.get("CUDA_DEVICE_MEMORY_LIMIT_0"), env.get("CUDA_DEVICE_SM_LIMIT_0")) == ("4096m", "30"), env
    host_sha = hashlib.sha256((installed["vgpu"] / "libvgpu.so").read_bytes()).hexdigest()
    assert f"{host_sha}  /usr/local/vgpu/libvgpu.so" in log, log  # the host's copy, mounted by the CDI spec
    assert "/usr/local/vgpu/libvgpu.so" in log.split("READY")[0]  # /etc/ld.so.preload names it

    # The plugin pod prepared it: a CDI spec and a claim directory on the host, through the chart's hostPaths.
    claim_name = pod["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
    claim = cluster.kube.get(f"{RESOURCE_API}/namespaces/{namespace}/resourceclaims/{claim_name}")
    uid = claim["metadata"]["uid"]
    assert (installed["vgpu"] / "claims" / uid).is_dir()
    specs = [json.loads(p.read_text()) for p in cluster.cdi_dir.glob(f"k8s.{DRIVER}*")]
    assert any(uid in json.dumps(s) for s in specs), [s.get("kind") for s in specs]
    print(f"[shipped] helm install to the first example pod Running: {first_running:.1f} s")

    # The exporter, scraped as Prometheus does: the chart's (headless) Service's endpoint, from a pod.
    endpoint = wait_for(
        lambda: next(
            (a for s in exporter_slices(cluster) for e in s.get("endpoints", []) for a in e["addresses"]), None
        ),
        60,
        "an endpoint of the exporter Service",
    )
    url = f"http://{endpoint}:{EXPORTER_PORT}/metrics"
    want = f'dra_hami_claim_memory_limit_bytes{{.*claim_uid="{uid}"'
    scrape = (f"for i in $(seq 30); do timeout 10 wget -q -O /tmp/m {url} && grep -q '{want}' /tmp/m "
              "&& cat /tmp/m && exit 0; sleep 2; done; cat /tmp/m; exit 1")  # fmt: skip
    cluster.kube.create(busybox_pod("scraper", scrape, hostNetwork=False), namespace)
    cluster.wait_pod_phase("scraper", ["Succeeded"], namespace, timeout=120)
    metrics = cluster.pod_log("scraper", "main", namespace)
    (line,) = [m for m in metrics.splitlines() if re.match(want, m)]
    assert float(line.rsplit(" ", 1)[1]) == 4 * 2**30, line
    cluster.delete_pod("inference", namespace)
    # Unprepared by the chart's plugin once the pod is gone: nothing of the claim stays on the host.
    claim_dir = installed["vgpu"] / "claims" / uid
    wait_for(lambda: not claim_dir.exists(), 90, f"{claim_dir} to be removed after the pod")


def test_uninstall_leaves_no_slice_spec_or_claim_dir(cluster: Cluster, installed: dict) -> None:
    """What an operator sees after `helm uninstall` once the GPU pods are gone (the example pod was deleted above):
    no ResourceSlice of the driver, no CDI spec of it, no claim directory. libvgpu.so stays on the host (nothing
    of the chart removes host files; running containers may still map it)."""
    run_helm(installed["helm"], "uninstall", RELEASE, "--namespace", NAMESPACE, "--kubeconfig",
             str(cluster.admin_kubeconfig), "--wait")  # fmt: skip
    installed["uninstalled"] = True
    wait_for(lambda: not plugin_pods(cluster), 120, "the plugin pod to be gone after helm uninstall")
    # The kubelet drops a driver's slices once its plugin has been gone for a grace period.
    wait_for(lambda: not slices(cluster), 120, f"the ResourceSlices of {DRIVER} to be removed",
             details=lambda: json.dumps([s["metadata"]["name"] for s in slices(cluster)]))  # fmt: skip
    assert not list(cluster.cdi_dir.glob(f"k8s.{DRIVER}*")), list(cluster.cdi_dir.iterdir())
    claims = installed["vgpu"] / "claims"
    assert not claims.exists() or not any(claims.iterdir()), list(claims.iterdir())
    assert (installed["vgpu"] / "libvgpu.so").is_file()
    assert cluster.kube.get_or_none(f"{RESOURCE_API}/deviceclasses/{DRIVER}") is None
