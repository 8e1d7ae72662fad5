"""The Helm chart on the real cluster: `helm install`, then every component run with its own ServiceAccount.

`helm install` (real API server: CRDs, CEL match conditions and RBAC are checked by it) puts in the chart's
ServiceAccounts and roles, with a driver name of its own so nothing here touches the session's plugin. The
DaemonSet and Deployments get no pods (no image here): instead the test runs `dra-hami kubelet-plugin`,
`exporter`, `controller` and `webhook` as subprocesses with exactly the arguments the chart renders, each with a
kubeconfig holding a token of its own ServiceAccount (TokenRequest API). A pod then goes the whole policy-mode
path with those credentials: gated, allocated by the controller, prepared by the plugin, seen by the exporter;
the webhook answers admission reviews over the chart's self-signed certificate and keeps a GpuQuota's status.
A rule missing from a ClusterRole makes one of these steps fail.

Every rendered object of every value set of tests/chart is also sent to the API server as a server-side dry
run, which validates the resource.k8s.io/v1 objects (DeviceClass) and webhook CEL against the real 1.36 server.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import REPO_ROOT, ApiError, Cluster, Component, HarnessError, Kube, free_port, wait_for
from e2e_objects import busybox_pod, claim_template
from e2e_tokens import node_bound_token, token
from examples_support import example_objects, our_allocated_claims

sys.path.insert(0, str(REPO_ROOT / "tests" / "chart"))
from chart_render import CHART, render, run_helm
from test_chart_render import VALUE_SETS

from dra_hami.cdi_store import ClaimSpecStore

pytestmark = pytest.mark.e2e

RELEASE = "chart-e2e"
NAMESPACE = "dra-hami-chart-e2e"
DRIVER = "chart-e2e.project-hami.io"  # not the session plugin's: its own slices, DeviceClass and gate
GATE = f"{DRIVER}/allocation"  # not e2e_objects.GATE: that one is the session driver's
RESOURCE_API = "/apis/resource.k8s.io/v1"
QUOTA_API = "/apis/dra-hami.project-hami.io/v1alpha1"
THIRD_PARTY_KINDS = {"ServiceMonitor", "Certificate", "Issuer"}  # no such CRDs on this cluster
ENV = {"PYTHONPATH": f"{REPO_ROOT}:{os.environ.get('PYTHONPATH', '')}".rstrip(":"), "PYTHONUNBUFFERED": "1"}


def object_path(obj: dict[str, Any], namespace: str) -> str:
    return Kube.path_of(obj, obj["metadata"]["name"], obj["metadata"].get("namespace") or namespace)


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def helm() -> str:
    # --find never builds (a silent 8-minute build inside a fixture); it says what to run when helm is missing.
    done = subprocess.run([str(REPO_ROOT / "tests" / "chart" / "build_helm.sh"), "--find"], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip().splitlines()[-1].removeprefix("HELM=")


@pytest.fixture(scope="module")
def chart_values(cluster: Cluster, tmp_path_factory) -> Path:
    """Values for this cluster: its kubelet and CDI dirs, fake GPUs, no pods (the processes run from the test)."""
    vgpu = cluster.dir / "vgpu-chart"
    values = {
        "driverName": DRIVER,
        "devices": {"fakeProfile": "t4x2", "injection": "none"},
        "hostPaths": {"kubeletDir": str(cluster.kubelet_root), "cdiDir": str(cluster.cdi_dir), "vgpuDir": str(vgpu)},
        "kubeletPlugin": {"nodeSelector": {"dra-hami.test/no-such-node": "true"}, "publishInterval": 5},
        "exporter": {"port": free_port()},
        "policy": {"enabled": True, "gpuPolicy": "binpack"},
        "controller": {"replicas": 0, "metricsPort": free_port()},
        "webhook": {"replicas": 0, "port": free_port(), "metricsPort": free_port(),
                    # This API server presents no admission client certificate (test_webhook_hardening checks
                    # the certificate check over real sockets).
                    "clientAuth": {"enabled": False},
                    # Never in the API server's way: the webhooks only match namespaces labelled for this test.
                    "namespaceSelector": {"matchExpressions": [
                        {"key": "dra-hami.test/chart-webhook", "operator": "In", "values": ["on"]}]}},
        "logging": {"level": "info"},
    }  # fmt: skip
    path = tmp_path_factory.mktemp("chart") / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def release(cluster: Cluster, helm: str, chart_values: Path):
    kubeconfig = str(cluster.admin_kubeconfig)
    run_helm(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
             "--kubeconfig", kubeconfig, "--values", str(chart_values), timeout=300)  # fmt: skip
    objects = render(helm, release=RELEASE, namespace=NAMESPACE, values_files=[chart_values])
    yield objects
    run_helm(helm, "uninstall", RELEASE, "--namespace", NAMESPACE, "--kubeconfig", kubeconfig, "--wait",
             timeout=300)  # fmt: skip
    for path in (f"{RESOURCE_API}/resourceslices", f"{RESOURCE_API}/deviceclasses/{DRIVER}"):
        if path.endswith("resourceslices"):
            for item in cluster.kube.get(path, fieldSelector=f"spec.driver={DRIVER}").get("items", []):
                cluster.kube.delete(f"{path}/{item['metadata']['name']}")
        else:
            cluster.kube.delete(path)
    cluster.kube.delete(f"/api/v1/namespaces/{NAMESPACE}")


def rendered(objects: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    (obj,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    return obj


def service_account_kubeconfig(cluster: Cluster, name: str, path: Path, on_node: bool = False) -> Path:
    """A kubeconfig with a fresh token of ServiceAccount NAMESPACE/name (TokenRequest API); ``on_node``: bound to
    a pod on the node, as the DaemonSet pod's own token is (the chart's policy lets only such a token write that
    node's ResourceSlices)."""
    bearer = node_bound_token(cluster, NAMESPACE, name) if on_node else token(cluster, NAMESPACE, name)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": cluster.server,
                                                 "certificate-authority": str(cluster.pki.ca.cert)}}],
        "users": [{"name": name, "user": {"token": bearer}}],
        "contexts": [{"name": name, "context": {"cluster": "e2e", "user": name, "namespace": NAMESPACE}}],
        "current-context": name,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return path


