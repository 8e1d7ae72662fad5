"""Would this request take a namespace over its GpuQuota? Pure decisions, shared by webhook and controller.

``check_request`` is the core: used + requested <= hard in every limited dimension of every quota of the
namespace. ``check_allocation`` is what the allocation controller (policy mode) calls before it writes a
claim's ``status.allocation``: it counts the other claims of the namespace and the results it is about to
write. Both return a :class:`QuotaRefusal` (with a message showing used, requested and limit) or None.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dra_hami.kube import objects as k8s
from dra_hami.quota.model import DIMENSIONS, GpuQuota, Usage, describe, parse_gpu_quota
from dra_hami.quota.usage import Accounting, allocation_usage, namespace_usage


@dataclass(frozen=True)
class Excess:
    dimension: str
    used: int
    requested: int
    limit: int

    def __str__(self) -> str:
        total = describe(self.dimension, self.used + self.requested)
        return (
            f"{self.dimension}: used {describe(self.dimension, self.used)} + requested "
            f"{describe(self.dimension, self.requested)} = {total} exceeds the limit "
            f"{describe(self.dimension, self.limit)}"
        )


@dataclass(frozen=True)
class QuotaRefusal:
    quota: GpuQuota
    excesses: tuple[Excess, ...]
    subject: str  # what was refused, e.g. "ResourceClaim team-a/train-0"

    @property
    def message(self) -> str:
        details = "; ".join(str(e) for e in self.excesses)
        return (
            f"{self.subject} would exceed {self.quota.label}: {details}. Ask for less, delete claims (or pods "
            f"whose claims come from templates) in namespace {self.quota.namespace}, or raise spec.hard in "
            f"{self.quota.label}"
        )

    def __str__(self) -> str:
        return self.message


def exceeded(quota: GpuQuota, used: Usage, requested: Usage) -> tuple[Excess, ...]:
    """The limited dimensions this request would push over; a dimension the request does not use never fails
    (a quota that is already over after being lowered must not block claims that do not add to it)."""
    out = []
    for dim in DIMENSIONS:
        limit = quota.hard.get(dim)
        asked = requested.get(dim)
        if limit is not None and asked > 0 and used.get(dim) + asked > limit:
            out.append(Excess(dim, used.get(dim), asked, limit))
    return tuple(out)


def check_request(
    quotas: Iterable[GpuQuota], used: Usage | dict[str, Usage], requested: Usage, subject: str
) -> QuotaRefusal | None:
    """First quota (by name) the request would exceed. ``used`` is one Usage for all quotas or one per quota name."""
    if requested.empty:
        return None
    for quota in sorted(quotas, key=lambda q: q.name):
        base = used.get(quota.name, Usage()) if isinstance(used, dict) else used
        excess = exceeded(quota, base, requested)
        if excess:
            return QuotaRefusal(quota, excess, subject)
    return None


def check_allocation(
    quotas: Iterable[dict[str, Any]],
    namespace_claims: Iterable[dict[str, Any]],
    claim: dict[str, Any],
    results: Iterable[dict[str, Any]],
    accounting: Accounting,
) -> QuotaRefusal | None:
    """For the allocation controller: may ``results`` (DeviceRequestAllocationResult dicts) become ``claim``'s
    allocation without taking its namespace over a GpuQuota?

    ``quotas`` are the GpuQuota objects of the claim's namespace, ``namespace_claims`` the ResourceClaims there
    (the claim itself may be among them; it is left out and counted by its results instead). Build
    ``accounting`` with ``Accounting.from_slices(driver, slices)`` so unallocated claims are estimated as the
    webhook estimates them.
    """
    meta = k8s.meta(claim)
    parsed = [parse_gpu_quota(q) for q in quotas]
    if not parsed:
        return None
    uid = meta.get("uid") or ""
    others = [c for c in namespace_claims if not _same(c, meta)] if not uid else list(namespace_claims)
    used = namespace_usage(others, accounting, exclude_uid=uid)
    requested = allocation_usage(results, accounting)
    return check_request(
        parsed, used, requested, f"allocating ResourceClaim {meta.get('namespace')}/{meta.get('name')}"
    )


def _same(other: dict[str, Any], meta: k8s.ObjectMeta) -> bool:
    o = k8s.meta(other)
    return o.get("name") == meta.get("name") and o.get("namespace") == meta.get("namespace")
