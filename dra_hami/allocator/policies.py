"""The placement policies by name, selectable per cluster and per pod (HAMi's annotations).

Node level (``ordering.NodePolicy``) decides which node is tried first; GPU level (``policy.GpuPolicy``)
decides which devices on it, and for the scoring policies which node wins. Every ordering ends in a
deterministic tie-break: node name, then device name (natural order, so hami-gpu-2 comes before hami-gpu-10).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import PolicyError
from .fragmentation_policy import FRAGMENTATION, FragmentationPolicy
from .model import Device
from .nodes import Pod
from .ordering import (
    BINPACK,
    FIRST_FIT,
    SPREAD,
    BinpackNodes,
    FirstFitNodes,
    NodePolicy,
    SortKey,
    SpreadNodes,
    natural_key,
)
from .policy import GpuPolicy
from .topology import TOPOLOGY, TopologyPolicy, packed_order

ANNOTATION_NODE_POLICY = "hami.io/node-scheduler-policy"
ANNOTATION_GPU_POLICY = "hami.io/gpu-scheduler-policy"


class BinpackGpus(GpuPolicy):
    """Devices already in use first: fills GPUs before opening idle ones."""

    name = BINPACK

    def device_order_key(self, device: Device, utilisation: float) -> SortKey:
        return packed_order(device, utilisation)


class SpreadGpus(GpuPolicy):
    """Least used devices first."""

    name = SPREAD

    def device_order_key(self, device: Device, utilisation: float) -> SortKey:
        return (utilisation, natural_key(device.name))


class FirstFitGpus(GpuPolicy):
    """The stock allocator's listing order."""

    name = FIRST_FIT

    def device_order_key(self, device: Device, utilisation: float) -> SortKey:
        return (device.order,)


NODE_POLICY: Mapping[str, NodePolicy] = {p.name: p for p in (BinpackNodes(), SpreadNodes(), FirstFitNodes())}
GPU_POLICY: Mapping[str, GpuPolicy] = {
    p.name: p for p in (BinpackGpus(), SpreadGpus(), FirstFitGpus(), TopologyPolicy(), FragmentationPolicy())
}
NODE_POLICIES = tuple(NODE_POLICY)  # the built-in names, for command-line choices
GPU_POLICIES = tuple(GPU_POLICY)

__all__ = [
    "BINPACK",
    "FIRST_FIT",
    "FRAGMENTATION",
    "GPU_POLICIES",
    "GPU_POLICY",
    "NODE_POLICIES",
    "NODE_POLICY",
    "SPREAD",
    "TOPOLOGY",
    "PolicyChoice",
    "policy_for",
    "policy_for_pod",
]


def _check(name: str, valid: Sequence[str], what: str) -> str:
    if name not in valid:
        raise PolicyError(f"unknown {what} policy {name!r}; valid: {', '.join(valid)}")
    return name


@dataclass(frozen=True, slots=True)
class PolicyChoice:
    node: str = BINPACK
    gpu: str = BINPACK

    def __post_init__(self) -> None:
        _check(self.node, tuple(NODE_POLICY), "node")
        _check(self.gpu, tuple(GPU_POLICY), "GPU")

    @property
    def node_policy(self) -> NodePolicy:
        return NODE_POLICY[self.node]

    @property
    def gpu_policy(self) -> GpuPolicy:
        return GPU_POLICY[self.gpu]


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
