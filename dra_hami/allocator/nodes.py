"""Nodes, pods and the scheduler's own per-node checks: node selectors, required affinity, taints, allocatable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .ordering import Signature
from .parsing import fail, mapping, milli_quantity, object_label, quantity, sequence, string

EFFECTS_THAT_REPEL_PODS = ("NoSchedule", "NoExecute")
UNSCHEDULABLE_TAINT_KEY = "node.kubernetes.io/unschedulable"


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str
    operator: str  # "Equal" (default) or "Exists"
    value: str
    effect: str  # "" tolerates every effect

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == taint.value


def first_untolerated(taints: tuple[Taint, ...], tolerations: tuple[Toleration, ...]) -> Taint | None:
    """The first taint that repels (NoSchedule/NoExecute) and that no toleration covers."""
    for taint in taints:
        if taint.effect in EFFECTS_THAT_REPEL_PODS and not any(t.tolerates(taint) for t in tolerations):
            return taint
    return None


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist, Gt, Lt
    values: tuple[str, ...]

    def matches(self, value: str | None) -> bool:
        op = self.operator
        if op == "In":
            return value is not None and value in self.values
        if op == "NotIn":
            return value is None or value not in self.values
        if op == "Exists":
            return value is not None
        if op == "DoesNotExist":
            return value is None
        if op in ("Gt", "Lt") and value is not None and len(self.values) == 1:
            try:
                left, right = int(value), int(self.values[0])
            except ValueError:
                return False
            return left > right if op == "Gt" else left < right
        return False


@dataclass(frozen=True, slots=True)
class SelectorTerm:
    expressions: tuple[Requirement, ...]  # on labels
    fields: tuple[Requirement, ...]  # only metadata.name exists for nodes

    def matches(self, node: Node) -> bool:
        if not self.expressions and not self.fields:
            return False  # an empty term selects nothing, as in Kubernetes
        return all(r.matches(node.labels.get(r.key)) for r in self.expressions) and all(
            r.matches(node.name if r.key == "metadata.name" else None) for r in self.fields
        )


@dataclass(frozen=True, slots=True)
class NodeSelector:
    """core/v1 NodeSelector: the terms are ORed."""

    terms: tuple[SelectorTerm, ...]

    def matches(self, node: Node) -> bool:
        return any(term.matches(node) for term in self.terms)


@dataclass(frozen=True, slots=True, eq=False)
class Node:
    name: str
    labels: Mapping[str, str]
    taints: tuple[Taint, ...]
    allocatable_milli_cpu: int | None  # None: not reported, not checked
    allocatable_memory: int | None
    allocatable_pods: int | None


@dataclass(frozen=True, slots=True, eq=False)
class Pod:
    namespace: str
    name: str
    uid: str
    node_name: str  # "" while unscheduled
    annotations: Mapping[str, str]
    node_selector: Mapping[str, str]
    required_affinity: NodeSelector | None
    tolerations: tuple[Toleration, ...]
    milli_cpu: int
    memory: int
    terminal: bool  # Succeeded/Failed pods hold no node resources

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_taint(raw: Any, label: str, path: str) -> Taint:
    raw = mapping(raw, label, path)
    return Taint(
        key=string(raw.get("key"), label, f"{path}.key"),
        value=string(raw.get("value"), label, f"{path}.value", required=False),
        effect=string(raw.get("effect"), label, f"{path}.effect"),
    )


def parse_toleration(raw: Any, label: str, path: str) -> Toleration:
    raw = mapping(raw, label, path)
    operator = raw.get("operator") or "Equal"
    if operator not in ("Equal", "Exists"):
        raise fail(label, f"{path}.operator", f"{operator!r} is not Equal or Exists")
    return Toleration(
        key=string(raw.get("key"), label, f"{path}.key", required=False),
        operator=operator,
        value=string(raw.get("value"), label, f"{path}.value", required=False),
        effect=string(raw.get("effect"), label, f"{path}.effect", required=False),
    )


def _requirements(raw: Any, label: str, path: str) -> tuple[Requirement, ...]:
    out = []
    for i, item in enumerate(sequence(raw, label, path)):
        item = mapping(item, label, f"{path}[{i}]")
        values = tuple(str(v) for v in sequence(item.get("values"), label, f"{path}[{i}].values"))
        out.append(
            Requirement(
                key=string(item.get("key"), label, f"{path}[{i}].key"),
                operator=string(item.get("operator"), label, f"{path}[{i}].operator"),
                values=values,
            )
        )
    return tuple(out)


def parse_node_selector(raw: Any, label: str, path: str) -> NodeSelector:
    raw = mapping(raw, label, path)
    terms = []
    for i, term in enumerate(sequence(raw.get("nodeSelectorTerms"), label, f"{path}.nodeSelectorTerms")):
        where = f"{path}.nodeSelectorTerms[{i}]"
        term = mapping(term, label, where)
        terms.append(
            SelectorTerm(
                expressions=_requirements(term.get("matchExpressions"), label, f"{where}.matchExpressions"),
                fields=_requirements(term.get("matchFields"), label, f"{where}.matchFields"),
            )
        )
    return NodeSelector(tuple(terms))


def parse_node(obj: dict[str, Any]) -> Node:
    label = object_label("Node", obj)
    meta = mapping(obj.get("metadata"), label, "metadata")
    spec = mapping(obj.get("spec"), label, "spec")
    allocatable = mapping(mapping(obj.get("status"), label, "status").get("allocatable"), label, "status.allocatable")
    taints = [
        parse_taint(t, label, f"spec.taints[{i}]")
        for i, t in enumerate(sequence(spec.get("taints"), label, "spec.taints"))
    ]
    if spec.get("unschedulable") and not any(t.key == UNSCHEDULABLE_TAINT_KEY for t in taints):
        # The scheduler treats a cordoned node as if it carried this taint.
        taints.append(Taint(UNSCHEDULABLE_TAINT_KEY, "", "NoSchedule"))

    def optional(key: str, milli: bool = False) -> int | None:
        if key not in allocatable:
            return None
        parse = milli_quantity if milli else quantity
        return parse(allocatable[key], label, f"status.allocatable[{key}]")

    return Node(
        name=string(meta.get("name"), label, "metadata.name"),
        labels=MappingProxyType(dict(mapping(meta.get("labels"), label, "metadata.labels"))),
        taints=tuple(taints),
        allocatable_milli_cpu=optional("cpu", milli=True),
        allocatable_memory=optional("memory"),
        allocatable_pods=optional("pods"),
    )


def _container_requests(container: dict[str, Any], label: str, path: str) -> tuple[int, int]:
    resources = mapping(container.get("resources"), label, f"{path}.resources")
    # The API server defaults requests to limits; hand-made pods may carry limits only.
    merged = {**mapping(resources.get("limits"), label, f"{path}.resources.limits")}
    merged.update(mapping(resources.get("requests"), label, f"{path}.resources.requests"))
    cpu = milli_quantity(merged["cpu"], label, f"{path}.resources.requests[cpu]") if "cpu" in merged else 0
    memory = quantity(merged["memory"], label, f"{path}.resources.requests[memory]") if "memory" in merged else 0
    return cpu, memory


def _pod_requests(spec: dict[str, Any], label: str) -> tuple[int, int]:
    """Effective cpu/memory request as the scheduler computes it (containers, sidecars, init containers, overhead)."""
    cpu = memory = 0
    for i, c in enumerate(sequence(spec.get("containers"), label, "spec.containers")):
        c_cpu, c_mem = _container_requests(mapping(c, label, f"spec.containers[{i}]"), label, f"spec.containers[{i}]")
        cpu, memory = cpu + c_cpu, memory + c_mem
    sidecar_cpu = sidecar_mem = init_cpu = init_mem = 0
    for i, c in enumerate(sequence(spec.get("initContainers"), label, "spec.initContainers")):
        c = mapping(c, label, f"spec.initContainers[{i}]")
        c_cpu, c_mem = _container_requests(c, label, f"spec.initContainers[{i}]")
        if c.get("restartPolicy") == "Always":  # sidecars run alongside the app containers
            sidecar_cpu, sidecar_mem = sidecar_cpu + c_cpu, sidecar_mem + c_mem
        else:
            init_cpu, init_mem = max(init_cpu, sidecar_cpu + c_cpu), max(init_mem, sidecar_mem + c_mem)
    cpu, memory = max(cpu + sidecar_cpu, init_cpu), max(memory + sidecar_mem, init_mem)
    overhead = mapping(spec.get("overhead"), label, "spec.overhead")
    if "cpu" in overhead:
        cpu += milli_quantity(overhead["cpu"], label, "spec.overhead[cpu]")
    if "memory" in overhead:
        memory += quantity(overhead["memory"], label, "spec.overhead[memory]")
    return cpu, memory


def parse_pod(obj: dict[str, Any]) -> Pod:
    label = object_label("Pod", obj)
    meta = mapping(obj.get("metadata"), label, "metadata")
    spec = mapping(obj.get("spec"), label, "spec")
    affinity = mapping(
        mapping(spec.get("affinity"), label, "spec.affinity").get("nodeAffinity"), label, "spec.affinity.nodeAffinity"
    )
    required_raw = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    required = (
        parse_node_selector(
            required_raw, label, "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        )
        if required_raw is not None
        else None
    )
    tolerations = tuple(
        parse_toleration(t, label, f"spec.tolerations[{i}]")
        for i, t in enumerate(sequence(spec.get("tolerations"), label, "spec.tolerations"))
    )
    cpu, memory = _pod_requests(spec, label)
    phase = mapping(obj.get("status"), label, "status").get("phase")
    return Pod(
        namespace=meta.get("namespace") or "default",
        name=string(meta.get("name"), label, "metadata.name"),
        uid=meta.get("uid") or "",
        node_name=spec.get("nodeName") or "",
        annotations=MappingProxyType(dict(mapping(meta.get("annotations"), label, "metadata.annotations"))),
        node_selector=MappingProxyType(dict(mapping(spec.get("nodeSelector"), label, "spec.nodeSelector"))),
        required_affinity=required,
        tolerations=tolerations,
        milli_cpu=cpu,
        memory=memory,
        terminal=phase in ("Succeeded", "Failed"),
    )


@dataclass(slots=True)
class NodeLoad:
    """What pods already bound to a node request of it."""

    milli_cpu: int = 0
    memory: int = 0
    pods: int = 0


def static_rejection(node: Node, pod: Pod) -> str | None:
    """The checks that depend only on the node and the pod's spec (node selector, required affinity, taints)."""
    for key, wanted in pod.node_selector.items():
        if node.labels.get(key) != wanted:
            return f"node selector {key}={wanted} does not match"
    if pod.required_affinity is not None and not pod.required_affinity.matches(node):
        return "required node affinity does not match"
    taint = first_untolerated(node.taints, pod.tolerations)
    if taint is not None:
        return f"taint {taint} not tolerated"
    return None


