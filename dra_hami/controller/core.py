"""The controller's pure core: given the view, what to do for one gated pod, and which allocations are orphans.

No I/O: the runtime (runtime.py) turns these decisions into API writes and feeds the answers back to the view.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dra_hami.allocator import (
    AllocatorError,
    DeviceKey,
    Placement,
    PolicyChoice,
    PolicyError,
    allocate_pod,
    new_share_id,
    parse_claim,
    utc_now,
)
from dra_hami.allocator.policies import policy_for_pod
from dra_hami.kube import objects as k8s

from . import pods as p
from . import quota
from .view import View

MAX_REASON_GROUPS = 4
RETRY_REASONS = ("Unschedulable", quota.REASON)


# ------------------------------------------------------------------------------------------------ decisions


@dataclass(frozen=True, slots=True)
class Wait:
    """Not ready to decide (claims not created yet); the pod's next update brings us back."""

    reason: str


@dataclass(frozen=True, slots=True)
class Ungate:
    """Every claim is allocated (by us earlier, or given): only the gate is left to remove."""

    node_name: str | None


@dataclass(frozen=True, slots=True)
class ClaimWrite:
    key: str  # namespace/name
    resource_version: str  # the version we decided on: the write fails with 409 if the claim changed since
    allocation: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Allocate:
    placement: Placement
    writes: tuple[ClaimWrite, ...]

    @property
    def node_name(self) -> str:
        return self.placement.node_name


@dataclass(frozen=True, slots=True)
class Release:
    """Deallocate these claims of ours (stale or half-done allocations), then decide again."""

    claims: tuple[str, ...]
    why: str


@dataclass(frozen=True, slots=True)
class Fail:
    """Keep the gate; tell the user why (pod condition and event). Retried when capacity changes."""

    reason: str  # CamelCase, for the condition and the event
    message: str

    @property
    def waits_for_capacity(self) -> bool:
        """Nothing is wrong with the pod: it fits once devices or quota free up."""
        return self.reason in RETRY_REASONS


Decision = Wait | Ungate | Allocate | Release | Fail


@dataclass(frozen=True, slots=True)
class Settings:
    driver: str
    default_policy: PolicyChoice = field(default_factory=PolicyChoice)
    share_ids: Callable[[], str] = new_share_id
    clock: Callable[[], datetime] = utc_now

    @property
    def gate(self) -> str:
        return p.gate_name(self.driver)


def decide(view: View, pod: dict[str, Any], settings: Settings) -> Decision | None:
    """What to do for ``pod``; None when it is not ours to handle (no gate, or being deleted)."""
    if not p.has_gate(pod, settings.gate) or p.is_deleting(pod) or p.is_finished(pod):
        return None
    claims, waiting = _claims_of(view, pod)
    if waiting:
        return Wait(waiting)
    if not claims:
        return Ungate(None)  # nothing to allocate: do not hold the pod back

    invalid = [(c, why) for c in claims if (why := invalid_allocation(view, c))]
    if invalid:
        releasable = [_key(c) for c, _ in invalid if _releasable(view, c, pod, settings)]
        detail = "; ".join(f"ResourceClaim {_key(c)}: {why}" for c, why in invalid)
        if len(releasable) == len(invalid):
            return Release(tuple(releasable), f"allocation no longer valid: {detail}")
        return Fail("AllocationInvalid", f"{detail} (allocated by someone else: delete or deallocate it)")

    if all(p.allocation(c) for c in claims):
        return Ungate(p.allocated_node(claims[0]))

    meta = k8s.meta(pod)
    try:
        policy = policy_for_pod(settings.default_policy, meta.get("annotations") or {})
    except PolicyError as err:
        return Fail("InvalidPolicy", f"Pod {p.pod_key(pod)}: {err} (fix the annotation)")
    try:
        parsed = [parse_claim(c) for c in claims]
        outcome = allocate_pod(view.state, pod, parsed, policy, share_ids=settings.share_ids, clock=settings.clock)
    except AllocatorError as err:
        return Fail("InvalidClaim", str(err))

    if isinstance(outcome, Placement):
        if not outcome.claims:
            return Ungate(outcome.node_name)
        by_key = {_key(c): c for c in claims}
        writes = tuple(
            ClaimWrite(
                placed.claim_key,
                k8s.resource_version(by_key[placed.claim_key]),
                placed.allocation,
            )
            for placed in outcome.claims
        )
        namespace = meta.get("namespace") or "default"
        refusal = quota.check_pod(
            view, namespace, [(w.key, w.allocation) for w in writes], settings.driver, settings.gate
        )
        if refusal is not None:
            return Fail(quota.REASON, f"Pod {p.pod_key(pod)} stays gated: {refusal.message}")
        return Allocate(outcome, writes)

    # Half-done (claims of ours allocated earlier, the rest does not fit next to them): start over.
    partial = tuple(_key(c) for c in claims if p.allocation(c) and _releasable(view, c, pod, settings))
    if partial:
        return Release(partial, "the pod's other claims do not fit on the node of its allocated claims")
    total = len(view.state.node_names)
    return Fail("Unschedulable", summarise(p.pod_key(pod), total, outcome.reasons, outcome.message))


