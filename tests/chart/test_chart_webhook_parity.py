"""The chart's webhook registrations are the ones dra_hami/webhook/configuration.py builds (and
docs/webhook-configuration.yaml shows): same rules, paths, failurePolicy, sideEffects, timeouts and
matchConditions. Only the names, the service reference and the caBundle are the chart's own."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from chart_render import find, render

from dra_hami import wire
from dra_hami.webhook import configuration

NAMESPACE = "gpu-system"


def _comparable(hook: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(hook)
    out.pop("name")
    out["clientConfig"].pop("caBundle", None)
    service = out["clientConfig"]["service"]
    service.pop("name"), service.pop("namespace")
    return out


def _assert_same(rendered: list[dict[str, Any]], built: list[dict[str, Any]]) -> None:
    assert [h["name"].split(".", 1)[0] for h in rendered] == [h["name"].split(".", 1)[0] for h in built]
    for mine, theirs in zip(rendered, built, strict=True):
        assert _comparable(mine) == _comparable(theirs), mine["name"]


@pytest.mark.parametrize("driver", [wire.DEFAULT_DRIVER_NAME, "gpu.example.com"])
def test_chart_webhooks_equal_the_webhook_configuration(helm, driver):
    objects = render(
        helm,
        {"policy.enabled": "true", "webhook.clientAuth.enabled": "false", "driverName": driver},
        namespace=NAMESPACE,
    )
    service = find(objects, "Service", "-webhook")["metadata"]["name"]
    where = (service, NAMESPACE, 443)

    mutating = find(objects, "MutatingWebhookConfiguration")
    built = configuration.mutating(driver, service=where, webhook_namespace=NAMESPACE)
    _assert_same(mutating["webhooks"], built["webhooks"])
    for hook in mutating["webhooks"]:
        assert hook["clientConfig"]["service"] == {"name": service, "namespace": NAMESPACE,
                                                   "path": "/mutate-pods", "port": 443}  # fmt: skip
        assert hook["name"].endswith(f".{driver}")

    validating = find(objects, "ValidatingWebhookConfiguration")
    built = configuration.validating(driver, service=where, webhook_namespace=NAMESPACE)
    # The chart also keeps claims of kube-system and of its own namespace away from the webhook (as for pods).
    pod_selector = mutating["webhooks"][0]["namespaceSelector"]
    for hook in validating["webhooks"]:
        if hook["name"].startswith("claim"):
            assert hook.pop("namespaceSelector") == pod_selector
    _assert_same(validating["webhooks"], built["webhooks"])


@pytest.mark.parametrize(
    ("values", "pods", "claims"),
    [
        ({"webhook.controlEnvRefusal": "false"}, False, True),
        ({"webhook.quota": "false"}, True, True),  # VGpuConfig validation still needs the claim hooks
        ({"webhook.quota": "false", "webhook.configValidation": "false"}, True, False),
    ],
)
def test_feature_switches_register_what_the_configuration_module_builds(helm, values, pods, claims):
    objects = render(helm, {"webhook.clientAuth.enabled": "false", **values}, namespace=NAMESPACE)
    service = find(objects, "Service", "-webhook")["metadata"]["name"]
    validating = find(objects, "ValidatingWebhookConfiguration")
    for hook in validating["webhooks"]:
        hook.pop("namespaceSelector") if hook["name"].startswith("claim") else None
    built = configuration.validating(service=(service, NAMESPACE, 443), webhook_namespace=NAMESPACE, pods=pods,
                                     claims=claims)  # fmt: skip
    _assert_same(validating["webhooks"], built["webhooks"])


def test_the_docs_registration_is_what_the_chart_renders_for_kube_system(helm):
    """Installed into kube-system under the release name dra-hami, the chart's webhooks point where the
    docs' registration points, and only the excluded namespaces collapse into one."""
    objects = render(helm, {"policy.enabled": "true", "webhook.clientAuth.enabled": "false"}, namespace="kube-system")
    (hook,) = find(objects, "MutatingWebhookConfiguration")["webhooks"]
    (want,) = configuration.mutating()["webhooks"]
    assert hook["namespaceSelector"] == want["namespaceSelector"]
    assert hook["matchConditions"] == want["matchConditions"]


def test_timeouts_and_claim_failure_policy_follow_the_values(helm):
    values = {"policy.enabled": "true", "webhook.clientAuth.enabled": "false", "webhook.timeoutSeconds": "9",
              "webhook.claimValidationFailurePolicy": "Ignore"}  # fmt: skip
    objects = render(helm, values)
    pods = find(objects, "MutatingWebhookConfiguration")["webhooks"]
    claims = find(objects, "ValidatingWebhookConfiguration")["webhooks"]
    assert {h["timeoutSeconds"] for h in pods + claims} == {9}
    assert {h["failurePolicy"] for h in claims} == {"Ignore"}
    assert {h["failurePolicy"] for h in pods} == {"Ignore"}
