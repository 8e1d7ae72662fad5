"""webhook.tls.existingSecret: a user-provided certificate, so `helm template` renders the same every time (GitOps)."""

from __future__ import annotations

import base64

import pytest
from chart_render import HelmError, find, render

CA = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
POLICY = {
    "policy.enabled": "true",
    "webhook.clientAuth.enabled": "false",
}
OWN = {**POLICY, "webhook.tls.existingSecret": "corp-webhook-tls", "webhook.tls.caBundle!": CA}


def test_the_self_signed_default_changes_on_every_render(helm):
    # The behaviour the option exists for: without a cluster to read the old Secret from, a new CA each time.
    first, second = render(helm, POLICY), render(helm, POLICY)
    assert find(first, "Secret", "-webhook-tls")["data"] != find(second, "Secret", "-webhook-tls")["data"]


def test_an_existing_secret_renders_the_same_every_time(helm):
    first, second = render(helm, OWN), render(helm, OWN)
    assert first == second
    assert not [o for o in first if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-webhook-tls")]
    assert not [o for o in first if o["kind"] in ("Certificate", "Issuer")]
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for hook in find(first, kind)["webhooks"]:
            assert base64.b64decode(hook["clientConfig"]["caBundle"]).decode() == CA
    deploy = find(first, "Deployment", "-webhook")
    secrets = [v["secret"]["secretName"] for v in deploy["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert secrets == ["corp-webhook-tls"]


def test_an_existing_secret_needs_its_ca_and_excludes_cert_manager(helm):
    with pytest.raises(HelmError, match=r"webhook\.tls\.caBundle"):
        render(helm, {**POLICY, "webhook.tls.existingSecret": "corp-webhook-tls"})
    with pytest.raises(HelmError, match="choose one"):
        render(helm, {**OWN, "webhook.certManager.enabled": "true"})
