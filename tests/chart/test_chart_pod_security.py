"""Pod Security: the node DaemonSet's pods are admitted only in a `privileged` namespace, and a `baseline` one
refuses them for the reasons docs/install.md gives (hostPath volumes, a privileged container, hostPID).

The verdicts come from the Kubernetes pod-security-admission library (tests/chart/psa), the code of the API
server's PodSecurity admission: enforce=baseline makes the DaemonSet controller's pod creations fail with these
reasons (the DaemonSet itself is admitted, with a warning), so no plugin pod ever starts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from chart_render import INSTALL, REPO_ROOT, find, render


def verdict(psa: Path, level: str, template: dict) -> dict:
    done = subprocess.run([str(psa), level], input=yaml.safe_dump(template), capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    return json.loads(done.stdout)


def node_pod_template(helm, **values: str) -> dict:
    return find(render(helm, {**INSTALL, **values}), "DaemonSet", "kubelet-plugin")["spec"]["template"]


@pytest.mark.parametrize(
    "values",
    [{}, {"devices.fakeProfile": "t4x2"}, {"exporter.enabled": "false"}],
    ids=["defaults", "fake-gpus", "no-exporter"],
)
def test_a_baseline_namespace_refuses_the_node_pods(helm, psa, values):
    template = node_pod_template(helm, **values)
    refused = verdict(psa, "baseline", template)
    assert not refused["allowed"]
    reasons = "\n".join(refused["reasons"])
    assert 'hostPath volumes (volumes "plugin-dir", "registry-dir", "cdi-dir", "vgpu-dir")' in reasons
    assert 'privileged (container "kubelet-plugin" must not set securityContext.privileged=true)' in reasons
    assert verdict(psa, "privileged", template) == {"allowed": True, "reasons": []}


def test_the_guard_adds_host_pid_to_the_reasons(helm, psa):
    assert "host namespaces (hostPID=true)" in verdict(psa, "baseline", node_pod_template(helm))["reasons"]


@pytest.mark.parametrize("deployment", ["controller", "webhook"])
def test_the_other_pods_need_no_exemption(helm, psa, deployment):
    """They pass even `restricted` (and show the check does not refuse everything)."""
    template = find(render(helm, {**INSTALL, "policy.enabled": "true"}), "Deployment", deployment)
    assert verdict(psa, "restricted", template["spec"]["template"]) == {"allowed": True, "reasons": []}


def test_install_docs_label_the_namespace_privileged():
    install = (REPO_ROOT / "docs" / "install.md").read_text()
    assert "kubectl label namespace dra-hami pod-security.kubernetes.io/enforce=privileged" in install
    assert "hostPath volumes" in install and "Bidirectional" in install
