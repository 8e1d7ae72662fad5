"""The chart's ValidatingAdmissionPolicies, evaluated with cel-python on sample objects (issue 18).

The real API server compiles and enforces the same policies in tests/e2e/test_refused_writes.py; here their
logic is checked, and the list of control variables is checked against dra_hami/wire.py.
"""

from __future__ import annotations

from typing import Any

import celpy
import pytest
from chart_render import INSTALL, find, render

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
    objects = render(helm, INSTALL)
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
    kinds = {o["kind"] for o in render(helm, {**INSTALL, "admissionPolicies.enabled": "false"})}
    assert "ValidatingAdmissionPolicy" not in kinds and "ValidatingAdmissionPolicyBinding" not in kinds


# ------------------------------------------------------------------- least privilege of the components

SA = "system:serviceaccount:dra-hami:dra-hami-"
NODE_KEY = "authentication.kubernetes.io/node-name"


def _decide(policy: dict[str, Any], request: dict[str, Any], obj: Any, old: Any) -> list[str]:
    """The messages of the failed validations ([] = allowed; None = the policy does not apply to this user)."""
    env = celpy.Environment()
    activation: dict[str, Any] = {"request": celpy.json_to_cel(request), "object": celpy.json_to_cel(obj),
                                  "oldObject": celpy.json_to_cel(old)}  # fmt: skip
    for cond in policy["spec"].get("matchConditions", []):
        if not bool(env.program(env.compile(cond["expression"])).evaluate(activation)):
            return None  # type: ignore[return-value]
    variables = {}
    for var in policy["spec"].get("variables", []):
        variables[var["name"]] = env.program(env.compile(var["expression"])).evaluate(
            {**activation, "variables": celpy.json_to_cel(variables)}
        )
        variables[var["name"]] = _plain(variables[var["name"]])
    activation["variables"] = celpy.json_to_cel(variables)
    failed = []
    for rule in policy["spec"]["validations"]:
        if not bool(env.program(env.compile(rule["expression"])).evaluate(activation)):
            failed.append(rule.get("message") or rule["messageExpression"])
    return failed


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, str) else value


@pytest.fixture(scope="module")
def policies(helm) -> dict[str, dict[str, Any]]:
    objects = render(helm, {"policy.enabled": "true", "webhook.clientAuth.enabled": "false"})
    out = {}
    for suffix in ("own-node-slices", "controller-pod-writes", "webhook-templates"):
        out[suffix] = find(objects, "ValidatingAdmissionPolicy", f"-{suffix}")
        assert find(objects, "ValidatingAdmissionPolicyBinding", f"-{suffix}")["spec"]["validationActions"] == ["Deny"]
    return out


def _slice(node: str, driver: str = "hami-core-gpu.project-hami.io") -> dict[str, Any]:
    return {"spec": {"nodeName": node, "driver": driver}}


def _user(component: str, node: str | None = None, op: str = "CREATE", sub: str = "") -> dict[str, Any]:
    info: dict[str, Any] = {"username": SA + component}
    if node:
        info["extra"] = {NODE_KEY: [node]}
    return {"userInfo": info, "operation": op, "subResource": sub}


@pytest.mark.parametrize(
    ("request_", "obj", "old", "allowed"),
    [
        (_user("kubelet-plugin", "n1"), _slice("n1"), None, True),
        (_user("kubelet-plugin", "n1"), _slice("n2"), None, False),
        (_user("kubelet-plugin", "n1"), _slice("n1", "gpu.example.com"), None, False),
        (_user("kubelet-plugin"), _slice("n1"), None, False),  # a token not bound to a pod names no node
        (_user("kubelet-plugin", "n1", "UPDATE"), _slice("n2"), _slice("n1"), False),
        (_user("kubelet-plugin", "n1", "UPDATE"), _slice("n1"), _slice("n2"), False),
        (_user("kubelet-plugin", "n1", "DELETE"), None, _slice("n2"), False),
        (_user("kubelet-plugin", "n1", "DELETE"), None, _slice("n1"), True),
    ],
)
def test_a_plugin_token_writes_only_its_own_nodes_slices(policies, request_, obj, old, allowed) -> None:
    assert (_decide(policies["own-node-slices"], request_, obj, old) == []) is allowed


def test_other_users_are_not_matched(policies) -> None:
    other = {"userInfo": {"username": "system:node:n1"}, "operation": "CREATE", "subResource": ""}
    assert _decide(policies["own-node-slices"], other, _slice("n2"), None) is None


def _gated_pod(gates=("hami-core-gpu.project-hami.io/allocation", "example.com/other"), image="busybox", labels=None,
         conditions=None, phase="Pending") -> dict[str, Any]:  # fmt: skip
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": image}]}
    if gates:
        spec["schedulingGates"] = [{"name": g} for g in gates]
    status: dict[str, Any] = {"phase": phase}
    if conditions:
        status["conditions"] = conditions
    return {"metadata": {"name": "p", "labels": labels or {"team": "a"}}, "spec": spec, "status": status}


@pytest.mark.parametrize(
    ("sub", "new", "allowed"),
    [
        ("", _gated_pod(gates=("example.com/other",)), True),  # lifts its own gate
        ("", _gated_pod(gates=()), False),  # also lifts someone else's
        ("", _gated_pod(gates=("example.com/other", "example.com/new")), False),
        ("", _gated_pod(image="evil.example.com/miner"), False),
        ("", _gated_pod(labels={"team": "b"}), False),
        ("status", _gated_pod(conditions=[{"type": "DraHamiAllocated", "status": "True"}]), True),
        ("status", _gated_pod(conditions=[{"type": "Ready", "status": "True"}]), False),
        ("status", _gated_pod(phase="Running"), False),
    ],
)
def test_the_controller_changes_only_its_gate_and_condition(policies, sub, new, allowed) -> None:
    request = _user("controller", op="UPDATE", sub=sub)
    assert (_decide(policies["controller-pod-writes"], request, new, _gated_pod()) == []) is allowed


def _template(owned: bool) -> dict[str, Any]:
    labels = {"dra-hami.project-hami.io/legacy-template": "true"} if owned else {"app": "x"}
    return {"metadata": {"name": "t", "labels": labels}}


@pytest.mark.parametrize(
    ("op", "new", "old", "allowed"),
    [
        ("CREATE", _template(True), None, True),
        ("CREATE", _template(False), None, False),
        ("UPDATE", _template(True), _template(True), True),
        ("UPDATE", _template(True), _template(False), False),  # adopting someone's template
        ("UPDATE", _template(False), _template(True), False),  # dropping the label
        ("DELETE", None, _template(True), True),
        ("DELETE", None, _template(False), False),
    ],
)
def test_the_webhook_writes_only_its_own_templates(policies, op, new, old, allowed) -> None:
    request = _user("webhook", op=op)
    assert (_decide(policies["webhook-templates"], request, new, old) == []) is allowed
