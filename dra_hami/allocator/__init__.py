"""The pure allocator: places a pod's ResourceClaims on one node by policy (no I/O).

Used by the allocation controller (policy mode), ``dra-hami simulate`` and ``dra-hami demo``.

Map: ``model``/``nodes`` parse the API objects; ``state`` keeps the cluster's usage incrementally; ``search``
finds device sets on one node; ``allocate`` walks the nodes and writes the allocation; ``search_cache`` is the
allocator's memo of per-node results (one per state); the policies are objects: ``ordering.NodePolicy`` (which
node first) and ``policy.GpuPolicy`` (which devices, and for scoring policies which node wins), registered by
name in ``policies``.

Adding a GPU policy:

1. Subclass ``policy.GpuPolicy`` (in its own module when it scores) and set ``name``. A greedy policy only
   implements ``device_order_key``: the first set found, on the first node that fits, is the choice.
2. A scoring policy also overrides ``stop_early`` (False, or a bound) and ``node_score``; ``describe`` computes
   per node shape what the score needs (``Outcome.score``/``best``, or anything in ``Outcome.memo``: outcomes
   are shared by every node of one shape and usage, so keep per-pod inputs such as the pod's CPU out of it).
   ``solutions_per_group`` and ``device_groups`` widen the candidates per node; ``set_effect`` says which
   candidate sets are alike (scored once). ``for_pod`` returns a per-pod object if the policy needs pod state,
   or a variant (the topology policy is greedy for a pod taking one device); variants that search
   differently must return different ``cache_key`` values.
3. Register an instance in ``policies.GPU_POLICY`` (the name becomes valid for ``--gpu-policy`` and the
   ``hami.io/gpu-scheduler-policy`` annotation) and in ``dra_hami.simulate.protocol.POLICIES`` to replay it.
4. Test it on a hand-worked cluster (tests/unit/allocator/test_policies.py) and replay the openb trace
   (BENCHMARKS.md) to compare it with the others.

A node policy subclasses ``ordering.NodePolicy`` (``order_key`` of a node's name and mean GPU utilisation) and
is registered in ``policies.NODE_POLICY``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .allocate import ClaimPlacement, Placement, Unplaceable, allocate_pod, new_share_id, utc_now
    from .cel import SelectorCache
    from .errors import AllocatorError, ParseError, PolicyError, SelectorError
    from .fragmentation import DemandModel, TaskKind
    from .model import Claim, Device, DeviceClass, DeviceKey, parse_claim, parse_device_class, parse_slices
    from .nodes import Node, Pod, parse_node, parse_pod
    from .ordering import NodePolicy
    from .policies import (
        ANNOTATION_GPU_POLICY,
        ANNOTATION_NODE_POLICY,
        GPU_POLICIES,
        GPU_POLICY,
        NODE_POLICIES,
        NODE_POLICY,
        PolicyChoice,
        policy_for_pod,
    )
    from .policy import GpuPolicy
    from .state import ClusterState

# Name -> module. Loaded on first use, so that reading one module (e.g. ``model`` for allocation results, in
# the kubelet plugin) does not import the CEL engine and the search.
_EXPORTS = {
    **dict.fromkeys(
        ["ClaimPlacement", "Placement", "Unplaceable", "allocate_pod", "new_share_id", "utc_now"], ".allocate"
    ),
    **dict.fromkeys(["SelectorCache"], ".cel"),
    **dict.fromkeys(["AllocatorError", "ParseError", "PolicyError", "SelectorError"], ".errors"),
    **dict.fromkeys(["DemandModel", "TaskKind"], ".fragmentation"),
    **dict.fromkeys(
        ["Claim", "Device", "DeviceClass", "DeviceKey", "parse_claim", "parse_device_class", "parse_slices"], ".model"
    ),
    **dict.fromkeys(["Node", "Pod", "parse_node", "parse_pod"], ".nodes"),
    **dict.fromkeys(["NodePolicy"], ".ordering"),
    **dict.fromkeys(
        [
            "ANNOTATION_GPU_POLICY",
            "ANNOTATION_NODE_POLICY",
            "GPU_POLICIES",
            "GPU_POLICY",
            "NODE_POLICIES",
            "NODE_POLICY",
            "PolicyChoice",
            "policy_for_pod",
        ],
        ".policies",
    ),
    **dict.fromkeys(["GpuPolicy"], ".policy"),
    **dict.fromkeys(["ClusterState"], ".state"),
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ANNOTATION_GPU_POLICY",
    "ANNOTATION_NODE_POLICY",
    "GPU_POLICIES",
    "GPU_POLICY",
    "NODE_POLICIES",
    "NODE_POLICY",
    "AllocatorError",
    "Claim",
    "ClaimPlacement",
    "ClusterState",
    "DemandModel",
    "Device",
    "DeviceClass",
    "DeviceKey",
    "GpuPolicy",
    "Node",
    "NodePolicy",
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