def _key(claim: dict[str, Any]) -> str:
    meta = k8s.meta(claim)
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def _claims_of(view: View, pod: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    namespace = k8s.namespace(pod) or "default"
    claims = []
    for ref in p.claim_refs(pod):
        if ref.claim_name is None:
            return [], f"waiting for the ResourceClaim of pod claim {ref.entry!r} to be created from its template"
        claim = view.claims.get(f"{namespace}/{ref.claim_name}")
        if claim is None:
            return [], f"waiting for ResourceClaim {namespace}/{ref.claim_name}"
        if ref.from_template and not p.owned_by(claim, pod):
            return [], f"ResourceClaim {namespace}/{ref.claim_name} does not belong to this pod (yet)"
        if p.is_deleting(claim):
            return [], f"ResourceClaim {namespace}/{ref.claim_name} is being deleted"
        claims.append(claim)
    return claims, ""


def invalid_allocation(view: View, claim: dict[str, Any]) -> str | None:
    """Why an existing allocation can no longer be used: its node or one of its devices is gone."""
    alloc = p.allocation(claim)
    if alloc is None:
        return None
    node = p.allocated_node(claim)
    if node is not None and node not in view.nodes:
        return f"node {node} no longer exists"
    devices = view.state.devices
    for result in (alloc.get("devices") or {}).get("results") or []:
        key = DeviceKey(result.get("driver", ""), result.get("pool", ""), result.get("device", ""))
        if key not in devices:
            return f"device {key} is no longer published"
    return None


def _releasable(view: View, claim: dict[str, Any], pod: dict[str, Any], settings: Settings) -> bool:
    """Ours to deallocate: not the scheduler's, not reserved, and no other pod is past our gate with it."""
    if p.scheduler_owned(claim) or p.reserved_for(claim) or not p.only_driver(claim, settings.driver):
        return False
    key = _key(claim)
    me = p.pod_key(pod)
    for other_key, other in view.pods.items():
        if other_key == me or p.is_finished(other) or p.has_gate(other, settings.gate):
            continue
        if key in p.claim_keys(other):
            return False
    return True


def summarise(pod_key: str, total: int, reasons: Mapping[str, str], fallback: str) -> str:
    """The per-node reasons grouped like the scheduler does: "0/5 nodes: 3 nodes (a, b, c): why; ..."."""
    if not reasons:
        return fallback
    groups: dict[str, list[str]] = {}
    for node, why in reasons.items():
        groups.setdefault(why, []).append(node)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    parts = []
    for why, nodes in ordered[:MAX_REASON_GROUPS]:
        names = sorted(nodes)
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        parts.append(f"{len(names)} node{'s' if len(names) > 1 else ''} ({shown}): {why}")
    rest = sum(len(n) for _, n in ordered[MAX_REASON_GROUPS:])
    if rest:
        parts.append(f"{rest} more nodes with other reasons")
    return f"0/{total} nodes can take pod {pod_key}: " + "; ".join(parts)


# ------------------------------------------------------------------------------------------------ orphans


def claim_users(view: View) -> dict[str, list[str]]:
    """claim key -> keys of the pods that reference it (live or not)."""
    users: dict[str, list[str]] = {}
    for key, pod in view.pods.items():
        for claim_key in p.claim_keys(pod):
            users.setdefault(claim_key, []).append(key)
    return users


def orphaned_allocations(view: View, driver: str) -> list[str]:
    """Allocations of ours that no pod can bind to any more: they must be removed (the scheduler would not).

    Ours = every result is our driver's and the scheduler's delete-protection finalizer is absent. Orphaned =
    no live pod references the claim and nothing that still exists has it reserved.
    """
    users = claim_users(view)
    pod_uids = {k8s.meta(o).get("uid") for o in view.pods.values()}
    orphans = []
    for key, claim in view.claims.items():
        if not p.allocation(claim) or p.scheduler_owned(claim) or not p.only_driver(claim, driver):
            continue
        if any(r.get("uid") in pod_uids for r in p.reserved_for(claim)):
            continue
        live = [u for u in users.get(key, ()) if not p.is_finished(view.pods[u]) and not p.is_deleting(view.pods[u])]
        if not live:
            orphans.append(key)
    return sorted(orphans)
