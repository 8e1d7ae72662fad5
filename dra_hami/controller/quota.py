"""GpuQuota on the allocations the controller writes (policy mode). Pure: reads the view, decides, writes nothing.

What counts against a namespace's quotas is what ``dra_hami.quota`` counts (allocated claims by their results,
pending claims by their worst-case request), with one exception: a pending claim that only pods waiting behind
our gate use is left out. Such a claim holds nothing yet, and it is checked itself when we allocate it;
counting it would let two gated pods that cannot both fit block each other forever. The claims of one pod are
checked in order, each counting the ones before it; pods decided earlier in a pass count through the view,
which holds our writes' answers at once.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from dra_hami.quota import QuotaError, QuotaRefusal, check_allocation, parse_gpu_quota

from . import pods as p
from .view import QUOTAS, View

REASON = "QuotaExceeded"


def namespace_quotas(view: View, namespace: str) -> list[dict[str, Any]]:
    """The namespace's GpuQuota objects that can be read; a broken one is reported and ignored (the API server
    validates them against the CRD schema, so this only happens with a schema older than the code)."""
    out = []
    prefix = f"{namespace}/"
    for key, obj in view.quotas.items():
        if not key.startswith(prefix):
            continue
        try:
            parse_gpu_quota(obj)
        except QuotaError as err:
            view.note_bad(QUOTAS, key, err)
            continue
        out.append(obj)
    return out


def _awaiting_us(view: View, namespace: str, gate: str) -> set[str]:
    """Keys of pending claims whose live users are all pods still behind ``gate`` (at least one)."""
    gated: dict[str, bool] = {}  # claim key -> every live user so far is gated
    prefix = f"{namespace}/"
    for key, pod in view.pods.items():
        if not key.startswith(prefix) or p.is_finished(pod) or p.is_deleting(pod):
            continue
        behind = p.has_gate(pod, gate)
        for claim_key in p.claim_keys(pod):
            gated[claim_key] = gated.get(claim_key, True) and behind
    return {k for k, behind in gated.items() if behind and not p.allocation(view.claims.get(k) or {})}


def check_pod(
    view: View, namespace: str, writes: Sequence[tuple[str, dict[str, Any]]], driver: str, gate: str
) -> QuotaRefusal | None:
    """May these allocations (claim key, allocation) of one pod be written without taking ``namespace`` over
    one of its GpuQuotas? The first refusal, or None."""
    quotas = namespace_quotas(view, namespace)
    if not quotas or not writes:
        return None
    acct = view.accounting(driver)
    writing = {key for key, _ in writes}
    skip = writing | _awaiting_us(view, namespace, gate)
    prefix = f"{namespace}/"
    counted: list[dict[str, Any]] = [c for k, c in view.claims.items() if k.startswith(prefix) and k not in skip]
    for key, allocation in writes:
        claim = view.claims[key]
        results = (allocation.get("devices") or {}).get("results") or []
        refusal = check_allocation(quotas, counted, claim, results, acct)
        if refusal is not None:
            return refusal
        counted.append(_with_allocation(claim, allocation))
    return None


def _with_allocation(claim: dict[str, Any], allocation: dict[str, Any]) -> dict[str, Any]:
    out = copy.copy(claim)
    out["status"] = {**(claim.get("status") or {}), "allocation": allocation}
    return out
