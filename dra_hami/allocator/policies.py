"""Placement policies: pure scoring functions over the cluster state, selectable per cluster and per pod.

Node level decides which node; GPU level decides which devices on it. Every ordering ends in a deterministic
tie-break: node name, then device name (natural order, so hami-gpu-2 comes before hami-gpu-10).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dra_hami.wire import ATTR_PCIE_ROOT

from .errors import PolicyError
from .fragmentation import FragmentationScorer, GpuProfile
from .model import Device
from .nodes import Pod
from .ordering import BINPACK, FIRST_FIT, SPREAD, natural_key
from .search import Solution
from .state import ClusterState

ANNOTATION_NODE_POLICY = "hami.io/node-scheduler-policy"
ANNOTATION_GPU_POLICY = "hami.io/gpu-scheduler-policy"

TOPOLOGY = "topology"
FRAGMENTATION = "fragmentation"

NODE_POLICIES = (BINPACK, SPREAD, FIRST_FIT)
GPU_POLICIES = (BINPACK, SPREAD, FIRST_FIT, TOPOLOGY, FRAGMENTATION)

# Topology levels, most important first. Unqualified names are looked up in the device's driver domain.
TOPOLOGY_LEVELS = ("numaNode", ATTR_PCIE_ROOT, "nvlinkGroup")


def _check(name: str, valid: Sequence[str], what: str) -> str:
    if name not in valid:
        raise PolicyError(f"unknown {what} policy {name!r}; valid: {', '.join(valid)}")
    return name


@dataclass(frozen=True, slots=True)
class PolicyChoice:
    node: str = BINPACK
    gpu: str = BINPACK

    def __post_init__(self) -> None:
        _check(self.node, NODE_POLICIES, "node")
        _check(self.gpu, GPU_POLICIES, "GPU")

    @property
    def scores_device_sets(self) -> bool:
        """Whether candidate device sets are compared by a score, rather than the first fit in policy order."""
        return self.gpu in (TOPOLOGY, FRAGMENTATION)


def policy_for_pod(default: PolicyChoice, annotations: Mapping[str, str]) -> PolicyChoice:
    """The cluster default, overridden by the HAMi annotations a pod carries."""
    node = annotations.get(ANNOTATION_NODE_POLICY, default.node).strip()
    gpu = annotations.get(ANNOTATION_GPU_POLICY, default.gpu).strip()
    try:
        return PolicyChoice(node, gpu)
    except PolicyError as err:
        raise PolicyError(f"Pod annotation: {err}") from None


def policy_for(default: PolicyChoice, pod: Pod) -> PolicyChoice:
    return policy_for_pod(default, pod.annotations)


# -------------------------------------------------------------------------------------------- GPU level


def device_order_key(policy: str, device: Device, utilisation: float) -> tuple:
    """Order in which devices are tried. first-fit keeps the stock allocator's listing order."""
    if policy == FIRST_FIT:
        return (device.order,)
    if policy == SPREAD:
        return (utilisation, natural_key(device.name))
    # binpack, and the set-scoring policies, which start from a packed order.
    return (-utilisation, natural_key(device.name))


def topology_value(device: Device, level: str) -> object:
    name = level if "/" in level else f"{device.key.driver}/{level}"
    return device.attributes.get(name)


def topology_groups(devices: Sequence[Device]) -> list[frozenset]:
    """Sets of devices sharing a NUMA node, a PCIe root or an NVLink group: the aligned sets to try first."""
    groups: list[frozenset] = []
    for level in TOPOLOGY_LEVELS:
        by_value: dict[object, set] = {}
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


PERFECT_TOPOLOGY = (1, 1, 1)


def fragmentation_increase(
    state: ClusterState,
    scorer: FragmentationScorer,
    devices: Sequence[Device],
    solution: Solution,
    before: Sequence[GpuProfile] | None = None,
) -> float:
    """How much the node's expected fragmentation grows if ``solution`` is committed (FGD's gradient).

    ``before`` (the node's current profiles, in ``devices`` order) may be passed when scoring many solutions.
    """
    added: dict = {}
    dedicated: set = set()
    for pick in solution:
        if pick.amounts is None:
            dedicated.add(pick.device.key)
        else:
            acc = added.setdefault(pick.device.key, {})
            for key, value in pick.amounts.items():
                acc[key] = acc.get(key, 0) + value
    if before is None:
        before = [scorer.profile(state.gpu_state(device)) for device in devices]
    after = list(before)
    for i, device in enumerate(devices):
        if device.key in added or device.key in dedicated:
            after[i] = scorer.profile(state.gpu_state(device, added.get(device.key), device.key in dedicated))
    return scorer.fragmentation_of(after) - scorer.fragmentation_of(before)


def packing_score(state: ClusterState, solution: Solution) -> float:
    """Tie-break among equally scored sets: prefer devices already in use (keeps whole GPUs free)."""
    return sum(state.utilisation(pick.device) for pick in solution)
