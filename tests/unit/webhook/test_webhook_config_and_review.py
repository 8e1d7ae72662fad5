"""Webhook registrations (outage-safety values, matchConditions evaluated by a CEL engine, docs in sync) and the
AdmissionReview wire format."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import celpy
import pytest
from webhook_fixtures import DRIVER, container, pod, slice_spec

from dra_hami.webhook import configuration as conf
from dra_hami.webhook.review import Response, ReviewError, apply_patch, json_patch, parse, render

DOCS = Path(__file__).resolve().parents[3] / "docs" / "webhook-configuration.yaml"


def evaluate(expression: str, obj: dict) -> bool:
    env = celpy.Environment()
    return bool(env.program(env.compile(expression)).evaluate({"object": celpy.json_to_cel(obj)}))


def test_pod_webhook_fails_open_quickly_and_skips_system_namespaces() -> None:
    (hook,) = conf.mutating()["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["timeoutSeconds"] <= 5
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert hook["rules"][0]["operations"] == ["CREATE"] and hook["rules"][0]["resources"] == ["pods"]
    (expr,) = hook["namespaceSelector"]["matchExpressions"]
    assert expr["operator"] == "NotIn" and "kube-system" in expr["values"]
    assert conf.mutating(webhook_namespace="gpu-system")["webhooks"][0]["namespaceSelector"]["matchExpressions"][0][
        "values"
    ] == ["gpu-system", "kube-system"]


@pytest.mark.parametrize(
    ("obj", "sent"),
    [
        (pod(container("w", {"cpu": "1"})), False),  # plain pod: never reaches the webhook
        (pod(container("w")), False),
        (pod(container("w", {"nvidia.com/gpu": 1})), True),
        (pod(container("w", {"nvidia.com/gpucores": 10})), True),
        (pod(container("w"), initContainers=[container("i", {"nvidia.com/gpumem": 100})]), True),
        (pod(container("w"), resourceClaims=[{"name": "g", "resourceClaimTemplateName": "t"}]), True),
        (pod(container("w"), resourceClaims=[]), False),
    ],
)
def test_pod_match_condition_only_sends_gpu_or_claim_pods(obj: dict, sent: bool) -> None:
    assert evaluate(conf.POD_CONDITION, obj) is sent


def test_requests_only_nvidia_pod_is_sent_too() -> None:
    c = container("w")
    c["resources"] = {"requests": {"nvidia.com/gpumem": "1024"}}
    assert evaluate(conf.POD_CONDITION, pod(c))


def test_claim_webhooks_fail_closed_for_every_claim_with_device_requests() -> None:
    pod_env, *hooks = conf.validating()["webhooks"]
    assert pod_env["name"].startswith("pod-env.") and pod_env["failurePolicy"] == "Ignore"
    assert pod_env["clientConfig"]["service"]["path"] == "/validate-pods" and pod_env["sideEffects"] == "None"
    assert pod_env["matchConditions"] == conf.mutating()["webhooks"][0]["matchConditions"]
    assert [h["rules"][0]["resources"] for h in hooks] == [["resourceclaims"], ["resourceclaimtemplates"]]
    assert all(h["failurePolicy"] == "Fail" and h["timeoutSeconds"] <= 5 for h in hooks)
    claim_expr = hooks[0]["matchConditions"][0]["expression"]
    template_expr = hooks[1]["matchConditions"][0]["expression"]
    ours = {"spec": slice_spec("1Gi")}
    # Another class may select our GPUs (issue 18 item 9): the webhook reads the class, so it sees every claim.
    theirs = {"spec": slice_spec("1Gi", cls="nic.example.com")}
    assert evaluate(claim_expr, ours) and evaluate(claim_expr, theirs)
    assert evaluate(template_expr, {"spec": ours}) and evaluate(template_expr, {"spec": theirs})
    nothing = {"spec": {"devices": {"requests": []}}}
    assert not evaluate(claim_expr, nothing) and not evaluate(template_expr, {"spec": nothing})
    config_only = {"spec": slice_spec(cls="nic.example.com")}
    config_only["spec"]["devices"]["config"] = [{"opaque": {"driver": DRIVER, "parameters": {}}}]
    assert evaluate(claim_expr, config_only)
    first_available = {
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "g",
                        "firstAvailable": [
                            {"name": "a", "deviceClassName": "x"},
                            {"name": "b", "deviceClassName": DRIVER},
                        ],
                    }
                ]
            }
        }
    }
    assert evaluate(claim_expr, first_available)


def test_url_and_ca_bundle_for_a_webhook_outside_the_cluster() -> None:
    pod_env, claims, _ = conf.validating(ca_bundle=b"PEM", url="https://127.0.0.1:9443/")["webhooks"]
    assert claims["clientConfig"] == {"url": "https://127.0.0.1:9443/validate-claims", "caBundle": "UEVN"}
    assert pod_env["clientConfig"] == {"url": "https://127.0.0.1:9443/validate-pods", "caBundle": "UEVN"}


def test_each_feature_switch_leaves_out_its_registrations() -> None:
    names = [h["name"].split(".", 1)[0] for h in conf.validating(pods=False)["webhooks"]]
    assert names == ["claims", "claimtemplates"]
    assert [h["name"].split(".", 1)[0] for h in conf.validating(claims=False)["webhooks"]] == ["pod-env"]


def test_docs_yaml_is_what_the_code_renders() -> None:
    assert DOCS.read_text() == conf.render_docs(), "regenerate: python -m dra_hami.webhook.configuration > " + str(DOCS)


def test_review_round_trip_with_patch_and_warnings() -> None:
    body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u1"}})
    assert parse(body.encode()) == {"uid": "u1"}
    old = pod(container("w"))
    new = json.loads(json.dumps(old))
    new["spec"]["schedulingGates"] = [{"name": "g"}]
    new["metadata"]["labels"] = {"a/b": "c"}
    out = json.loads(render("u1", Response.mutate(old, new, ["careful"])))
    response = out["response"]
    assert (out["apiVersion"], out["kind"], response["uid"], response["allowed"]) == (
        "admission.k8s.io/v1",
        "AdmissionReview",
        "u1",
        True,
    )
    assert response["patchType"] == "JSONPatch" and response["warnings"] == ["careful"]
    assert apply_patch(old, json.loads(base64.b64decode(response["patch"]))) == new


def test_deny_carries_code_and_message_and_no_patch() -> None:
    response = json.loads(render("u2", Response.deny("no", 400)))["response"]
    assert response == {"uid": "u2", "allowed": False, "status": {"code": 400, "message": "no", "reason": "BadRequest"}}


def test_removals_and_unchanged_pods() -> None:
    old = pod(container("w"), schedulingGates=[{"name": "g"}])
    new = json.loads(json.dumps(old))
    del new["spec"]["schedulingGates"]
    assert json_patch(old, new) == [{"op": "remove", "path": "/spec/schedulingGates"}]
    assert json_patch(old, old) == []
    assert Response.mutate(old, old).patch is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not JSON"),
        (b'{"kind": "Pod"}', "not an AdmissionReview"),
        (
            b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1", "request": {"uid": "x"}}',
            "register with admission.k8s.io/v1",
        ),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {}}', "no request.uid"),
    ],
)
def test_bad_reviews(body: bytes, message: str) -> None:
    with pytest.raises(ReviewError, match=message):
        parse(body)
