"""The cluster as the allocator sees it: devices indexed by node, per-device usage kept incrementally.

Usage counts every allocation in the cluster the way the scheduler's GatherAllocatedState does: results with a
shareID add their consumedCapacity to the device, results without one (and without adminAccess) hold the
device exclusively, adminAccess results are not counted.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .capacity import SHARES, base_name
from .cel import SelectorCache
from .errors import SelectorError
from .fragmentation import DemandModel, GpuState, TaskKind
from .model import (
    AllocatedDevice,
    Claim,
    Device,
    DeviceClass,
    DeviceKey,
    parse_claim,
    parse_device_class,
    parse_slices,
)
from .nodes import Node, NodeLoad, Pod, parse_node, parse_pod, static_rejection, static_signature
from .ordering import NodePolicy, Signature, SortKey

if TYPE_CHECKING:
    from .allocate import Placement


@dataclass(slots=True)
class DeviceUsage:
    consumed: dict[str, int] = field(default_factory=dict)  # summed consumedCapacity of shared results
    shares: int = 0  # shared results
    exclusive: int = 0  # results that hold the device exclusively

    @property
    def idle(self) -> bool:
        return not self.exclusive and not self.shares


@dataclass(frozen=True, slots=True)
class NodeSummary:
    """Cheap upper bounds used to skip nodes before searching them."""

    devices: int
    free_devices: int  # devices not held exclusively (and, for dedicated devices, not shared either)
    max_free: Mapping[str, tuple[int, str]]  # per capacity key: the most any one such device has left, and which
    utilisation: float  # mean device utilisation, 0..1 (node-level binpack/spread)


_EMPTY_USAGE = DeviceUsage()
MAX_CHANGE_LOG = 100_000  # node changes remembered for ``changed_since`` (older marks rescan every node)


class ClusterState:
    """Mutable, incrementally maintained state. ``commit`` and ``release`` keep it current without re-parsing."""

    def __init__(
        self,
        devices: Iterable[Device],
        device_classes: Iterable[DeviceClass] = (),
        claims: Iterable[Claim] = (),
        nodes: Iterable[Node] = (),
        pods: Iterable[Pod] = (),
        selectors: SelectorCache | None = None,
        demand: DemandModel | None = None,
    ) -> None:
        self.selectors = selectors or SelectorCache()
        self.demand = demand or DemandModel()
        self.devices: dict[DeviceKey, Device] = {}
        self._node_local: dict[str, list[Device]] = {}
        self._elsewhere: list[Device] = []  # devices of allNodes / nodeSelector slices
        for device in devices:
            self.devices[device.key] = device
            if device.node_name:
                self._node_local.setdefault(device.node_name, []).append(device)
            else:
                self._elsewhere.append(device)
        self.classes: dict[str, DeviceClass] = {c.name: c for c in device_classes}
        self.nodes: dict[str, Node] = {n.name: n for n in nodes}
        self.node_names: list[str] = sorted(self.nodes)
        self._usage: dict[DeviceKey, DeviceUsage] = {}
        self._claims: dict[str, tuple[AllocatedDevice, ...]] = {}
        self._loads: dict[str, NodeLoad] = {}
        self._pods: dict[str, tuple[str, int, int]] = {}
        self._summaries: dict[str, NodeSummary] = {}
        self._devices_for_node: dict[str, list[Device]] = {}
        self._utilisation: dict[DeviceKey, float] = {}
        self._gpu_states: dict[DeviceKey, GpuState] = {}
        # Node policy -> nodes sorted by their order key (each key ends with the node name), kept sorted
        # incrementally: a commit re-positions only the nodes it touched (marked dirty) instead of re-sorting all.
        self._order_keys: dict[str, dict[str, SortKey]] = {}  # node policy -> node -> its key in the sorted list
        self._ordered: dict[str, list[SortKey]] = {}
        self._order_dirty: dict[str, set[str]] = {}
        self._usage_ids: dict[str, int] = {}  # node -> interned usage fingerprint of the devices visible from it
        self._usage_interned: dict[Signature, int] = {}
        self._usage_issued = 0
        self._static_filters: dict[Signature, tuple[list[str], dict[str, str]]] = {}
        # Nodes whose usage or load changed, in order (None: every node), so that a scan over all nodes can be
        # redone for the changed ones only (``changed_since``). Trimmed from the front; ``_log_base`` counts
        # the entries dropped, so marks stay valid positions in the whole history.
        self._change_log: list[str | None] = []
        self._log_base = 0
        for claim in claims:
            self.record_claim(claim)
        for pod in pods:
            self.record_pod(pod)

    @classmethod
    def from_objects(
        cls,
        *,
        slices: Iterable[dict[str, Any]] = (),
        device_classes: Iterable[dict[str, Any]] = (),
        claims: Iterable[dict[str, Any]] = (),
        nodes: Iterable[dict[str, Any]] = (),
        pods: Iterable[dict[str, Any]] = (),
        selectors: SelectorCache | None = None,
        demand: DemandModel | None = None,
    ) -> ClusterState:
        """Build from the API server's JSON objects (resource.k8s.io/v1 and core/v1)."""
        return cls(
            parse_slices(slices),
            [parse_device_class(c) for c in device_classes],
            [parse_claim(c) for c in claims],
            [parse_node(n) for n in nodes],
            [parse_pod(p) for p in pods],
            selectors=selectors,
            demand=demand,
        )

    # ------------------------------------------------------------------------------------- reading

    def devices_on(self, node: Node) -> list[Device]:
        """Devices usable on ``node``: its own, then those of cluster-wide or node-selector slices."""
        cached = self._devices_for_node.get(node.name)
        if cached is None:
            cached = list(self._node_local.get(node.name, ()))
            cached += [
                d
                for d in self._elsewhere
                if d.all_nodes or (d.node_selector is not None and d.node_selector.matches(node))
            ]
            self._devices_for_node[node.name] = cached
        return cached

    def usage(self, key: DeviceKey) -> DeviceUsage:
        return self._usage.get(key, _EMPTY_USAGE)

    def load(self, node_name: str) -> NodeLoad:
        return self._loads.get(node_name) or NodeLoad()

    def allocated_claims(self) -> list[str]:
        return sorted(self._claims)

    def is_allocated(self, claim_key: str) -> bool:
        return claim_key in self._claims

    def utilisation(self, device: Device) -> float:
        """How much of the device is in use, 0..1: the mean over its capacity keys other than shares."""
        cached = self._utilisation.get(device.key)
        if cached is None:
            cached = self._utilisation[device.key] = self._compute_utilisation(device)
        return cached

    def warm_selectors(self) -> int:
        """Evaluate every DeviceClass selector on every device now (~0.5 ms each) instead of on first use.

        Returns how many selector results are cached. Runtime errors are cached too and reported when used.
        """
        count = 0
        for device_class in self.classes.values():
            for i, expression in enumerate(device_class.selectors):
                where = f"DeviceClass {device_class.name}: spec.selectors[{i}].cel.expression"
                for device in self.devices.values():
                    with contextlib.suppress(SelectorError):
                        self.selectors.matches(expression, device, where)
                    count += 1
        return count

    def in_policy_order(self, policy: NodePolicy, names: list[str]) -> list[str]:
        """``names`` sorted by the node-level policy (its order key ends with the node name).

        The full order is kept sorted across calls; only nodes whose usage changed since are re-positioned.
        """
        ordered = self._sorted_nodes(policy)
        if len(names) == len(ordered) and (names is self.node_names or names == self.node_names):
            return [key[-1] for key in ordered]
        wanted = set(names)
        if not wanted <= self.nodes.keys():  # unknown names: sort them in, as if their GPUs were idle
            return sorted(names, key=lambda n: self._order_key(policy, n))
        return [key[-1] for key in ordered if key[-1] in wanted]

    def _order_key(self, policy: NodePolicy, name: str) -> SortKey:
        node = self.nodes.get(name)
        utilisation = self.summary(node).utilisation if node is not None else 0.0
        return policy.order_key(name, utilisation)

    def _sorted_nodes(self, policy: NodePolicy) -> list[SortKey]:
        ordered = self._ordered.get(policy.name)
        keys = self._order_keys.setdefault(policy.name, {})
        if ordered is None:
            for name in self.node_names:
                keys[name] = self._order_key(policy, name)
            ordered = self._ordered[policy.name] = sorted(keys.values())
            self._order_dirty[policy.name] = set()
            return ordered
        dirty = self._order_dirty[policy.name]
        if len(dirty) > len(ordered) // 4:  # many changed (a shared device changed): sorting afresh is cheaper
            for name in dirty:
                keys[name] = self._order_key(policy, name)
            ordered[:] = sorted(keys.values())
        else:
            for name in dirty:
                old = keys[name]
                new = self._order_key(policy, name)
                if new != old:
                    del ordered[bisect_left(ordered, old)]
                    insort(ordered, new)
                    keys[name] = new
        dirty.clear()
        return ordered

    def node_usage_id(self, node: Node) -> int:
        """Equal for two nodes (or one node at two times) exactly when the devices visible from them, in
        ``devices_on`` order, are used alike: same exclusive holds, shares and consumed capacity."""
        cached = self._usage_ids.get(node.name)
        if cached is None:
            usage = self._usage
            fingerprint: list[Signature | None] = []
            for device in self.devices_on(node):
                u = usage.get(device.key)
                if u is None or (not u.exclusive and not u.shares and not u.consumed):
                    fingerprint.append(None)  # idle
                else:
                    fingerprint.append((u.exclusive, u.shares, tuple(sorted(u.consumed.items()))))
            key = tuple(fingerprint)
            cached = self._usage_interned.get(key)
            if cached is None:
                if len(self._usage_interned) > 1_000_000:
                    self._usage_interned.clear()  # ids stay unique: they count on from the total ever issued
                cached = self._usage_interned[key] = self._usage_issued
                self._usage_issued += 1
            self._usage_ids[node.name] = cached
        return cached

    def change_mark(self) -> int:
        """A position in the history of changes, for ``changed_since``."""
        return self._log_base + len(self._change_log)

    def changed_since(self, mark: int) -> set[str] | None:
        """Nodes whose devices' usage or whose pods' load changed since ``mark``; None when every node may
        have (a shared device changed, or the history that far back was trimmed)."""
        start = mark - self._log_base
        if start < 0:
            return None
        changed: set[str] = set()
        for name in self._change_log[start:]:
            if name is None:
                return None
            changed.add(name)
        return changed

    def _log_change(self, node_name: str | None) -> None:
        log = self._change_log
        log.append(node_name)
        if len(log) > MAX_CHANGE_LOG:
            drop = len(log) // 2
            del log[:drop]
            self._log_base += drop

    def order_keys(self, policy: NodePolicy) -> Mapping[str, SortKey]:
        """Node -> its current key in ``policy``'s order (what ``in_policy_order`` sorts by). Read-only."""
        self._sorted_nodes(policy)
        return self._order_keys[policy.name]

    def cpu_free(self, node: Node) -> int | None:
        """Millicores not requested by the pods bound to ``node``; None when the node reports no allocatable CPU."""
        if node.allocatable_milli_cpu is None:
            return None
        load = self._loads.get(node.name)
        return node.allocatable_milli_cpu - (load.milli_cpu if load is not None else 0)

    def static_filter(self, pod: Pod) -> tuple[list[str], dict[str, str]]:
        """Nodes passing the pod-spec-only checks, and why the others fail; cached per pod shape."""
        signature = static_signature(pod)
        cached = self._static_filters.get(signature)
        if cached is None:
            passing, reasons = [], {}
            for name in self.node_names:
                reason = static_rejection(self.nodes[name], pod)
                if reason is None:
                    passing.append(name)
                else:
                    reasons[name] = reason
            if len(self._static_filters) > 4096:
                self._static_filters.clear()
            cached = self._static_filters[signature] = (passing, reasons)
        return cached

    def _compute_utilisation(self, device: Device) -> float:
        usage = self.usage(device.key)
        if usage.exclusive:
            return 1.0
        if not usage.consumed:
            return 0.0
        keys = [k for k in device.capacity if base_name(k) != SHARES] or list(device.capacity)
        if not keys:
            return 1.0 if usage.shares else 0.0
        return sum(min(1.0, usage.consumed.get(k, 0) / (device.capacity[k].value or 1)) for k in keys) / len(keys)

    def summary(self, node: Node) -> NodeSummary:
        cached = self._summaries.get(node.name)
        if cached is None:
            cached = self._summaries[node.name] = self._summarise(self.devices_on(node))
        return cached

    def _summarise(self, devices: list[Device]) -> NodeSummary:
        free_devices, util = 0, 0.0
        max_free: dict[str, tuple[int, str]] = {}
        for device in devices:
            usage = self.usage(device.key)
            util += self.utilisation(device)
            if usage.exclusive or (not device.allow_multiple_allocations and not usage.idle):
                continue
            free_devices += 1
            for key, cap in device.capacity.items():
                left = cap.value - usage.consumed.get(key, 0)
                if left > max_free.get(key, (-1, ""))[0]:
                    max_free[key] = (left, device.name)
        return NodeSummary(len(devices), free_devices, max_free, util / len(devices) if devices else 0.0)

    def gpu_state(self, device: Device, extra: Mapping[str, int] | None = None, exclusive: bool = False) -> GpuState:
        """The device as fragmentation scoring sees it, optionally with a hypothetical allocation added."""
        if extra is None and not exclusive:
            cached = self._gpu_states.get(device.key)
            if cached is None:
                cached = self._gpu_states[device.key] = self._gpu_state(device, None, False)
            return cached
        return self._gpu_state(device, extra, exclusive)

    def _gpu_state(self, device: Device, extra: Mapping[str, int] | None, exclusive: bool) -> GpuState:
        usage = self.usage(device.key)
        memory_key = next((k for k in device.capacity if base_name(k) == "memory"), None)
        cores_key = next((k for k in device.capacity if base_name(k) == "cores"), None)
        shares_key = next((k for k in device.capacity if base_name(k) == SHARES), None)

        def free(key: str | None) -> tuple[int, int]:
            if key is None:
                return 1, 1
            total = device.capacity[key].value
            used = usage.consumed.get(key, 0) + (extra.get(key, 0) if extra else 0)
            return total, max(0, total - used)

        held = bool(usage.exclusive) or exclusive or (not device.allow_multiple_allocations and not usage.idle)
        memory_total, memory_free = free(memory_key)
        cores_total, cores_free = free(cores_key)
        _, shares_free = free(shares_key)
        if held:
            memory_free = cores_free = 0
        return GpuState(memory_total, memory_free, cores_total, cores_free, not held and shares_free > 0)

    # ------------------------------------------------------------------------------------- writing

    def replace_node(self, node: Node) -> None:
        """A known node's labels, taints or allocatable changed; its devices, claims and pods stay counted.

        Node objects change far more often than what is allocated on them (conditions, taints the node lifecycle
        controller sets): rebuilding the whole state for each change re-parsed every claim in the cluster."""
        if node.name not in self.nodes:
            raise KeyError(node.name)
        self.nodes[node.name] = node
        self._static_filters.clear()  # they read every node's labels and taints
        self._devices_for_node.pop(node.name, None)  # node-selector slices match its labels
        self._summaries.pop(node.name, None)
        self._usage_ids.pop(node.name, None)
        for dirty in self._order_dirty.values():
            dirty.add(node.name)

    def record_claim(self, claim: Claim | dict[str, Any]) -> None:
        """Account a claim's allocation, whoever made it (replaces what was recorded for it before)."""
        if isinstance(claim, dict):
            claim = parse_claim(claim)
        self.release(claim.key)
        if claim.allocation is not None:
            self._add(claim.key, claim.allocation.results)

    def release(self, claim_key: str) -> None:
        """Forget a claim's allocation (deallocated or deleted): its devices and capacity become free again."""
        results = self._claims.pop(claim_key, None)
        if not results:
            return
        for result in results:
            usage = self._usage.get(result.device)
            if usage is None:
                continue
            if result.share_id:
                usage.shares -= 1
                for key, amount in result.taken().items():
                    usage.consumed[key] = usage.consumed.get(key, 0) - amount
                    if usage.consumed[key] <= 0:
                        del usage.consumed[key]
            else:
                usage.exclusive -= 1
            self._touch(result.device)

    def record_pod(self, pod: Pod | dict[str, Any]) -> None:
        """Account a pod's cpu/memory on its node (pods not yet bound and finished pods hold nothing)."""
        if isinstance(pod, dict):
            pod = parse_pod(pod)
        self.forget_pod(pod.key)
        if pod.node_name and not pod.terminal:
            self._add_pod(pod.key, pod.node_name, pod.milli_cpu, pod.memory)

    def forget_pod(self, pod_key: str) -> None:
        entry = self._pods.pop(pod_key, None)
        if entry is not None:
            node_name, cpu, memory = entry
            load = self._loads[node_name]
            load.milli_cpu, load.memory, load.pods = load.milli_cpu - cpu, load.memory - memory, load.pods - 1
            self._log_change(node_name)

    def commit(self, placement: Placement) -> None:
        """Apply a placement the caller has written (or, in a simulation, decided): O(devices touched)."""
        for claim in placement.claims:
            self.release(claim.claim_key)
            self._add(claim.claim_key, claim.results)
            for kind in claim.task_kinds:
                self.demand.observe(kind)
        self._add_pod(placement.pod.key, placement.node_name, placement.pod.milli_cpu, placement.pod.memory)

    def _add(self, claim_key: str, results: tuple[AllocatedDevice, ...]) -> None:
        counted = tuple(r for r in results if not r.admin_access)
        self._claims[claim_key] = counted
        for result in counted:
            usage = self._usage.setdefault(result.device, DeviceUsage())
            if result.share_id:
                usage.shares += 1
                for key, amount in result.taken().items():
                    usage.consumed[key] = usage.consumed.get(key, 0) + amount
            else:
                usage.exclusive += 1
            self._touch(result.device)

    def _add_pod(self, pod_key: str, node_name: str, cpu: int, memory: int) -> None:
        self.forget_pod(pod_key)
        self._pods[pod_key] = (node_name, cpu, memory)
        load = self._loads.setdefault(node_name, NodeLoad())
        load.milli_cpu, load.memory, load.pods = load.milli_cpu + cpu, load.memory + memory, load.pods + 1
        self._log_change(node_name)

    def _touch(self, key: DeviceKey) -> None:
        self._utilisation.pop(key, None)
        self._gpu_states.pop(key, None)
        device = self.devices.get(key)
        if device is None:
            return
        if device.node_name:
            self._summaries.pop(device.node_name, None)
            self._usage_ids.pop(device.node_name, None)
            for dirty in self._order_dirty.values():
                dirty.add(device.node_name)
            self._log_change(device.node_name)
        else:
            self._log_change(None)
            self._summaries.clear()  # a shared device may be visible from any node
            self._usage_ids.clear()
            for dirty in self._order_dirty.values():
                dirty.update(self.node_names)


def task_kinds(results: Iterable[tuple[str, Device, Mapping[str, int] | None]], cpu_milli: int = 0) -> list[TaskKind]:
    """One task kind per request: GPUs it took, and the largest memory share / cores it took of one of them.

    The pod's CPU (``cpu_milli``) is counted with its first request only, so that a pod is counted once.
    """
    by_request: dict[str, list[tuple[Device, Mapping[str, int] | None]]] = {}
    for request, device, amounts in results:
        by_request.setdefault(request, []).append((device, amounts))
    kinds: list[TaskKind] = []
    for taken in by_request.values():
        share, cores = 0.0, 0
        for device, amounts in taken:
            if amounts is None:  # dedicated device: the whole GPU
                share, cores = 1.0, 100
                continue
            for key, cap in device.capacity.items():
                if base_name(key) == "memory" and cap.value:
                    share = max(share, amounts.get(key, 0) / cap.value)
                elif base_name(key) == "cores":
                    cores = max(cores, amounts.get(key, 0))
        kinds.append(TaskKind.bucketed(len(taken), share or 1.0, cores, 0 if kinds else cpu_milli))
    return kinds
