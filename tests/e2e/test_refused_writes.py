"""Least privilege enforced by the real API server (issue 18 items 5, 6, 8 and the pod env rule).

The chart's ServiceAccounts, roles and ValidatingAdmissionPolicies are applied (nothing else: no component runs),
then each component's own token tries writes it must not make: the kubelet plugin another node's
ResourceSlices, the controller anything but its scheduling gate and its condition, the webhook templates it does
not own. A pod that sets libvgpu's control variables is refused for everyone. The allowed counterpart of each
write is checked too, so a policy that refuses everything fails here.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cluster import REPO_ROOT, ApiError, Cluster, Kube, wait_for
from e2e_objects import busybox_pod
from e2e_tokens import TokenKube, holder_pod, node_bound_token, token

sys.path.insert(0, str(REPO_ROOT / "tests" / "chart"))
from chart_render import render
from test_chart import helm  # noqa: F401  (the module fixture that finds the helm binary)

from dra_hami.allocator import ParseError, parse_claim

pytestmark = pytest.mark.e2e

RELEASE = "refused-e2e"
NAMESPACE = "dra-hami-refused-e2e"
DRIVER = "refused-e2e.project-hami.io"
GATE = f"{DRIVER}/allocation"
RESOURCE_API = "/apis/resource.k8s.io/v1"
KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ValidatingAdmissionPolicy",
         "ValidatingAdmissionPolicyBinding")  # fmt: skip


def sa(component: str) -> str:
    return f"{RELEASE}-dra-hami-{component}"


@pytest.fixture(scope="module")
def installed(cluster: Cluster, helm: str):  # noqa: F811
    values = {"driverName": DRIVER, "policy.enabled": "true", "webhook.clientAuth.enabled": "false"}
    objects = [o for o in render(helm, values, release=RELEASE, namespace=NAMESPACE) if o["kind"] in KINDS]
    cluster.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for obj in objects:
        cluster.kube.apply(obj, NAMESPACE)
    yield objects
    for obj in reversed(objects):
        cluster.kube.delete_obj(obj, NAMESPACE)
    for item in cluster.kube.get(f"{RESOURCE_API}/resourceslices", fieldSelector=f"spec.driver={DRIVER}")["items"]:
        cluster.kube.delete(f"{RESOURCE_API}/resourceslices/{item['metadata']['name']}")
    for pod in cluster.kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods").get("items", []):
        cluster.kube.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{pod['metadata']['name']}", grace_seconds=0)
    cluster.kube.delete(f"/api/v1/namespaces/{NAMESPACE}")


def dry(path: str) -> str:
    """A server-side dry run: admission (the policies included) runs, nothing is stored. Refused writes are
    tried this way, so the retries while a new policy reaches the admission chain store nothing."""
    return path + ("&" if "?" in path else "?") + "dryRun=All"


def refused(write: Callable[[], Any], *needles: str) -> str:
    """The API server's refusal of ``write`` (403, message containing ``needles``), waiting for the policy to be
    active (a new ValidatingAdmissionPolicy takes a moment to reach the admission chain)."""
    seen: list[str] = []

    def attempt() -> str | None:
        try:
            write()
        except ApiError as err:
            seen.append(str(err))
            if err.status == 403 and all(n in str(err) for n in needles):
                return str(err)
            if err.status not in (403, 409):
                raise
        return None

    return wait_for(attempt, 30, f"the write to be refused with {needles}", details=lambda: "\n".join(seen[-3:]))


def resource_slice(node: str, name: str | None = None, driver: str = DRIVER) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": name or f"{node}-{uuid.uuid4().hex[:6]}"},
        "spec": {"driver": driver, "nodeName": node, "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                 "devices": []},
    }  # fmt: skip


def test_the_kubelet_plugin_writes_only_its_own_nodes_slices(cluster: Cluster, installed) -> None:
    plugin = TokenKube(cluster, node_bound_token(cluster, NAMESPACE, sa("kubelet-plugin")))
    own = cluster.node_name
    slices = f"{RESOURCE_API}/resourceslices"
    refused(lambda: plugin.request("POST", dry(slices), resource_slice("some-other-node")),
            f"the kubelet plugin of node {own} may write only that node's ResourceSlices")  # fmt: skip
    mine = plugin.create(resource_slice(own))  # the allowed write
    path = f"{slices}/{mine['metadata']['name']}"
    # (spec.nodeName is immutable: the API server itself refuses to move a slice to another node)
    theirs = cluster.kube.create(resource_slice("some-other-node"))  # the admin may
    their_path = f"{slices}/{theirs['metadata']['name']}"
    bumped = {**theirs, "spec": {**theirs["spec"], "pool": {**theirs["spec"]["pool"], "generation": 2}}}
    refused(lambda: plugin.request("PUT", dry(their_path), bumped), "may write only that node's")
    refused(lambda: plugin.request("DELETE", dry(their_path)), "may change or delete only that node's")
    other_driver = resource_slice(own, driver="gpu.example.com")
    refused(lambda: plugin.request("POST", dry(slices), other_driver), "ResourceSlices of driver " + DRIVER)
    plugin.request("DELETE", path)  # its own: allowed
    # A token that is not bound to a pod on a node names no node: it may write no slice at all.
    unbound = TokenKube(cluster, token(cluster, NAMESPACE, sa("kubelet-plugin")))
    refused(lambda: unbound.request("POST", dry(slices), resource_slice(own)), "token names no node")
    left = cluster.kube.get(slices, fieldSelector=f"spec.driver={DRIVER}")["items"]
    assert [s["spec"]["nodeName"] for s in left] == ["some-other-node"]  # only the admin's


def gated_pod(cluster: Cluster, name: str) -> dict[str, Any]:
    pod = busybox_pod(name, gate=GATE, labels={"team": "a"})
    pod["spec"]["schedulingGates"].append({"name": "example.com/other"})
    return cluster.kube.create(pod, NAMESPACE)


def test_the_controller_only_lifts_its_gate_and_sets_its_condition(cluster: Cluster, installed) -> None:
    controller = TokenKube(cluster, token(cluster, NAMESPACE, sa("controller")))
    pod = gated_pod(cluster, "gated")
    path = f"/api/v1/namespaces/{NAMESPACE}/pods/gated"
    refused(lambda: controller.patch(dry(path), {"metadata": {"labels": {"team": "b"}}}), "only by lifting")
    refused(lambda: controller.patch(dry(path), [{"op": "remove", "path": "/spec/schedulingGates/1"}], "json"),
            f"only remove its own scheduling gate {GATE}")  # fmt: skip
    image = [{"op": "replace", "path": "/spec/containers/0/image", "value": "evil.example.com/miner"}]
    refused(lambda: controller.patch(dry(path), image, "json"), "only by lifting")
    lifted = controller.patch(path, [{"op": "remove", "path": "/spec/schedulingGates/0"}], "json")  # allowed
    assert [g["name"] for g in lifted["spec"]["schedulingGates"]] == ["example.com/other"]
    assert lifted["metadata"]["labels"] == pod["metadata"]["labels"]
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    refused(lambda: controller.patch(dry(path + "/status"), ready, "strategic"), "only in its own condition")
    ours = {"status": {"conditions": [{"type": "DraHamiAllocated", "status": "True", "reason": "Allocated"}]}}
    controller.patch(path + "/status", ours, "strategic")  # allowed


def test_the_webhook_writes_only_the_templates_it_owns(cluster: Cluster, installed) -> None:
    webhook = TokenKube(cluster, token(cluster, NAMESPACE, sa("webhook")))

    def template(name: str, owned: bool) -> dict[str, Any]:
        labels = {"dra-hami.project-hami.io/legacy-template": "true"} if owned else {}
        request = {"name": "gpu", "exactly": {"deviceClassName": DRIVER}}
        return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                "metadata": {"name": name, "labels": labels},
                "spec": {"spec": {"devices": {"requests": [request]}}}}  # fmt: skip

    base = f"{RESOURCE_API}/namespaces/{NAMESPACE}/resourceclaimtemplates"
    refused(lambda: webhook.request("POST", dry(base), template("not-ours", owned=False)),
            "may write only ResourceClaimTemplates labelled")  # fmt: skip
    webhook.create(template("ours", owned=True), NAMESPACE)  # allowed
    cluster.kube.create(template("users", owned=False), NAMESPACE)
    refused(lambda: webhook.request("DELETE", dry(f"{base}/users")), "change or delete only ResourceClaimTemplates")
    # (an update of it fails the first rule already: the message is the first failed rule's)
    refused(lambda: webhook.patch(dry(f"{base}/users"), {"metadata": {"annotations": {"x": "y"}}}),
            "may write only ResourceClaimTemplates labelled")  # fmt: skip
    unlabel = {"metadata": {"labels": {"dra-hami.project-hami.io/legacy-template": None}}}
    refused(lambda: webhook.patch(dry(f"{base}/ours"), unlabel), "only ResourceClaimTemplates labelled")
    webhook.request("DELETE", f"{base}/ours")  # allowed


@pytest.mark.parametrize(("name", "value"), [("CUDA_DISABLE_CONTROL", "1"), ("VGPU_DEVICE_LIMIT_zz", "GPU-x,1,0"),
                                             ("LD_PRELOAD", "/usr/local/vgpu/libvgpu.so")])  # fmt: skip
def test_pods_that_set_control_variables_are_refused_by_the_api_server(cluster: Cluster, installed, name, value):
    pod = busybox_pod(f"env-{uuid.uuid4().hex[:6]}", env={"OK": "1", name: value})
    pod["spec"]["initContainers"] = [{**pod["spec"]["containers"][0], "name": "setup", "env": []}]
    pods = f"/api/v1/namespaces/{NAMESPACE}/pods"
    message = refused(lambda: cluster.kube.request("POST", dry(pods), pod), "container main of this pod set")
    assert "initContainer" not in message  # the message names exactly the containers that set them


def test_an_ephemeral_container_cannot_bring_control_variables(cluster: Cluster, installed) -> None:
    running = holder_pod(cluster, NAMESPACE, "default", "debug-target")
    path = f"/api/v1/namespaces/{NAMESPACE}/pods/{running['metadata']['name']}/ephemeralcontainers"
    debug = {"name": "debug", "image": running["spec"]["containers"][0]["image"], "imagePullPolicy": "Never",
             "command": ["sh"], "env": [{"name": "CUDA_DEVICE_SM_LIMIT_0", "value": "100"}]}  # fmt: skip
    patch = {"spec": {"ephemeralContainers": [debug]}}
    refused(lambda: cluster.kube.patch(dry(path), patch, "strategic"), "ephemeralContainer debug of this pod set")


def test_what_the_api_server_stores_for_a_huge_capacity_request(cluster: Cluster, installed) -> None:
    """Issue 18 item 8: the 1.36 API server accepts ``1e1000000`` in a claim's capacity request and stores it
    (canonical form ``10e999999``, not clamped to 2^63-1), so every component that reads claims must bound its
    parser: ours refuses the stored text at once, naming the field."""
    claim = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": "huge"},
             "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
                 "deviceClassName": DRIVER, "capacity": {"requests": {"memory": "1e1000000"}}}}]}}}  # fmt: skip
    stored = cluster.kube.create(claim, NAMESPACE)
    value = stored["spec"]["devices"]["requests"][0]["exactly"]["capacity"]["requests"]["memory"]
    print(f"\n[e2e] the API server stored capacity request 1e1000000 as {value!r}")
    assert value == "10e999999", value
    with pytest.raises(ParseError, match=r"capacity\.requests\[memory\]: '10e999999' has exponent 999999"):
        parse_claim(stored)
    Kube.delete_obj(cluster.kube, stored, NAMESPACE)
