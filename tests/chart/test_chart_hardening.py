"""Chart side of issue 18: the webhook's client-certificate check and NetworkPolicy, requests and limits on
every container, and admin-pinned DeviceClass config."""

from __future__ import annotations

import pytest
from chart_render import INSTALL, HelmError, find, render

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
POLICY = {"policy.enabled": "true", "webhook.clientAuth.caBundle!": CA}


def _webhook_container(objects) -> dict:
    deployment = find(objects, "Deployment", "-webhook")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_client_certificates_are_checked_by_default(helm) -> None:
    objects = render(helm, {**POLICY, "webhook.clientAuth.commonNames[0]": "kube-apiserver"})
    args = _webhook_container(objects)["args"]
    assert "--client-ca-file=/etc/dra-hami/client-ca/ca.crt" in args
    assert "--client-common-name=kube-apiserver" in args and "--max-concurrent-reviews=8" in args
    assert find(objects, "ConfigMap", "-webhook-client-ca")["data"] == {"ca.crt": CA}
    volumes = find(objects, "Deployment", "-webhook")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "client-ca", "configMap": {"name": "dra-hami-webhook-client-ca"}} in volumes


def test_a_missing_ca_fails_the_install_with_the_fix(helm) -> None:
    with pytest.raises(
        HelmError, match=r"webhook.clientAuth.caBundle: set it to the PEM CA .*clientAuth.enabled=false"
    ):
        render(helm, {"policy.enabled": "true"})
    with pytest.raises(HelmError, match=r"webhook.clientAuth.caBundle: set it"):
        render(helm)  # the webhook is part of the default install: it needs the choice too
    objects = render(helm, {"policy.enabled": "true", "webhook.clientAuth.enabled": "false"})
    assert not any(a.startswith("--client-ca-file") for a in _webhook_container(objects)["args"])
    assert not [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-client-ca")]


def test_network_policy_admits_only_the_webhook_ports(helm) -> None:
    peer = {"ipBlock": {"cidr": "10.0.0.10/32"}}
    objects = render(helm, {**POLICY, "webhook.networkPolicy.from[0].ipBlock.cidr": "10.0.0.10/32"})
    policy = find(objects, "NetworkPolicy", "-webhook")
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "webhook"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    https, metrics = policy["spec"]["ingress"]
    assert https == {"ports": [{"port": 9443, "protocol": "TCP"}], "from": [peer]}
    assert metrics == {"ports": [{"port": 9403, "protocol": "TCP"}]}
    off = render(helm, {**POLICY, "webhook.networkPolicy.enabled": "false"})
    assert not [o for o in off if o["kind"] == "NetworkPolicy"]


def test_every_container_has_requests_and_limits(helm) -> None:
    objects = render(helm, POLICY)
    seen = []
    for workload in (o for o in objects if o["kind"] in ("DaemonSet", "Deployment")):
        spec = workload["spec"]["template"]["spec"]
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            resources = container.get("resources") or {}
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), container["name"]
            assert {"cpu", "memory"} <= set(resources.get("limits", {})), container["name"]
            seen.append(container["name"])
    assert sorted(seen) == ["controller", "exporter", "install-libvgpu", "kubelet-plugin", "webhook"]


def test_pinned_device_class_fields_render_into_its_config(helm) -> None:
    from dra_hami.api.vgpu_config import parse_vgpu_config

    objects = render(
        helm, {**INSTALL, "deviceClass.config.coreLimitPolicy": "default", "deviceClass.pinned[0]": "coreLimitPolicy"}
    )
    params = find(objects, "DeviceClass")["spec"]["config"][0]["opaque"]["parameters"]
    config = parse_vgpu_config(params, "DeviceClass.spec.config[0]")
    assert config.pinned == ("coreLimitPolicy",) and config.core_limit_policy.value == "default"
