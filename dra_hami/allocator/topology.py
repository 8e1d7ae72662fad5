"""The topology GPU policy: a pod taking several devices gets the best-aligned set (same NUMA node, PCIe root,
NVLink group), packed; a pod taking one device packs like binpack."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from dra_hami.wire import ATTR_PCIE_ROOT

from .model import Device, DeviceKey
from .ordering import SortKey, natural_key
from .policy import GpuPolicy, PodSearch
from .search import Solution
from .search_cache import Outcome

if TYPE_CHECKING:
    from .state import ClusterState

TOPOLOGY = "topology"
# Topology levels, most important first. Unqualified names are looked up in the device's driver domain.
TOPOLOGY_LEVELS = ("numaNode", ATTR_PCIE_ROOT, "nvlinkGroup")
PERFECT_TOPOLOGY = (1, 1, 1)
# The topology policy compares the first this many feasible nodes, in node-policy order: bounded work per pod.
MAX_SCORED_NODES = 32


def topology_value(device: Device, level: str) -> object:
    name = level if "/" in level else f"{device.key.driver}/{level}"
    return device.attributes.get(name)


def topology_groups(devices: Sequence[Device]) -> list[frozenset[DeviceKey]]:
    """Sets of devices sharing a NUMA node, a PCIe root or an NVLink group: the aligned sets to try first."""
    groups: list[frozenset[DeviceKey]] = []
    for level in TOPOLOGY_LEVELS:
        by_value: dict[object, set[DeviceKey]] = {}
        for device in devices:
            value = topology_value(device, level)
            if value is not None:
                by_value.setdefault((type(value).__name__, value), set()).add(device.key)
        for _, keys in sorted(by_value.items(), key=lambda item: str(item[0])):
            groups.append(frozenset(keys))
    return groups


def topology_score(solution: Solution) -> tuple[int, ...]:
    """(same NUMA node, same PCIe root, same NVLink group): 1 when every chosen device shares the value.

    A level no chosen device publishes tells nothing and counts as aligned, so that a fully aligned set can be
    recognised (and the search stop) on nodes that publish only some levels.
    """
    devices = {pick.device.key: pick.device for pick in solution}.values()
    score = []
    for level in TOPOLOGY_LEVELS:
        values = {topology_value(d, level) for d in devices}
        score.append(1 if len(values) == 1 else 0)
    return tuple(score)


def packed_order(device: Device, utilisation: float) -> SortKey:
    """Devices already in use first (binpack's order), then by name."""
    return (-utilisation, natural_key(device.name))


class TopologyPolicy(GpuPolicy):
    name = TOPOLOGY

    def for_pod(self, search: PodSearch) -> GpuPolicy:
        # Topology only matters when a pod takes several devices; otherwise it packs like binpack.
        return self if search.several_devices else _ONE_DEVICE

    def device_order_key(self, device: Device, utilisation: float) -> SortKey:
        return packed_order(device, utilisation)

    def device_groups(self, devices: Sequence[Device]) -> Sequence[frozenset[DeviceKey] | None]:
        return [*topology_groups(devices), None]

    def set_effect(self, state: ClusterState, solution: Solution) -> SortKey:
        return (*super().set_effect(state, solution), topology_score(solution))

    def describe(
        self, state: ClusterState, devices: Sequence[Device], kept: Sequence[Solution], outcome: Outcome
    ) -> None:
        scored = [((*topology_score(sol), outcome.packing[i]), i) for i, sol in enumerate(kept)]
        outcome.score, outcome.best = max(scored, key=lambda item: (item[0], -item[1]))

    def stop_early(self, score: SortKey, feasible: int) -> bool:
        # Nothing can beat a fully aligned set on an earlier node; and the scan is bounded.
        return score[: len(PERFECT_TOPOLOGY)] == PERFECT_TOPOLOGY or feasible >= MAX_SCORED_NODES


class _OneDevice(GpuPolicy):
    """The topology policy for a pod that takes one device: greedy, in binpack's order."""

    name = TOPOLOGY

    @property
    def cache_key(self) -> object:
        return (TOPOLOGY, "one device")

    def device_order_key(self, device: Device, utilisation: float) -> SortKey:
        return packed_order(device, utilisation)


_ONE_DEVICE = _OneDevice()
