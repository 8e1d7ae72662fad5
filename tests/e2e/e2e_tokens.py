"""ServiceAccount tokens for the e2e tests, and an API client that uses one.

A token bound to a pod (TokenRequest with ``boundObjectRef``) is what a pod's projected ServiceAccount token
is: the API server adds the pod's node to its user info (extra ``authentication.kubernetes.io/node-name``),
which the chart's ValidatingAdmissionPolicy for the kubelet plugin checks. The holder pod must exist while the
token is used.
"""

from __future__ import annotations

import ssl
from typing import Any

from cluster import Cluster, Kube, wait_for
from e2e_objects import busybox_pod


def token(cluster: Cluster, namespace: str, sa: str, bound_pod: dict[str, Any] | None = None) -> str:
    spec: dict[str, Any] = {"expirationSeconds": 3600}
    if bound_pod is not None:
        meta = bound_pod["metadata"]
        spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}
    review = cluster.kube.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token",
                                  {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                   "spec": spec})  # fmt: skip
    return review["status"]["token"]


def holder_pod(cluster: Cluster, namespace: str, sa: str, name: str) -> dict[str, Any]:
    """A sleeping pod of ServiceAccount ``sa`` on the harness's node, for tokens bound to it."""
    pod = busybox_pod(name, serviceAccountName=sa, nodeName=cluster.node_name)
    created = cluster.kube.create(pod, namespace)
    wait_for(lambda: cluster.kube.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{name}"), 30, f"pod {name}")
    return created


def node_bound_token(cluster: Cluster, namespace: str, sa: str) -> str:
    """A token of ``sa`` bound to a holder pod on the node: it carries the node name, as the plugin's own does."""
    return token(cluster, namespace, sa, holder_pod(cluster, namespace, sa, f"{sa}-token-holder"[-63:].lstrip("-")))


class TokenKube(Kube):
    """``Kube`` that authenticates with a bearer token instead of a client certificate."""

    def __init__(self, cluster: Cluster, bearer: str) -> None:
        self.server = cluster.server
        self.ctx = ssl.create_default_context(cafile=str(cluster.pki.ca.cert))
        self.headers = {"Authorization": f"Bearer {bearer}"}
