"""The MutatingWebhookConfiguration and ValidatingWebhookConfiguration of ``dra-hami webhook`` as dicts.

The Helm chart mirrors these (docs/webhook-configuration.yaml is rendered from here by
``python -m dra_hami.webhook.configuration``; a unit test keeps the two equal). One failurePolicy per
registration, chosen for who is hurt when the webhook is down (docs/configuration.md has the table):

* ``pods`` (mutating: legacy translation, policy-mode gate): ``Ignore``. The API server only calls it for pods
  that have ``spec.resourceClaims`` or an ``nvidia.com/*`` resource (``matchConditions``), never in
  kube-system or the webhook's own namespace. During an outage such a pod is created unchanged: a DRA pod is
  placed first-fit by the stock scheduler instead of by policy, a HAMi-style pod stays Pending as
  "Insufficient nvidia.com/gpu" until it is re-created (its ReplicaSet/Job does that). ``Fail`` would stop
  every GPU pod of the cluster for a webhook outage.
* ``pod-env`` (validating: pods that set libvgpu's control variables): ``Ignore``. The chart's
  ValidatingAdmissionPolicy enforces the same rule inside the API server, so an outage loses nothing there;
  a validating webhook sees the pod after every mutating webhook, so it also refuses a variable another
  mutator added.
* ``claims``/``claimtemplates`` (validating: VGpuConfig, GpuQuota): ``Fail``, only for objects that request
  devices or carry our opaque config (``matchConditions``). Failing open would let a claim past its
  GpuQuota; while the webhook is down our claims are refused with a retry (the resourceclaim controller
  retries template claims by itself), claims of other drivers are never sent.

All time out after 5 s.
"""

from __future__ import annotations

import base64
import sys
from typing import Any

import yaml

from dra_hami import wire

NAME = "dra-hami-webhook"
POD_TIMEOUT = 5
CLAIM_TIMEOUT = 5


def _client(
    path: str, ca_bundle: bytes | None, url: str | None, service: tuple[str, str, int] | None
) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    if url:
        cfg["url"] = url.rstrip("/") + path
    else:
        name, namespace, port = service or (NAME, "kube-system", 443)
        cfg["service"] = {"name": name, "namespace": namespace, "path": path, "port": port}
    if ca_bundle:
        cfg["caBundle"] = base64.b64encode(ca_bundle).decode()
    return cfg


def _uses_nvidia(var: str) -> str:
    return (
        f"{var}.exists(c, has(c.resources) && ("
        "(has(c.resources.limits) && c.resources.limits.exists(k, k.startsWith('nvidia.com/'))) || "
        "(has(c.resources.requests) && c.resources.requests.exists(k, k.startsWith('nvidia.com/')))))"
    )


POD_CONDITION = (
    "(has(object.spec.resourceClaims) && size(object.spec.resourceClaims) > 0) || "
    + _uses_nvidia("object.spec.containers")
    + " || (has(object.spec.initContainers) && "
    + _uses_nvidia("object.spec.initContainers")
    + ")"
)


def claim_condition(devices: str, driver: str) -> str:
    """Every claim that requests devices (any DeviceClass: another class may select our GPUs, and the webhook
    decides from the class's selectors) or carries our opaque config."""
    d = f"'{driver}'"
    return (
        f"has({devices}) && ("
        f"(has({devices}.requests) && size({devices}.requests) > 0) || "
        f"(has({devices}.config) && {devices}.config.exists(c, has(c.opaque) && c.opaque.driver == {d})))"
    )


def _namespaces(webhook_namespace: str) -> dict[str, Any]:
    excluded = sorted({"kube-system", webhook_namespace})
    return {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded}]}


def _pod_rules() -> list[dict[str, Any]]:
    return [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"],
             "scope": "Namespaced"}]  # fmt: skip


def mutating(
    driver: str = wire.DEFAULT_DRIVER_NAME,
    ca_bundle: bytes | None = None,
    url: str | None = None,
    service: tuple[str, str, int] | None = None,
    webhook_namespace: str = "kube-system",
) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [
            {
                "name": "pods.dra-hami.project-hami.io",
                "admissionReviewVersions": ["v1"],
                "clientConfig": _client("/mutate-pods", ca_bundle, url, service),
                "rules": _pod_rules(),
                "failurePolicy": "Ignore",
                "sideEffects": "NoneOnDryRun",  # creates ResourceClaimTemplates, never on dry runs
                "timeoutSeconds": POD_TIMEOUT,
                "reinvocationPolicy": "Never",
                "namespaceSelector": _namespaces(webhook_namespace),
                "matchConditions": [{"name": "gpu-or-claims", "expression": POD_CONDITION}],
            }
        ],
    }


def validating(
    driver: str = wire.DEFAULT_DRIVER_NAME,
    ca_bundle: bytes | None = None,
    url: str | None = None,
    service: tuple[str, str, int] | None = None,
    webhook_namespace: str = "kube-system",
    pods: bool = True,
    claims: bool = True,
) -> dict[str, Any]:
    """``pods``: the control-variable refusal; ``claims``: VGpuConfig validation and/or GpuQuota."""
    pod_env = {
        "name": "pod-env.dra-hami.project-hami.io",
        "admissionReviewVersions": ["v1"],
        "clientConfig": _client("/validate-pods", ca_bundle, url, service),
        "rules": _pod_rules(),
        "failurePolicy": "Ignore",  # the ValidatingAdmissionPolicy holds the same rule during an outage
        "sideEffects": "None",
        "timeoutSeconds": POD_TIMEOUT,
        "namespaceSelector": _namespaces(webhook_namespace),
        "matchConditions": [{"name": "gpu-or-claims", "expression": POD_CONDITION}],
    }

    def hook(name: str, resource: str, devices: str) -> dict[str, Any]:
        return {
            "name": name,
            "admissionReviewVersions": ["v1"],
            "clientConfig": _client("/validate-claims", ca_bundle, url, service),
            "rules": [
                {
                    "apiGroups": ["resource.k8s.io"],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": [resource],
                    "scope": "Namespaced",
                }
            ],
            "failurePolicy": "Fail",
            "sideEffects": "NoneOnDryRun",  # charges GpuQuota status, never on dry runs
            "timeoutSeconds": CLAIM_TIMEOUT,
            "matchConditions": [{"name": "device-requests", "expression": claim_condition(devices, driver)}],
        }

    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [
            *([pod_env] if pods else []),
            *(
                [
                    hook("claims.dra-hami.project-hami.io", "resourceclaims", "object.spec.devices"),
                    hook(
                        "claimtemplates.dra-hami.project-hami.io", "resourceclaimtemplates", "object.spec.spec.devices"
                    ),
                ]
                if claims
                else []
            ),
        ],
    }


def render_docs() -> str:
    header = (
        "# Webhook registrations of `dra-hami webhook` (generated by `python -m dra_hami.webhook.configuration`;\n"
        "# the Helm chart mirrors them). The service dra-hami-webhook in kube-system serves both on port 443;\n"
        "# put the serving CA into caBundle (or let cert-manager's cainjector do it). Why these values:\n"
        "# dra_hami/webhook/configuration.py and docs/migrating-from-hami.md.\n"
    )
    return header + yaml.safe_dump_all([mutating(), validating()], sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render_docs())
