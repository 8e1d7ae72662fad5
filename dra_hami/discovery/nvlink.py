"""NVLink islands: which GPUs reach each other over NVLink, directly or through an NVSwitch (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dra_hami.discovery.model import pci_sort_key

# Every GPU wired to an NVSwitch on one node shares that switch fabric (HGX boards), so all switch links
# are folded into one pseudo peer.
SWITCH = "nvswitch"


def nvlink_groups(bus_ids: Iterable[str], peers: Mapping[str, Iterable[str]]) -> dict[str, int | None]:
    """Group number per GPU bus id; ``None`` for a GPU with no NVLink peer.

    Groups are numbered 0, 1, ... in the order of their lowest bus id, so the numbering is stable across
    restarts. Peers that are not GPUs of this node (and not the switch) are ignored.
    """
    ordered = sorted(bus_ids, key=pci_sort_key)
    parent = {bus_id: bus_id for bus_id in ordered}

    def find(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    linked: set[str] = set()
    for bus_id in ordered:
        for peer in peers.get(bus_id, ()):
            if peer == SWITCH:
                parent.setdefault(SWITCH, SWITCH)
            elif peer not in parent or peer == bus_id:
                continue
            parent[find(peer)] = find(bus_id)
            linked.update((bus_id, peer))

    numbers: dict[str, int] = {}
    groups: dict[str, int | None] = {}
    for bus_id in ordered:
        if bus_id not in linked:
            groups[bus_id] = None
            continue
        root = find(bus_id)
        groups[bus_id] = numbers.setdefault(root, len(numbers))
    return groups
