"""The webhooks' matchConditions, evaluated with cel-python on sample objects: who is sent to the webhook.

The real API server compiles the same expressions in tests/e2e/test_chart.py; here their logic is checked.
"""

from __future__ import annotations

from typing import Any

import celpy
import pytest
from chart_render import find, render

DRIVER = "hami-core-gpu.project-hami.io"
POD_WITH_CLAIM = {"spec": {"containers": [{"name": "a"}], "resourceClaims": [{"name": "gpu"}]}}
POD_PLAIN = {"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1"}}}]}}
POD_LEGACY = {
    "spec": {"containers": [{"name": "a"}, {"name": "b", "resources": {"limits": {"nvidia.com/gpumem": "4096"}}}]}
}
POD_EMPTY_CLAIMS = {"spec": {"containers": [{"name": "a"}], "resourceClaims": []}}


def _devices(class_name: str, first_available: bool = False) -> dict[str, Any]:
    if first_available:
        request = {"name": "gpu", "firstAvailable": [{"name": "big", "deviceClassName": "other"},
                                                     {"name": "small", "deviceClassName": class_name}]}  # fmt: skip
    else:
        request = {"name": "gpu", "exactly": {"deviceClassName": class_name}}
    return {"devices": {"requests": [request]}}


def _evaluate(expression: str, obj: dict[str, Any]) -> bool:
    env = celpy.Environment()
    return bool(env.program(env.compile(expression)).evaluate({"object": celpy.json_to_cel(obj)}))


def _matches(hook: dict[str, Any], obj: dict[str, Any]) -> bool:
    return all(_evaluate(c["expression"], obj) for c in hook["matchConditions"])


@pytest.fixture(scope="module")
def hooks(helm) -> dict[str, dict[str, Any]]:
    objects = render(helm, {"policy.enabled": "true", "webhook.legacyTranslation": "cluster"})
    out = {}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        out.update({h["name"].split(".", 1)[0]: h for h in find(objects, kind)["webhooks"]})
    return out


def test_only_pods_with_claims_reach_the_gate_webhook(hooks):
    gate = hooks["gate-pods"]
    assert _matches(gate, POD_WITH_CLAIM)
    assert not _matches(gate, POD_PLAIN)
    assert not _matches(gate, POD_LEGACY)
    assert not _matches(gate, POD_EMPTY_CLAIMS)


def test_only_pods_with_hami_resources_reach_the_legacy_webhook(hooks):
    legacy = hooks["legacy-pods"]
    assert _matches(legacy, POD_LEGACY)
    assert not _matches(legacy, POD_PLAIN)
    assert not _matches(legacy, POD_WITH_CLAIM)  # those go to the gate webhook, which sees legacy limits too


@pytest.mark.parametrize(
    ("spec", "sent"),
    [(_devices(DRIVER), True), (_devices(DRIVER, first_available=True), True), (_devices("gpu.nvidia.com"), False),
     ({}, False), ({"devices": {}}, False)],
    ids=["our-class", "our-class-in-firstAvailable", "other-class", "no-devices", "no-requests"],
)  # fmt: skip
def test_only_claims_of_our_class_are_validated(hooks, spec, sent):
    assert _matches(hooks["resourceclaims"], {"spec": spec}) is sent
    assert _matches(hooks["resourceclaimtemplates"], {"spec": {"spec": spec}}) is sent
