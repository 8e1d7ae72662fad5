"""What a pod says about its scheduling gate and its ResourceClaims (pure helpers over API JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dra_hami.kube import objects as k8s

DELETE_PROTECTION = "resource.kubernetes.io/delete-protection"  # the scheduler's finalizer on its own allocations


def gate_name(driver: str) -> str:
    return f"{driver}/allocation"


def gates(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list((pod.get("spec") or {}).get("schedulingGates") or [])


def has_gate(pod: dict[str, Any], gate: str) -> bool:
    return any(g.get("name") == gate for g in gates(pod))


def is_deleting(obj: dict[str, Any]) -> bool:
    return bool(k8s.meta(obj).get("deletionTimestamp"))


def is_finished(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def pod_key(pod: dict[str, Any]) -> str:
    meta = k8s.meta(pod)
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


@dataclass(frozen=True, slots=True)
class ClaimRef:
    entry: str  # the pod's spec.resourceClaims[].name
    claim_name: str | None  # None: a template claim not created yet
    from_template: bool


def claim_refs(pod: dict[str, Any]) -> list[ClaimRef]:
    """The ResourceClaims a pod uses, in spec order; template claims come from status.resourceClaimStatuses.

    A status entry without a claim name means Kubernetes decided no claim is needed: it is left out.
    """
    statuses = {s.get("name"): s for s in k8s.pod_claim_statuses(pod)}
    refs = []
    for entry in k8s.pod_claims(pod):
        name = entry.get("name") or ""
        if entry.get("resourceClaimName"):
            refs.append(ClaimRef(name, entry["resourceClaimName"], False))
        elif entry.get("resourceClaimTemplateName"):
            status = statuses.get(name)
            if status is None:
                refs.append(ClaimRef(name, None, True))
            elif status.get("resourceClaimName"):
                refs.append(ClaimRef(name, status["resourceClaimName"], True))
    return refs


def claim_keys(pod: dict[str, Any]) -> list[str]:
    namespace = k8s.namespace(pod) or "default"
    return [f"{namespace}/{r.claim_name}" for r in claim_refs(pod) if r.claim_name]


def owned_by(claim: dict[str, Any], pod: dict[str, Any]) -> bool:
    uid = k8s.meta(pod).get("uid")
    return any(o.get("uid") == uid for o in k8s.meta(claim).get("ownerReferences") or [])


def allocation(claim: dict[str, Any]) -> k8s.AllocationResult | None:
    return k8s.allocation(claim)


def reserved_for(claim: dict[str, Any]) -> list[dict[str, Any]]:
    return list((claim.get("status") or {}).get("reservedFor") or [])


def scheduler_owned(claim: dict[str, Any]) -> bool:
    """Allocated by kube-scheduler: it adds its delete-protection finalizer, we never do."""
    return DELETE_PROTECTION in (k8s.meta(claim).get("finalizers") or [])


def allocated_node(claim: dict[str, Any]) -> str | None:
    """The single node of an allocation's ``metadata.name In [node]`` selector, as we and the scheduler write it."""
    selector = (allocation(claim) or {}).get("nodeSelector") or {}
    for term in selector.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("operator") == "In" and len(field["values"]) == 1:
                node: str = field["values"][0]
                return node
    return None


def only_driver(claim: dict[str, Any], driver: str) -> bool:
    results = ((allocation(claim) or {}).get("devices") or {}).get("results") or []
    return bool(results) and all(r.get("driver") == driver for r in results)