def component_args(objects: list[dict[str, Any]], workload: str, container: str, env: dict[str, str]) -> list[str]:
    """The container's command line exactly as the chart renders it, with $(VAR) references expanded."""
    kind = "DaemonSet" if workload == "kubelet-plugin" else "Deployment"
    spec = rendered(objects, kind, f"-{workload}")["spec"]["template"]["spec"]
    (c,) = [c for c in spec["containers"] if c["name"] == container]
    assert c["command"][0] == "dra-hami"
    args = [*c["command"][1:], *c["args"]]
    for key, value in env.items():
        args = [a.replace(f"$({key})", value) for a in args]
    return [sys.executable, "-m", "dra_hami", *args]


def start(cluster: Cluster, name: str, args: list[str]) -> Component:
    component = Component(f"chart-{name}", args, cluster.logs / f"chart-{name}.log", ENV)
    cluster.components[component.name] = component
    return component.start()


def stop(cluster: Cluster, component: Component) -> None:
    """Stop it and drop it from the cluster's components (whose health checks fail on any exited process)."""
    component.stop()
    cluster.components.pop(component.name, None)


def forbidden_lines(component: Component) -> list[str]:
    """Log lines about refused API calls (RBAC): HTTP 403 answers carry reason Forbidden."""
    return [line for line in component.grep("orbidden") if "forbidden" in line.lower()]


def access(cluster: Cluster, sa: str, verb: str, resource: str, group: str = "", subresource: str = "",
           namespace: str = "default") -> bool:  # fmt: skip
    review = cluster.kube.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": f"system:serviceaccount:{NAMESPACE}:{sa}",
                 "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"],
                 "resourceAttributes": {"verb": verb, "resource": resource, "group": group,
                                        "subresource": subresource, "namespace": namespace}},
    })  # fmt: skip
    return bool(review["status"].get("allowed"))


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 that checks the certificate against the Service's DNS name (as the API server does)."""

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


