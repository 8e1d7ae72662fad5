"""Before an uninstall: which ResourceClaims of the driver are still reserved by pods (so prepared on a node).

Uninstalling the kubelet plugin while one is leaves its CDI spec, claim directory and checkpoint entry on the
node, and the pod stuck Terminating once deleted (docs/install.md#uninstalled-with-claims-still-prepared): the
chart's pre-delete hook runs this and refuses (or warns) while the list is not empty."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RESOURCE_CLAIMS = "/apis/resource.k8s.io/v1/resourceclaims"


@dataclass(frozen=True)
class Reserved:
    namespace: str
    name: str
    nodes: tuple[str, ...]  # the pools of its devices: our pools are named after their node
    consumers: tuple[str, ...]  # kind/name of each reserving object (pods)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} on {', '.join(self.nodes)} reserved by {', '.join(self.consumers)}"


def reserved_claims(claims: list[dict[str, Any]], driver: str) -> list[Reserved]:
    """Claims allocated (at least partly) from ``driver`` with a non-empty status.reservedFor, sorted."""
    found = []
    for claim in claims:
        status = claim.get("status") or {}
        results = ((status.get("allocation") or {}).get("devices") or {}).get("results") or []
        ours = [r for r in results if r.get("driver") == driver]
        reserved = status.get("reservedFor") or []
        if not ours or not reserved:
            continue
        meta = claim.get("metadata") or {}
        found.append(
            Reserved(
                namespace=meta.get("namespace", ""),
                name=meta.get("name", ""),
                nodes=tuple(sorted({r.get("pool", "") for r in ours})),
                consumers=tuple(f"{(c.get('resource') or 'pods').rstrip('s')}/{c.get('name', '')}" for c in reserved),
            )
        )
    return sorted(found, key=lambda r: (r.namespace, r.name))


def report(found: list[Reserved], driver: str, refuse: bool) -> str:
    """What the hook prints: the claims, what an uninstall now would leave behind, and what to do."""
    if not found:
        return f"no ResourceClaim of {driver} is reserved: nothing is prepared, the uninstall may go on"
    lines = [f"{len(found)} ResourceClaim(s) of {driver} are still reserved, so prepared on their nodes:"]
    lines += [f"  {r}" for r in found]
    lines.append(
        "Uninstalling now leaves their CDI specs, claim directories and checkpoint entries on those nodes, and the "
        "pods stay Terminating once deleted (docs/install.md, 'Uninstalled with claims still prepared'). "
        "Delete those pods first and wait until they are gone."
    )
    if refuse:
        lines.append(
            "Refusing the uninstall. Run it again once they are gone, or, knowing the above, with --no-hooks "
            "(or uninstallGuard.action=warn)."
        )
    return "\n".join(lines)
