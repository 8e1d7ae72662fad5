"""The cluster's pod network: pods get their own addresses from the bridge CNI plugin, Services route through
kube-proxy, and a pod of the shipped image configures its Kubernetes client in-cluster (the ``kubernetes`` Service,
the mounted service account token and CA), as the chart's controller and webhook do.

Everything here happens inside the cluster's own network namespace (see netns.py): the pod and service ranges
exist nowhere else.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.request

import pytest
from cluster import NODE_IP, POD_SUBNET, SERVICE_CIDR, Cluster, wait_for
from e2e_objects import busybox_pod
from shipped_image import BuiltImage

pytestmark = pytest.mark.e2e

SERVE = "mkdir -p /www && echo served-by-$(hostname) > /www/index.html && echo READY && exec httpd -f -p 8080 -h /www"


def _pod_ip(cluster: Cluster, name: str, ns: str) -> str:
    pod = cluster.wait_pod_phase(name, ["Running"], ns)
    ip = pod["status"].get("podIP", "")
    assert ip, pod["status"]
    return ip


def _client(name: str, url: str) -> dict:
    # Retries for a while: the first packets may race kube-proxy's sync of a Service created a moment ago.
    # (`timeout`, not wget's -T: this busybox's wget crashes with -T once connected.)
    fetch = f"for i in $(seq 60); do timeout 5 wget -q -O - {url} && exit 0; sleep 1; done; echo UNREACHABLE; exit 1"
    return busybox_pod(name, fetch, hostNetwork=False)


def test_pods_get_their_own_addresses_and_services_route(cluster: Cluster, namespace: str) -> None:
    server = busybox_pod("server", SERVE, hostNetwork=False, labels={"app": "server"})
    cluster.kube.create(server, namespace)
    server_ip = _pod_ip(cluster, "server", namespace)
    assert ipaddress.ip_address(server_ip) in ipaddress.ip_network(POD_SUBNET), server_ip

    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    cluster_ip = cluster.kube.create(service, namespace)["spec"]["clusterIP"]
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(SERVICE_CIDR)

    # Pod to pod by address, and pod to Service (kube-proxy's DNAT to the endpoint).
    cluster.kube.create(_client("by-ip", f"http://{server_ip}:8080/index.html"), namespace)
    cluster.kube.create(_client("by-service", f"http://{cluster_ip}/index.html"), namespace)
    for name in ("by-ip", "by-service"):
        cluster.wait_pod_phase(name, ["Succeeded"], namespace, timeout=120)
        assert cluster.pod_log(name, "main", namespace).strip() == "served-by-server"

    client_ip = cluster.pod("by-ip", namespace)["status"]["podIP"]
    assert client_ip != server_ip and ipaddress.ip_address(client_ip) in ipaddress.ip_network(POD_SUBNET)

    # The test session itself (in the cluster's namespace) reaches the pod and the Service as the kubelet and the
    # API server would.
    for url in (f"http://{server_ip}:8080/index.html", f"http://{cluster_ip}/index.html"):
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.read().decode().strip() == "served-by-server"


def test_kubernetes_service_points_at_the_advertised_node_address(cluster: Cluster) -> None:
    slices = cluster.kube.get(
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        labelSelector="kubernetes.io/service-name=kubernetes",
    )["items"]
    addresses = [a for s in slices for e in s.get("endpoints", []) for a in e["addresses"]]
    assert addresses == [NODE_IP], slices
    node = cluster.node()
    assert {"type": "InternalIP", "address": NODE_IP} in node["status"]["addresses"]


IN_CLUSTER = (
    "import json; from kubernetes import client, config; config.load_incluster_config(); "
    "c = client.Configuration.get_default_copy(); "
    "v = client.VersionApi().get_code(); "
    "n = client.CoreV1Api().read_namespace(open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read()); "
    "print(json.dumps({'host': c.host, 'version': v.git_version, 'namespace': n.metadata.name}))"
)


def test_in_cluster_configuration_from_the_shipped_image(
    cluster: Cluster, namespace: str, shipped_image: BuiltImage
) -> None:
    # The namespace's default service account may read its own namespace object.
    cluster.kube.create(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "read-namespace"},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}],
        },
        namespace,
    )
    cluster.kube.create(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "read-namespace"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-namespace"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        },
        namespace,
    )
    pod = busybox_pod(
        "in-cluster", "unused", image=shipped_image.ref, hostNetwork=False, automountServiceAccountToken=True
    )
    container = pod["spec"]["containers"][0]
    container["command"] = ["python3", "-c", IN_CLUSTER]
    # As the chart runs the controller and webhook.
    container["securityContext"] = {"runAsUser": 65532, "runAsNonRoot": True, "readOnlyRootFilesystem": True}
    cluster.kube.create(pod, namespace)
    wait_for(
        lambda: cluster.pod("in-cluster", namespace)["status"].get("phase") in ("Succeeded", "Failed"),
        180,
        "the in-cluster client pod to finish",
        details=lambda: cluster.describe_pod("in-cluster", namespace),
    )
    log = cluster.pod_log("in-cluster", "main", namespace)
    assert cluster.pod("in-cluster", namespace)["status"]["phase"] == "Succeeded", log
    got = json.loads(log.strip().splitlines()[-1])
    # KUBERNETES_SERVICE_HOST is the Service's ClusterIP: the client went through kube-proxy to NODE_IP.
    assert got["host"] == f"https://{ipaddress.ip_network(SERVICE_CIDR)[1]}:443", got
    assert got["version"] == cluster.kube.get("/version")["gitVersion"]
    assert got["namespace"] == namespace
