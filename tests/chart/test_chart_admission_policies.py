"""The chart's ValidatingAdmissionPolicies, evaluated with cel-python on sample objects (issue 18).

The real API server compiles and enforces the same policies in tests/e2e/test_refused_writes.py; here their
logic is checked, and the list of control variables is checked against dra_hami/wire.py.
"""

from __future__ import annotations

from typing import Any

import celpy
import pytest
from chart_render import find, render

from dra_hami import wire
from dra_hami.webhook.pod_env import control_env_problems


def _container(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", **extra}


def _env(name: str, value: str = "1") -> list[dict[str, Any]]:
    return [{"name": "PATH", "value": "/bin"}, {"name": name, "value": value}]


def _pod(containers=(), init=(), ephemeral=()) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers) or [_container("main")]}
    if init:
        spec["initContainers"] = list(init)
    if ephemeral:
        spec["ephemeralContainers"] = list(ephemeral)
    return {"metadata": {"name": "p"}, "spec": spec}


@pytest.fixture(scope="module")
def policy(helm) -> dict[str, Any]:
    objects = render(helm)
    binding = find(objects, "ValidatingAdmissionPolicyBinding", "-pod-control-env")
    found = find(objects, "ValidatingAdmissionPolicy", "-pod-control-env")
    assert binding["spec"] == {"policyName": found["metadata"]["name"], "validationActions": ["Deny"]}
    return found


def _offenders(policy: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    (variable,) = policy["spec"]["variables"]
    env = celpy.Environment()
    value = env.program(env.compile(variable["expression"])).evaluate({"object": celpy.json_to_cel(pod)})
    return [str(v) for v in value]


def _names_to_try() -> list[str]:
    names = sorted(wire.CONTROL_ENV_NAMES)
    names += [p + "0" for p in wire.CONTROL_ENV_PREFIXES] + ["VGPU_DEVICE_LIMIT_zz", "VGPU_CLAIMS_DIR"]
    return names


@pytest.mark.parametrize("name", _names_to_try())
def test_every_control_variable_of_wire_is_refused_in_every_container_kind(policy, name) -> None:
    pod = _pod(containers=[_container("main", env=_env(name))], init=[_container("setup", env=_env(name))],
               ephemeral=[_container("debug", env=_env(name))])  # fmt: skip
    assert _offenders(policy, pod) == ["container main", "initContainer setup", "ephemeralContainer debug"]
    assert len(control_env_problems(pod)) == 3  # the webhook agrees


@pytest.mark.parametrize(
    ("env", "refused"),
    [
        (_env("LD_PRELOAD", "/usr/local/vgpu/libvgpu.so"), True),
        (_env("LD_PRELOAD", "/tmp/libvgpu-copy.so"), True),
        (_env("LD_PRELOAD", "/usr/lib/libjemalloc.so"), False),
        (_env("CUDA_VISIBLE_DEVICES", "0"), False),
        (_env("VGPUX"), False),
        (_env("CUDA_DEVICE_MEMORY_LIMITS"), False),
        ([{"name": "VGPU_OOM_POLICY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}], True),
    ],
)
def test_values_and_neighbours(policy, env, refused) -> None:
    pod = _pod(containers=[_container("main", env=env)])
    assert bool(_offenders(policy, pod)) is refused
    assert bool(control_env_problems(pod)) is refused


def test_envfrom_prefixes(policy) -> None:
    bad = _pod(containers=[_container("main", envFrom=[{"prefix": "VGPU_", "configMapRef": {"name": "m"}}])])
    fine = _pod(containers=[_container("main", envFrom=[{"prefix": "APP_", "configMapRef": {"name": "m"}},
                                                         {"configMapRef": {"name": "m"}}])])  # fmt: skip
    assert _offenders(policy, bad) == ["container main"] and _offenders(policy, fine) == []


def test_plain_pods_pass_and_the_rules_cover_create_and_ephemeral_containers(policy) -> None:
    assert _offenders(policy, _pod()) == []
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    got = [(r["resources"], r["operations"]) for r in rules]
    assert got == [(["pods"], ["CREATE"]), (["pods/ephemeralcontainers"], ["UPDATE"])]
    assert policy["spec"]["failurePolicy"] == "Fail"


def test_policies_can_be_turned_off(helm) -> None:
    kinds = {o["kind"] for o in render(helm, {"admissionPolicies.enabled": "false"})}
    assert "ValidatingAdmissionPolicy" not in kinds and "ValidatingAdmissionPolicyBinding" not in kinds