# ----------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_rendered_objects_pass_a_server_side_dry_run(cluster: Cluster, helm: str, value_set: str):
    """The real 1.36 API server accepts every object (validation, CEL compilation, defaulting), nothing is stored."""
    namespace = f"dryrun-{uuid.uuid4().hex[:6]}"
    cluster.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    try:
        values = {**VALUE_SETS[value_set], "driverName": f"dryrun-{value_set}.project-hami.io"}
        objects = render(helm, values, release=f"dryrun-{value_set}", namespace=namespace)
        checked = []
        for obj in objects:
            if obj["kind"] in THIRD_PARTY_KINDS:
                continue
            path = object_path(obj, namespace) + "?dryRun=All&fieldManager=chart-e2e&force=true"
            try:
                cluster.kube.request("PATCH", path, obj, "application/apply-patch+yaml")
            except ApiError as err:
                pytest.fail(f"{obj['kind']} {obj['metadata']['name']} refused by the API server: {err}")
            checked.append(obj["kind"])
        assert {"DaemonSet", "DeviceClass", "CustomResourceDefinition"} <= set(checked)
        assert cluster.kube.get_or_none(f"{RESOURCE_API}/deviceclasses/{values['driverName']}") is None  # dry run
    finally:
        cluster.kube.delete(f"/api/v1/namespaces/{namespace}")


def test_helm_install_creates_what_the_chart_renders(cluster: Cluster, release: list[dict[str, Any]]):
    for obj in release:
        assert cluster.kube.get_or_none(object_path(obj, NAMESPACE)) is not None, obj["metadata"]["name"]
    crd = cluster.kube.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gpuquotas.dra-hami.project-hami.io")
    assert crd["spec"]["names"]["kind"] == "GpuQuota"
    ds = cluster.kube.get(object_path(rendered(release, "DaemonSet"), NAMESPACE))
    assert ds["status"].get("desiredNumberScheduled", 0) == 0  # nodeSelector matches no node: no image needed


def test_helm_upgrade_keeps_the_webhook_ca(cluster: Cluster, helm: str, release, chart_values: Path):
    secret = object_path(rendered(release, "Secret"), NAMESPACE)
    before = cluster.kube.get(secret)["data"]
    run_helm(helm, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kubeconfig",
             str(cluster.admin_kubeconfig), "--values", str(chart_values), timeout=300)  # fmt: skip
    assert cluster.kube.get(secret)["data"] == before
    hooks = cluster.kube.get(object_path(rendered(release, "MutatingWebhookConfiguration"), NAMESPACE))["webhooks"]
    assert {h["clientConfig"]["caBundle"] for h in hooks} == {before["ca.crt"]}


def test_service_accounts_hold_only_their_own_rights(cluster: Cluster, release):
    plugin, controller, webhook = (f"{RELEASE}-dra-hami-{c}" for c in ("kubelet-plugin", "controller", "webhook"))
    # 1.36: writing an allocation needs resourceclaims/binding as well as the status subresource.
    assert access(cluster, controller, "patch", "resourceclaims", "resource.k8s.io", "binding")
    assert access(cluster, controller, "patch", "resourceclaims", "resource.k8s.io", "status")
    assert access(cluster, controller, "update", "leases", "coordination.k8s.io", namespace=NAMESPACE)
    assert not access(cluster, controller, "update", "leases", "coordination.k8s.io", namespace="kube-system")
    assert not access(cluster, controller, "delete", "pods")
    assert not access(cluster, plugin, "patch", "resourceclaims", "resource.k8s.io", "binding")
    assert not access(cluster, plugin, "list", "secrets")
    assert not access(cluster, webhook, "patch", "resourceclaims", "resource.k8s.io", "status")
    assert not access(cluster, webhook, "create", "pods")


@pytest.fixture(scope="module")
def node_components(cluster: Cluster, release, tmp_path_factory):
    """kubelet plugin + exporter, with the DaemonSet's arguments and its ServiceAccount's token."""
    tmp = tmp_path_factory.mktemp("node")
    sa = f"{RELEASE}-dra-hami-kubelet-plugin"
    kubeconfig = service_account_kubeconfig(cluster, sa, tmp / "kubeconfig", on_node=True)
    vgpu = cluster.dir / "vgpu-chart"
    vgpu.mkdir(exist_ok=True)
    (vgpu / "libvgpu.so").write_bytes(b"")  # stand-in, as for the session plugin: busybox is static
    env = {"NODE_NAME": cluster.node_name}
    auth = ["--kubeconfig", str(kubeconfig)]
    plugin = start(
        cluster, "kubelet-plugin", [*component_args(release, "kubelet-plugin", "kubelet-plugin", env), *auth]
    )
    exporter = start(cluster, "exporter", [*component_args(release, "kubelet-plugin", "exporter", env), *auth])
    yield plugin, exporter
    # The kubelet unprepares a deleted pod's claims after the pod object is gone: stop the plugin only once it
    # has, or this driver's CDI specs outlive it and later modules never see an idle node.
    with contextlib.suppress(HarnessError):  # a failed test may have left pods: its own failure says why
        specs = ClaimSpecStore(cluster.cdi_dir, DRIVER)
        wait_for(lambda: not specs.specs(), 90, f"the kubelet to unprepare the claims of {DRIVER}")
    stop(cluster, exporter)
    stop(cluster, plugin)


