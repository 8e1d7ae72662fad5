"""The uninstall guard: a pre-delete hook Job that runs `dra-hami uninstall-check` with only `list
resourceclaims`, and refuses (exit 1 stops `helm uninstall`) or warns while claims of the driver are reserved."""

from __future__ import annotations

import click
import pytest
from chart_render import INSTALL, render

from dra_hami.cli import main as cli_main

HOOK = "helm.sh/hook"


def guard(helm, **values: str) -> list[dict]:
    return [o for o in render(helm, {**INSTALL, **values}) if o["metadata"]["name"].endswith("uninstall-guard")]


def test_off_by_default(helm):
    assert guard(helm) == []


def test_is_a_pre_delete_hook_that_runs_before_anything_is_deleted(helm):
    objects = {o["kind"]: o for o in guard(helm, **{"uninstallGuard.enabled": "true"})}
    assert set(objects) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Job"}
    for obj in objects.values():
        assert obj["metadata"]["annotations"][HOOK] == "pre-delete"
        assert obj["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    # Its ServiceAccount and rights exist before the Job runs (lower weight first).
    weights = {k: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for k, o in objects.items()}
    assert weights["Job"] > max(w for k, w in weights.items() if k != "Job")
    assert objects["ClusterRole"]["rules"] == [
        {"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaims"], "verbs": ["list"]}
    ]
    job = objects["Job"]["spec"]
    assert job["backoffLimit"] == 0  # one verdict; a failed Job fails the uninstall
    pod = job["template"]["spec"]
    assert pod["serviceAccountName"] == objects["ServiceAccount"]["metadata"]["name"]
    assert objects["ClusterRoleBinding"]["subjects"][0]["name"] == pod["serviceAccountName"]
    (container,) = pod["containers"]
    assert container["command"] == ["dra-hami", "uninstall-check"]
    assert "--driver-name=hami-core-gpu.project-hami.io" in container["args"]
    assert "--action=refuse" in container["args"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("action", ["refuse", "warn"])
def test_the_hook_passes_flags_the_cli_accepts(helm, action):
    (job,) = [o for o in guard(helm, **{"uninstallGuard.enabled": "true", "uninstallGuard.action": action})
              if o["kind"] == "Job"]  # fmt: skip
    (container,) = job["spec"]["template"]["spec"]["containers"]
    command = cli_main.commands[container["command"][1]]
    ctx = command.make_context("uninstall-check", list(container["args"]))
    assert ctx.params["action"] == action


def test_an_unknown_action_is_refused_by_the_schema(helm):
    from chart_render import HelmError

    with pytest.raises(HelmError, match="action"):
        guard(helm, **{"uninstallGuard.enabled": "true", "uninstallGuard.action": "ignore"})


def test_cli_refuses_an_unknown_action():
    with pytest.raises(click.BadParameter):
        cli_main.commands["uninstall-check"].make_context("uninstall-check", ["--action=maybe"])
