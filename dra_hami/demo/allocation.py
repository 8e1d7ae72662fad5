"""Allocate the example pods' claims on the demo node with the same allocator the controller uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dra_hami import wire
from dra_hami.allocator import ClusterState, Placement, PolicyChoice, allocate_pod, policy_for_pod
from dra_hami.allocator.capacity import format_amount
from dra_hami.allocator.model import AllocatedDevice, claim_results
from dra_hami.demo.manifests import Manifests, pod_claims

POLICIES = ("first-fit", "binpack", "spread", "topology", "fragmentation")


@dataclass(frozen=True)
class Landing:
    """Where one result of one claim landed."""

    pod: str
    claim: str
    request: str
    node: str
    device: str
    memory: str
    cores: str
    policy: str = ""  # the GPU policy that placed it: the demo's, or the pod's annotation


@dataclass
class DemoAllocation:
    claims: list[dict[str, Any]] = field(default_factory=list)  # every claim, allocated ones with status
    report: list[str] = field(default_factory=list)
    landings: list[Landing] = field(default_factory=list)


def policy_choice(policy: str) -> PolicyChoice:
    """The demo's policy names, as ``dra-hami simulate`` uses them (one node: only the GPU level matters)."""
    if policy not in POLICIES:
        raise ValueError(f"--policy: unknown policy {policy!r}; valid: {', '.join(POLICIES)}")
    if policy in ("first-fit", "spread"):
        return PolicyChoice(node=policy, gpu=policy)
    return PolicyChoice(gpu=policy)


def landing_table(landings: list[Landing]) -> list[str]:
    """The landings as aligned text columns."""
    rows = [("POD", "CLAIM", "REQUEST", "NODE", "DEVICE", "MEMORY", "CORES", "POLICY")]
    rows += [(x.pod, x.claim, x.request, x.node, x.device, x.memory, x.cores, x.policy) for x in landings]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


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
    choice = policy_choice(policy)
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
        effective = policy_for_pod(choice, meta.get("annotations") or {}).gpu
        for placed in decision.claims:
            claim = by_key[placed.claim_key]
            claim["status"] = {"allocation": placed.allocation}
        for claim in claims:
            reserved = claim.setdefault("status", {}).setdefault("reservedFor", [])
            reserved.append({"resource": "pods", "name": meta["name"], "uid": meta["uid"]})
            for result in claim_results(claim):
                consumed = ", ".join(f"{k}={format_amount(k, v)}" for k, v in sorted(result.consumed.items()))
                out.report.append(
                    f"{pod_ref}: claim {claim['metadata']['name']} request {result.request} -> "
                    f"{result.device.pool}/{result.device.device} ({consumed})"
                )
                whole = result.share_id is None  # a dedicated device (or admin access): all of it
                out.landings.append(
                    Landing(
                        pod=f"{meta['namespace']}/{meta['name']}",
                        claim=claim["metadata"]["name"],
                        request=result.request,
                        node=decision.node_name,
                        device=result.device.device,
                        memory="all" if whole else _amount(result, wire.CAPACITY_MEMORY),
                        cores="all" if whole else _amount(result, wire.CAPACITY_CORES),
                        policy=effective,
                    )
                )
    out.claims = list(by_key.values())
    return out


def _amount(result: AllocatedDevice, name: str) -> str:
    return format_amount(name, result.amount(name)) if name in result.consumed else "-"


def _key(claim: dict[str, Any]) -> str:
    return f"{claim['metadata']['namespace']}/{claim['metadata']['name']}"