def resources_fit(node: Node, load: NodeLoad, pod: Pod) -> bool:
    """``resource_rejection(...) is None`` without building a message (the hot path of a scan over nodes)."""
    return (
        (node.allocatable_pods is None or load.pods + 1 <= node.allocatable_pods)
        and (node.allocatable_milli_cpu is None or load.milli_cpu + pod.milli_cpu <= node.allocatable_milli_cpu)
        and (node.allocatable_memory is None or load.memory + pod.memory <= node.allocatable_memory)
    )


def resource_rejection(node: Node, load: NodeLoad, pod: Pod) -> str | None:
    """Allocatable pods, cpu and memory minus what the pods already bound there request."""
    if node.allocatable_pods is not None and load.pods + 1 > node.allocatable_pods:
        return f"too many pods ({load.pods} of {node.allocatable_pods})"
    if node.allocatable_milli_cpu is not None and load.milli_cpu + pod.milli_cpu > node.allocatable_milli_cpu:
        free = node.allocatable_milli_cpu - load.milli_cpu
        return f"insufficient cpu: needs {pod.milli_cpu}m, {free}m free"
    if node.allocatable_memory is not None and load.memory + pod.memory > node.allocatable_memory:
        free = node.allocatable_memory - load.memory
        return f"insufficient memory: needs {pod.memory}, {free} free"
    return None


def static_signature(pod: Pod) -> Signature:
    """What ``static_rejection`` depends on, as a hashable key."""
    return (tuple(sorted(pod.node_selector.items())), pod.required_affinity, pod.tolerations)
