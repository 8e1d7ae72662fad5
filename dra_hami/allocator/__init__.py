"""The pure allocator: places a pod's ResourceClaims on one node by policy (no I/O).

Used by the allocation controller (policy mode), ``dra-hami simulate`` and ``dra-hami demo``.
"""

from __future__ import annotations

from .allocate import ClaimPlacement, Placement, Unplaceable, allocate_pod, new_share_id, utc_now
from .cel import SelectorCache
from .errors import AllocatorError, ParseError, PolicyError, SelectorError
from .fragmentation import DemandModel, TaskKind
from .model import Claim, Device, DeviceClass, DeviceKey, parse_claim, parse_device_class, parse_slices
from .nodes import Node, Pod, parse_node, parse_pod
from .policies import (
    ANNOTATION_GPU_POLICY,
    ANNOTATION_NODE_POLICY,
    GPU_POLICIES,
    NODE_POLICIES,
    PolicyChoice,
    policy_for_pod,
)
from .state import ClusterState

__all__ = [
    "ANNOTATION_GPU_POLICY",
    "ANNOTATION_NODE_POLICY",
    "GPU_POLICIES",
    "NODE_POLICIES",
    "AllocatorError",
    "Claim",
    "ClaimPlacement",
    "ClusterState",
    "DemandModel",
    "Device",
    "DeviceClass",
    "DeviceKey",
    "Node",
    "ParseError",
    "Placement",
    "Pod",
    "PolicyChoice",
    "PolicyError",
    "SelectorCache",
    "SelectorError",
    "TaskKind",
    "Unplaceable",
    "allocate_pod",
    "new_share_id",
    "parse_claim",
    "parse_device_class",
    "parse_node",
    "parse_pod",
    "parse_slices",
    "policy_for_pod",
    "utc_now",
]
