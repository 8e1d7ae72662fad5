"""The webhooks' matchConditions, evaluated with cel-python on sample objects: who is sent to the webhook.

The real API server compiles the same expressions in tests/e2e/test_chart.py; here their logic is checked.
"""

from __future__ import annotations

from typing import Any

import celpy
import pytest
from chart_render import find, render

DRIVER = "hami-core-gpu.project-hami.io"


def _pod(*containers: dict[str, Any], init: tuple[dict[str, Any], ...] = (), claims=None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers)}
    if init:
        spec["initContainers"] = list(init)
    if claims is not None:
        spec["resourceClaims"] = claims
    return {"spec": spec}


PLAIN = {"name": "a", "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Gi"}}}
BARE = {"name": "a"}
LIMITS = {"name": "b", "resources": {"limits": {"nvidia.com/gpumem": "4096"}}}
REQUESTS = {"name": "b", "resources": {"requests": {"nvidia.com/gpu": "1", "cpu": "1"}}}

PODS = {
    "claims": (_pod(BARE, claims=[{"name": "gpu"}]), True),
    "hami-limits": (_pod(BARE, LIMITS), True),
    "hami-requests-only": (_pod(BARE, REQUESTS), True),
    "hami-in-init-container": (_pod(PLAIN, init=(REQUESTS,)), True),
    "claims-and-hami": (_pod(LIMITS, claims=[{"name": "gpu"}]), True),
    "plain": (_pod(PLAIN), False),
    "bare": (_pod(BARE), False),
    "empty-claims": (_pod(BARE, claims=[]), False),
    "plain-init": (_pod(BARE, init=(PLAIN,)), False),
    "other-vendor": (_pod({"name": "a", "resources": {"limits": {"amd.com/gpu": "1"}}}), False),
}


def _devices(class_name: str, first_available: bool = False) -> dict[str, Any]:
    if first_available:
        request = {"name": "gpu", "firstAvailable": [{"name": "big", "deviceClassName": "other"},
                                                     {"name": "small", "deviceClassName": class_name}]}  # fmt: skip
    else:
        request = {"name": "gpu", "exactly": {"deviceClassName": class_name}}
    return {"devices": {"requests": [request]}}


def _with_config(spec: dict[str, Any], driver: str) -> dict[str, Any]:
    config = [{"requests": ["gpu"], "opaque": {"driver": driver, "parameters": {"kind": "VGpuConfig"}}}]
    return {"devices": {**spec.get("devices", {}), "config": config}}


CLAIMS = {
    "our-class": (_devices(DRIVER), True),
    "our-class-in-firstAvailable": (_devices(DRIVER, first_available=True), True),
    "other-class-with-our-config": (_with_config(_devices("gpu.nvidia.com"), DRIVER), True),
    "only-our-config": (_with_config({}, DRIVER), True),
    # Another class may select our GPUs too (issue 18 item 9): the webhook reads the class and decides.
    "other-class": (_devices("gpu.nvidia.com"), True),
    "other-class-other-config": (_with_config(_devices("gpu.nvidia.com"), "gpu.nvidia.com"), True),
    "empty-requests": ({"devices": {"requests": []}}, False),
    "only-other-config": (_with_config({}, "gpu.nvidia.com"), False),
    "config-without-opaque": ({"devices": {"config": [{"requests": ["gpu"]}]}}, False),
    "no-devices": ({}, False),
    "no-requests": ({"devices": {}}, False),
}


def _evaluate(expression: str, obj: dict[str, Any]) -> bool:
    env = celpy.Environment()
    return bool(env.program(env.compile(expression)).evaluate({"object": celpy.json_to_cel(obj)}))


def _matches(hook: dict[str, Any], obj: dict[str, Any]) -> bool:
    return all(_evaluate(c["expression"], obj) for c in hook["matchConditions"])


@pytest.fixture(scope="module")
def hooks(helm) -> dict[str, dict[str, Any]]:
    objects = render(helm, {"policy.enabled": "true", "webhook.clientAuth.enabled": "false"})
    out = {}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        out.update({h["name"].split(".", 1)[0]: h for h in find(objects, kind)["webhooks"]})
    assert sorted(out) == ["claims", "claimtemplates", "pod-env", "pods"]
    return out


@pytest.mark.parametrize(("pod", "sent"), PODS.values(), ids=PODS.keys())
def test_pods_with_claims_or_nvidia_resources_reach_the_pod_webhook(hooks, pod, sent):
    assert _matches(hooks["pods"], pod) is sent
    assert _matches(hooks["pod-env"], pod) is sent  # the control-variable refusal sees the same pods


@pytest.mark.parametrize(("spec", "sent"), CLAIMS.values(), ids=CLAIMS.keys())
def test_claims_with_device_requests_or_our_config_are_validated(hooks, spec, sent):
    assert _matches(hooks["claims"], {"spec": spec}) is sent
    assert _matches(hooks["claimtemplates"], {"spec": {"spec": spec}}) is sent