def test_plugin_publishes_and_registers_with_its_service_account(cluster: Cluster, node_components):
    plugin, _ = node_components

    def published() -> list[dict[str, Any]]:
        plugin.check_alive()
        selector = f"spec.driver={DRIVER},spec.nodeName={cluster.node_name}"
        return cluster.kube.get(f"{RESOURCE_API}/resourceslices", fieldSelector=selector)["items"]

    slices = wait_for(published, 60, f"ResourceSlices of {DRIVER} published with the plugin's token",
                      details=lambda: plugin.tail(40))  # fmt: skip
    assert [d["name"] for d in slices[0]["spec"]["devices"]] == ["hami-gpu-0", "hami-gpu-1"]
    # The Node lookup worked (nodes get): the slices are owned by the Node.
    assert slices[0]["metadata"]["ownerReferences"][0]["kind"] == "Node"
    wait_for(lambda: cluster.components["kubelet"].grep("Registered DRA plugin", f'driverName="{DRIVER}"'), 60,
             "the kubelet to register the chart's plugin", details=lambda: plugin.tail(20))  # fmt: skip
    assert not forbidden_lines(plugin), forbidden_lines(plugin)


def test_default_install_serves_hami_allocation_gauges(cluster: Cluster, namespace: str, node_components):
    """No controller (it starts later in this module): the stock scheduler allocates, and the node's exporter
    serves HAMi's allocation gauges and one per-container series, labelled as HAMi labels them."""
    _, exporter = node_components
    cluster.kube.create(claim_template("stock-slice", "3Gi", 20, device_class=DRIVER), namespace)
    cluster.kube.create(busybox_pod("stock-pod", template="stock-slice"), namespace)
    pod = cluster.wait_pod_phase("stock-pod", ["Running"], namespace, timeout=120)
    (status,) = pod["status"]["resourceClaimStatuses"]
    claim = cluster.kube.get(f"{RESOURCE_API}/namespaces/{namespace}/resourceclaims/{status['resourceClaimName']}")
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    port = next(a for a in exporter.args if a.startswith("--metrics-bind-address=")).rsplit(":", 1)[1]

    def series() -> dict[str, list[str]] | None:
        exporter.check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                lines = resp.read().decode().splitlines()
        except OSError:
            return None
        names = ("vGPUMemoryAllocated", "vGPU_device_memory_limit_in_bytes", "hami_vgpu_memory_limit_bytes")
        out = {name: [line for line in lines if line.startswith(name + "{") and "stock-pod" in line] for name in names}
        return out if all(out.values()) else None

    found = wait_for(series, 90, "the exporter's HAMi series of the pod", details=lambda: exporter.tail(30))
    for name, lines in found.items():
        assert len(lines) == 1, (name, lines)  # one container, one GPU: one series
        assert float(lines[0].rsplit(" ", 1)[1]) == 3 * 2**30, lines
    assert f'nodename="{cluster.node_name}"' in found["vGPUMemoryAllocated"][0]
    assert 'containeridx="0"' in found["vGPUMemoryAllocated"][0] and 'zone="vGPU"' in found["vGPUMemoryAllocated"][0]
    assert 'ctrname="' in found["vGPU_device_memory_limit_in_bytes"][0]
    assert result["device"].startswith("hami-gpu-")
    cluster.delete_pod("stock-pod", namespace)


@pytest.fixture(scope="module")
def controller(cluster: Cluster, release, node_components, tmp_path_factory):
    sa = f"{RELEASE}-dra-hami-controller"
    kubeconfig = service_account_kubeconfig(cluster, sa, tmp_path_factory.mktemp("controller") / "kubeconfig")
    env = {"POD_NAMESPACE": NAMESPACE, "POD_NAME": "chart-e2e-controller-0"}
    args = [*component_args(release, "controller", "controller", env), "--kubeconfig", str(kubeconfig)]
    component = start(cluster, "controller", args)
    port = next(a for a in component.args if a.startswith("--metrics-bind-address=")).rsplit(":", 1)[1]

    def healthy() -> bool:
        component.check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_for(healthy, 60, "the controller's /healthz", details=component.tail)
    yield component
    stop(cluster, component)


