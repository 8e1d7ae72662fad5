"""Policy mode: does a new pod get the scheduling gate ``<driver>/allocation``? (pure)

Yes when policy mode is on, neither the pod nor its namespace carries the opt-out label
``dra-hami.project-hami.io/policy-mode=disabled``, the pod has no such gate yet, and at least one of its
``spec.resourceClaims`` resolves (ResourceClaim or ResourceClaimTemplate, looked up by the caller) to a claim
that asks our DeviceClass for a device.

A claim or template that does not exist yet (kubectl can send the template a moment after the pod) is retried
by the caller for a short while; if it is still missing the pod is *not* gated and the response carries a
warning: the stock scheduler then places it first-fit once the object appears. Gating a pod whose claims may
turn out not to be ours would leave it to a controller that does not handle it, so the fail-safe is no gate.
The same holds when the lookup fails (API down): no gate plus a warning, like the webhook's failurePolicy
Ignore does for an unreachable webhook.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dra_hami import wire
from dra_hami.kube import objects as k8s
from dra_hami.webhook import labels as L

NOT_FOUND = "not found"


@dataclass(frozen=True)
class ClaimSource:
    """One ``spec.resourceClaims`` entry, resolved: ``spec`` is the ResourceClaimSpec, or None with ``problem``."""

    pod_claim: str
    kind: str  # ResourceClaim | ResourceClaimTemplate
    name: str
    spec: Mapping[str, Any] | None
    problem: str = ""


@dataclass(frozen=True)
class GateDecision:
    gate: bool
    reason: str
    warnings: tuple[str, ...] = ()


def opted_out(pod: Mapping[str, Any], namespace_labels: Mapping[str, str]) -> str:
    """Who opted out of policy mode ("pod" / "namespace"), or ""."""
    pod_labels = k8s.labels(pod)
    if pod_labels.get(L.POLICY_MODE_LABEL) == L.POLICY_MODE_DISABLED:
        return "pod"
    if namespace_labels.get(L.POLICY_MODE_LABEL) == L.POLICY_MODE_DISABLED:
        return "namespace"
    return ""


def requested_classes(spec: Mapping[str, Any]) -> set[str]:
    """Every deviceClassName a ResourceClaimSpec names (exactly and firstAvailable)."""
    out = set()
    for request in (spec.get("devices") or {}).get("requests") or []:
        exactly = request.get("exactly")
        if exactly:
            out.add(exactly.get("deviceClassName", ""))
        for sub in request.get("firstAvailable") or []:
            out.add(sub.get("deviceClassName", ""))
    return out


def claim_sources(pod: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(pod claim name, kind, object name) of each spec.resourceClaims entry."""
    out = []
    for entry in k8s.pod_claims(pod):
        if entry.get("resourceClaimName"):
            out.append((entry.get("name", ""), "ResourceClaim", entry["resourceClaimName"]))
        elif entry.get("resourceClaimTemplateName"):
            out.append((entry.get("name", ""), "ResourceClaimTemplate", entry["resourceClaimTemplateName"]))
    return out


def has_gate(pod: Mapping[str, Any], driver: str) -> bool:
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return any(g.get("name") == wire.scheduling_gate(driver) for g in gates)


def decide(
    pod: Mapping[str, Any],
    namespace_labels: Mapping[str, str],
    sources: Iterable[ClaimSource],
    classes: frozenset[str],
    driver: str,
) -> GateDecision:
    who = opted_out(pod, namespace_labels)
    if who:
        return GateDecision(False, f"policy mode disabled by the {who} label {L.POLICY_MODE_LABEL}")
    if has_gate(pod, driver):
        return GateDecision(False, "the pod already carries the gate")
    warnings = []
    ours = []
    for source in sources:
        if source.spec is None:
            warnings.append(
                f"spec.resourceClaims[{source.pod_claim}]: {source.kind} {source.name} {source.problem or NOT_FOUND}; "
                f"the pod is not held for the dra-hami allocation controller and is scheduled first-fit "
                f"(create the {source.kind} before the pod to get policy placement)"
            )
            continue
        if requested_classes(source.spec) & classes:
            ours.append(source.pod_claim)
    if ours:
        return GateDecision(
            True, f"claims {', '.join(ours)} use DeviceClass {', '.join(sorted(classes))}", tuple(warnings)
        )
    return GateDecision(False, "no claim uses our DeviceClass", tuple(warnings))


def gated(pod: dict[str, Any], driver: str) -> dict[str, Any]:
    """The pod with the gate appended (in place; the caller passes its own copy)."""
    spec = pod.setdefault("spec", {})
    spec.setdefault("schedulingGates", []).append({"name": wire.scheduling_gate(driver)})
    return pod
