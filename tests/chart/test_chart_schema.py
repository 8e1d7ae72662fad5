"""values.schema.json rejects bad values with a message naming the key; rendered objects match Kubernetes."""

from __future__ import annotations

import pytest
from chart_render import HelmError, render
from kubernetes_validate import utils as kv
from test_chart_render import VALUE_SETS

# The Kubernetes release the chart targets, and the newest whose schemas kubernetes-validate ships.
TARGET_VERSION = "1.36.0"
NEWEST_VERSION = kv.latest_version()
# Custom resources of operators the chart can use; no Kubernetes schema exists for them.
THIRD_PARTY_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("cert-manager.io/v1", "Certificate"),
                     ("cert-manager.io/v1", "Issuer")}  # fmt: skip

BAD_VALUES = [
    ({"devices.splitCount": "0"}, "/devices/splitCount", "minimum"),
    ({"devices.splitCount": "1001"}, "/devices/splitCount", "maximum"),
    ({"devices.reservedMemory!": "lots"}, "/devices/reservedMemory", "does not match pattern"),
    ({"devices.memoryScaling": "0"}, "/devices/memoryScaling", "exclusiveMinimum"),
    ({"devices.injection": "docker"}, "/devices/injection", "'nvidia-cdi', 'device-nodes', 'none'"),
    ({"devices.nvidiaCdiTemplate": "nvidia.com/gpu=all"}, "/devices/nvidiaCdiTemplate", "does not match pattern"),
    ({"logging.level": "verbose"}, "/logging/level", "'debug', 'info', 'warning', 'error'"),
    ({"logging.format": "yaml"}, "/logging/format", "'text', 'json'"),
    ({"driverName": "My_Driver"}, "/driverName", "does not match pattern"),
    ({"policy.gpuPolicy": "random"}, "/policy/gpuPolicy", "'binpack', 'spread', 'topology'"),
    ({"policy.nodePolicy": "topology"}, "/policy/nodePolicy", "'binpack', 'spread'"),
    ({"policy.enabled": "yes"}, "/policy/enabled", "want boolean"),
    ({"webhook.legacyTranslation": "on"}, "/webhook/legacyTranslation", "'namespaces', 'cluster'"),
    ({"webhook.claimValidationFailurePolicy": "Retry"}, "/webhook/claimValidationFailurePolicy", "'Fail', 'Ignore'"),
    ({"hostPaths.vgpuDir": "usr/local/vgpu"}, "/hostPaths/vgpuDir", "does not match pattern"),
    ({"kubeletPlugin.maxUnavailable": "0"}, "/kubeletPlugin/maxUnavailable", "minimum"),
    ({"deviceClass.config.coreLimitPolicy": "strict"}, "/deviceClass/config/coreLimitPolicy", "'default', 'force'"),
    ({"devices.splitcount": "3"}, "/devices", "additional properties 'splitcount' not allowed"),
    ({"exporter.port": "70000"}, "/exporter/port", "maximum"),
    ({"health.ignoredXids": "{79,gpu}"}, "/health/ignoredXids/1", "got string, want integer"),
    ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy", "'Always', 'IfNotPresent', 'Never'"),
    ({"dashboards.namespace": "Monitoring"}, "/dashboards/namespace", "does not match pattern"),
    ({"dashboards.enabled": "1"}, "/dashboards/enabled", "want boolean"),
    ({"webhook.legacyTranslation": "disabled"}, "/webhook/legacyTranslation", "'off', 'namespaces', 'cluster'"),
    ({"webhook.quota": "yes"}, "/webhook/quota", "want boolean"),
]


@pytest.mark.parametrize(("values", "where", "why"), BAD_VALUES, ids=[next(iter(v[0])) for v in BAD_VALUES])
def test_schema_rejects_bad_values_with_a_clear_message(helm, values, where, why):
    with pytest.raises(HelmError) as err:
        render(helm, values)
    message = err.value.stderr
    assert "values don't meet the specifications of the schema" in message, message
    assert f"at '{where}'" in message and why in message, message


@pytest.mark.parametrize("version", sorted({TARGET_VERSION, NEWEST_VERSION}))
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_rendered_object_validates_against_the_kubernetes_schemas(helm, value_set, version):
    """Strict schemas (unknown fields fail) of the target release and of the newest kubernetes-validate has."""
    checked = []
    for obj in render(helm, VALUE_SETS[value_set]):
        if (obj["apiVersion"], obj["kind"]) in THIRD_PARTY_KINDS:
            continue
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as err:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} is invalid for Kubernetes {version}: {err}")
        checked.append(obj["kind"])
    assert "DaemonSet" in checked and "DeviceClass" in checked and "CustomResourceDefinition" in checked