def test_policy_mode_pod_runs_with_the_chart_service_accounts(cluster: Cluster, namespace: str, node_components,
                                                              controller: Component):  # fmt: skip
    """Controller (allocation + binding + gate), plugin (prepare) and exporter (claim -> pod), each with its token."""
    plugin, exporter = node_components
    cluster.kube.create(claim_template("chart-slice", "2Gi", 10, device_class=DRIVER), namespace)
    cluster.kube.create(busybox_pod("chart-pod", template="chart-slice", gate=GATE), namespace)  # as the webhook would
    pod = cluster.wait_pod_phase("chart-pod", ["Running"], namespace, timeout=120)
    assert not pod["spec"].get("schedulingGates")
    (status,) = pod["status"]["resourceClaimStatuses"]
    claim = cluster.kube.get(f"{RESOURCE_API}/namespaces/{namespace}/resourceclaims/{status['resourceClaimName']}")
    allocation = claim["status"]["allocation"]
    (result,) = allocation["devices"]["results"]
    assert result["driver"] == DRIVER and result["pool"] == cluster.node_name
    assert result["consumedCapacity"]["memory"] == "2Gi" and allocation.get("allocationTimestamp")
    # The allocation was written by the controller, not by the scheduler (which only added reservedFor).
    owners = [m.get("manager", "") for m in claim["metadata"].get("managedFields", [])
              if '"f:allocation"' in json.dumps(m.get("fieldsV1", {}))]  # fmt: skip
    assert owners and not any("scheduler" in m for m in owners), owners
    # The plugin prepared it: its CDI spec is in the runtime's directory.
    uid = claim["metadata"]["uid"]
    assert any(uid in p.name and DRIVER in p.name for p in cluster.cdi_dir.iterdir())

    port = next(a for a in exporter.args if a.startswith("--metrics-bind-address=")).rsplit(":", 1)[1]

    def consumer_line() -> str | None:
        exporter.check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        lines = [line for line in text.splitlines() if line.startswith("dra_hami_claim_consumer_info{")]
        return next((line for line in lines if 'pod="chart-pod"' in line), None)

    line = wait_for(consumer_line, 90, "the exporter to name the claim's pod (claims get + pods get)",
                    details=lambda: exporter.tail(30))  # fmt: skip
    assert f'claim_uid="{uid}"' in line
    # HAMi's allocation gauges come from the node's exporter (here in policy mode; the same code serves the
    # default install): the claim's 2Gi share, per GPU and for the pod's container 0, under both name sets.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    names = ("vGPUMemoryAllocated{", "hami_vgpu_memory_allocated_bytes{")
    mine = [line for line in text.splitlines() if line.startswith(names) and "chart-pod" in line]
    assert len(mine) == 2 and all(float(line.rsplit(" ", 1)[1]) == 2 * 2**30 for line in mine), mine
    assert all('containeridx="0"' in line or 'container_index="0"' in line for line in mine), mine
    cluster.delete_pod("chart-pod", namespace)
    for component in (plugin, exporter, controller):
        assert not forbidden_lines(component), (component.name, forbidden_lines(component))


@pytest.mark.parametrize(("example", "same_gpu"), [("policy-binpack.yaml", True), ("policy-spread.yaml", False)])
def test_policy_examples_place_pods_as_annotated(cluster: Cluster, namespace: str, node_components,
                                                 controller: Component, example: str, same_gpu: bool):  # fmt: skip
    """examples/policy-*.yaml with the chart's controller: binpack shares one GPU, spread uses two (of two)."""
    wait_for(lambda: not our_allocated_claims(cluster, DRIVER), 90, "earlier claims of the test driver to be released")
    objects = example_objects(example, DRIVER, GATE)
    for obj in objects:
        cluster.kube.create(obj, namespace)
    pods = [o["metadata"]["name"] for o in objects if o["kind"] == "Pod"]
    devices = []
    for name in pods:
        pod = cluster.wait_pod_phase(name, ["Running"], namespace, timeout=120)
        (status,) = pod["status"]["resourceClaimStatuses"]
        claim = cluster.kube.get(f"{RESOURCE_API}/namespaces/{namespace}/resourceclaims/{status['resourceClaimName']}")
        (result,) = claim["status"]["allocation"]["devices"]["results"]
        devices.append(result["device"])
    assert (len(set(devices)) == 1) is same_gpu, devices
    for name in pods:
        cluster.delete_pod(name, namespace)


