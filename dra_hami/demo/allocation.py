"""Allocate the example pods' claims on the demo node with the same allocator the controller uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dra_hami.allocator import ClusterState, Placement, PolicyChoice, allocate_pod
from dra_hami.demo.manifests import Manifests, pod_claims


@dataclass
class DemoAllocation:
    claims: list[dict[str, Any]] = field(default_factory=list)  # every claim, allocated ones with status
    report: list[str] = field(default_factory=list)


def demo_node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": f"node-{name}", "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"}},
    }


def allocate_examples(
    manifests: Manifests, slices: list[dict[str, Any]], classes: list[dict[str, Any]], node: str, policy: str
) -> DemoAllocation:
    """Place each pod in file order; a pod that does not fit stays pending, with the reason."""
    state = ClusterState.from_objects(slices=slices, device_classes=classes, nodes=[demo_node(node)])
    choice = PolicyChoice(node="first-fit", gpu=policy) if policy == "first-fit" else PolicyChoice(gpu=policy)
    out = DemoAllocation()
    by_key: dict[str, dict[str, Any]] = {}
    for pod in manifests.pods:
        meta = pod["metadata"]
        pod_ref = f"pod {meta['namespace']}/{meta['name']}"
        claims = [by_key.get(_key(c), c) for c in pod_claims(pod, manifests)]
        for claim in claims:
            by_key.setdefault(_key(claim), claim)
        decision = allocate_pod(state, pod, claims, choice)
        if not isinstance(decision, Placement):
            out.report.append(f"{pod_ref}: stays Pending: {decision.message}")
            continue
        state.commit(decision)
        for placed in decision.claims:
            claim = by_key[placed.claim_key]
            claim["status"] = {"allocation": placed.allocation}
        for claim in claims:
            reserved = claim.setdefault("status", {}).setdefault("reservedFor", [])
            reserved.append({"resource": "pods", "name": meta["name"], "uid": meta["uid"]})
            for result in claim["status"]["allocation"]["devices"]["results"]:
                consumed = ", ".join(f"{k}={v}" for k, v in sorted(result.get("consumedCapacity", {}).items()))
                out.report.append(
                    f"{pod_ref}: claim {claim['metadata']['name']} request {result['request']} -> "
                    f"{result['pool']}/{result['device']} ({consumed})"
                )
    out.claims = list(by_key.values())
    return out


def _key(claim: dict[str, Any]) -> str:
    return f"{claim['metadata']['namespace']}/{claim['metadata']['name']}"