@pytest.fixture(scope="module")
def webhook(cluster: Cluster, release, tmp_path_factory):
    """The webhook with the chart's Deployment arguments, the chart-generated certificate and its own token."""
    tmp = tmp_path_factory.mktemp("webhook")
    sa = f"{RELEASE}-dra-hami-webhook"
    kubeconfig = service_account_kubeconfig(cluster, sa, tmp / "kubeconfig")
    secret = cluster.kube.get(object_path(rendered(release, "Secret"), NAMESPACE))
    for key in ("ca.crt", "tls.crt", "tls.key"):
        (tmp / key).write_bytes(base64.b64decode(secret["data"][key]))
    args = [a.replace("/etc/dra-hami/tls/", f"{tmp}/") for a in component_args(release, "webhook", "webhook", {})]
    component = start(cluster, "webhook", [*args, "--kubeconfig", str(kubeconfig)])
    port = int(next(a for a in args if a.startswith("--bind-address=")).rsplit(":", 1)[1])
    service = rendered(release, "Service", "-webhook")["metadata"]["name"]
    context = ssl.create_default_context(cafile=str(tmp / "ca.crt"))

    def post(path: str, body: Any = None) -> tuple[int, Any]:
        conn = PinnedHTTPSConnection(f"{service}.{NAMESPACE}.svc", port, context=context, timeout=10)
        try:
            data = None if body is None else json.dumps(body)
            conn.request("GET" if body is None else "POST", path, data, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read().decode()
            return resp.status, (json.loads(raw) if raw.startswith("{") else raw)
        finally:
            conn.close()

    def healthy() -> bool:
        component.check_alive()
        try:
            return post("/healthz")[0] == 200
        except OSError:
            return False

    wait_for(healthy, 60, "the webhook's /healthz over the chart's certificate", details=component.tail)
    yield component, post
    stop(cluster, component)


def review(kind: str, resource: str, obj: dict[str, Any], namespace: str, group: str = "") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(uuid.uuid4()), "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": resource}, "operation": "CREATE",
        "namespace": namespace, "name": obj["metadata"]["name"], "object": obj,
        "userInfo": {"username": "e2e"}}}  # fmt: skip


def test_webhook_serves_with_the_chart_certificate_and_its_service_account(cluster: Cluster, namespace: str,
                                                                           webhook):  # fmt: skip
    component, post = webhook
    cluster.kube.create(claim_template("hooked", "2Gi", 10, device_class=DRIVER), namespace)
    pod = busybox_pod("hooked", template="hooked")
    pod["metadata"]["namespace"] = namespace
    status, answer = post("/mutate-pods", review("Pod", "pods", pod, namespace))
    assert status == 200 and answer["response"]["allowed"], answer
    patch = json.loads(base64.b64decode(answer["response"]["patch"]))
    assert GATE in json.dumps(patch), patch  # policy mode: the template (read with its token) uses our class

    spec = claim_template("x", "2Gi", 10, device_class=DRIVER)["spec"]["spec"]
    claim = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
             "metadata": {"name": "checked", "namespace": namespace}, "spec": spec}  # fmt: skip
    status, answer = post("/validate-claims", review("ResourceClaim", "resourceclaims", claim, namespace,
                                                     "resource.k8s.io"))  # fmt: skip
    assert status == 200 and answer["response"]["allowed"], answer

    # GpuQuota status is kept by the webhook: list/watch quotas and claims, patch quotas/status.
    cluster.kube.request("POST", f"{QUOTA_API}/namespaces/{namespace}/gpuquotas", {
        "apiVersion": "dra-hami.project-hami.io/v1alpha1", "kind": "GpuQuota", "metadata": {"name": "team"},
        "spec": {"hard": {"memory": "8Gi", "cores": 100, "gpus": 4}}})  # fmt: skip
    cluster.kube.create({**claim, "metadata": {"name": "checked"}}, namespace)

    def used() -> dict[str, Any] | None:
        component.check_alive()
        quota = cluster.kube.get(f"{QUOTA_API}/namespaces/{namespace}/gpuquotas/team")
        return (quota.get("status") or {}).get("used")

    assert wait_for(used, 90, "the webhook to write GpuQuota status.used", details=component.tail) is not None
    time.sleep(1)
    assert not forbidden_lines(component), forbidden_lines(component)
