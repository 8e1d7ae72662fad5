"""The controller's in-memory view of the cluster: raw API objects by kind, plus the allocator's state.

Pure: fed by the informers (or by tests) through ``apply``/``replace``; no I/O. Claims and pods are accounted in
the ``ClusterState`` incrementally; slices, nodes and classes change rarely, so a change to one of them marks
the state for a rebuild on next use (the CEL cache and the learnt demand survive rebuilds).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dra_hami.allocator import (
    AllocatorError,
    ClusterState,
    DemandModel,
    Device,
    Node,
    SelectorCache,
    parse_claim,
    parse_device_class,
    parse_node,
    parse_pod,
    parse_slices,
)
from dra_hami.kube import objects as k8s
from dra_hami.quota import Accounting

log = logging.getLogger(__name__)

PODS = "pods"
CLAIMS = "resourceclaims"
SLICES = "resourceslices"
NODES = "nodes"
CLASSES = "deviceclasses"
QUOTAS = "gpuquotas"  # GpuQuota objects (dra_hami.quota): optional, the CRD may not be installed
KINDS = (PODS, CLAIMS, SLICES, NODES, CLASSES, QUOTAS)

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


def object_key(obj: dict[str, Any]) -> str:
    meta = k8s.meta(obj)
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


def _rv(obj: dict[str, Any]) -> int | None:
    try:
        return int(k8s.resource_version(obj))
    except ValueError:
        return None


def is_newer(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether ``new`` may replace ``old``: a watch event older than (or the same as) our own write's answer is
    dropped.

    resourceVersions are opaque to clients in principle, but every API server backed by etcd gives integers.
    """
    if old is None:
        return True
    a, b = _rv(old), _rv(new)
    return a is None or b is None or b > a


@dataclass(frozen=True, slots=True)
class Change:
    """What an applied event means for pending pods."""

    kind: str
    key: str
    frees_capacity: bool  # a deallocation, a deleted claim or pod, a new or changed slice/node/class/quota limit


class View:
    def __init__(self, selectors: SelectorCache | None = None, demand: DemandModel | None = None) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self.selectors = selectors or SelectorCache()
        self.demand = demand or DemandModel()
        self.bad: dict[str, str] = {}  # "kind key" -> parse error: such objects are left out of the state
        self._state: ClusterState | None = None
        self._accounting: dict[str, Accounting] = {}  # driver -> quota accounting; rebuilt when slices change
        # Pods we ungated but the scheduler has not bound yet: their cpu/memory already count on the node.
        self.assumed_nodes: dict[str, str] = {}

    # ------------------------------------------------------------------------------------- access

    @property
    def pods(self) -> dict[str, dict[str, Any]]:
        return self.objects[PODS]

    @property
    def claims(self) -> dict[str, dict[str, Any]]:
        return self.objects[CLAIMS]

    @property
    def slices(self) -> dict[str, dict[str, Any]]:
        return self.objects[SLICES]

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        return self.objects[NODES]

    @property
    def classes(self) -> dict[str, dict[str, Any]]:
        return self.objects[CLASSES]

    @property
    def quotas(self) -> dict[str, dict[str, Any]]:
        return self.objects[QUOTAS]

    def accounting(self, driver: str) -> Accounting:
        """How GpuQuota turns claims into usage (largest GPU, GPU count), from the published slices."""
        acct = self._accounting.get(driver)
        if acct is None:
            acct = self._accounting[driver] = Accounting.from_slices(driver, self.slices.values())
        return acct

    def note_bad(self, kind: str, key: str, err: Exception) -> None:
        """Record an object that cannot be used (logged once per distinct error)."""
        self._bad(kind, key, err)

    @property
    def state(self) -> ClusterState:
        if self._state is None:
            self._state = self._build()
        return self._state

    # ------------------------------------------------------------------------------------- updates

    def replace(self, kind: str, items: Iterable[dict[str, Any]]) -> None:
        """A fresh list of one kind (start-up or re-list after 410 Gone)."""
        self.objects[kind] = {object_key(obj): obj for obj in items}
        self.bad = {k: v for k, v in self.bad.items() if not k.startswith(f"{kind} ")}
        if kind == PODS:
            self.assumed_nodes = {k: v for k, v in self.assumed_nodes.items() if k in self.objects[PODS]}
        if kind == QUOTAS:
            return  # not part of the allocator's state
        if kind == SLICES:
            self._accounting = {}
        self._state = None

    def apply(self, kind: str, event_type: str, obj: dict[str, Any]) -> Change | None:
        """One watch event (or the answer to our own write); None when it was stale and dropped."""
        key = object_key(obj)
        store = self.objects[kind]
        old = store.get(key)
        if event_type == DELETED:
            store.pop(key, None)
            self.bad.pop(f"{kind} {key}", None)
            if kind == PODS:
                self.assumed_nodes.pop(key, None)
        else:
            if not is_newer(old, obj):
                return None
            store[key] = obj
        if kind == QUOTAS:
            self.bad.pop(f"{kind} {key}", None)  # judged again when next used
            # status writes (the webhook's usage reconciler) free nothing; a deleted quota or new limits may
            old_spec = (old or {}).get("spec")
            return Change(kind, key, event_type == DELETED or (old is not None and old_spec != obj.get("spec")))
        if kind == SLICES:
            self._accounting = {}
        if kind == NODES and event_type != DELETED and old is not None:
            changed = self._node_changed(key, old, obj)
            if changed is not None:
                return Change(kind, key, changed)
        if kind in (SLICES, NODES, CLASSES):
            self._state = None
            return Change(kind, key, True)
        if self._state is not None:
            if kind == CLAIMS:
                self._account_claim(key, None if event_type == DELETED else obj)
            else:
                self._account_pod(key, None if event_type == DELETED else obj)
        if kind == CLAIMS:
            had = k8s.allocation(old) is not None
            has = event_type != DELETED and k8s.allocation(obj) is not None
            return Change(kind, key, had and not has)
        freed = event_type == DELETED or (bool(old) and _pod_finished(obj) and not _pod_finished(old or {}))
        return Change(kind, key, freed)

    def assume(self, kind: str, obj: dict[str, Any]) -> None:
        """Store ``obj`` whatever its resourceVersion: our own write before its answer came (it carries the
        version it was decided on), or a re-read that must replace such an assumption."""
        key = object_key(obj)
        self.objects[kind][key] = obj
        if self._state is not None:
            if kind == CLAIMS:
                self._account_claim(key, obj)
            elif kind == PODS:
                self._account_pod(key, obj)

    def assume_pod_on(self, pod_key: str, node_name: str) -> None:
        """Count an ungated pod's cpu/memory on its node until the scheduler binds it there."""
        self.assumed_nodes[pod_key] = node_name
        if self._state is not None and pod_key in self.pods:
            self._account_pod(pod_key, self.pods[pod_key])

    def forget_assumed(self, pod_key: str) -> None:
        if self.assumed_nodes.pop(pod_key, None) is not None and self._state is not None and pod_key in self.pods:
            self._account_pod(pod_key, self.pods[pod_key])

    # ------------------------------------------------------------------------------------- internals

    def _node_changed(self, key: str, old: dict[str, Any], new: dict[str, Any]) -> bool | None:
        """Apply a known node's update to the state in place: False when nothing the allocator reads changed
        (a condition or heartbeat), True when it did; None when only a rebuild will do (unparseable, unknown)."""
        state = self._state
        try:
            before, after = parse_node(old), parse_node(new)
        except AllocatorError:
            return None
        if _same_node(before, after):
            return False
        if state is None:
            return True  # built from the objects on next use anyway
        if key not in state.nodes or not _same_node(state.nodes[key], before):
            return None
        state.replace_node(after)
        return True

    def _pod_for_state(self, key: str, obj: dict[str, Any]) -> dict[str, Any]:
        spec = obj.get("spec") or {}
        if spec.get("nodeName"):
            self.assumed_nodes.pop(key, None)
            return obj
        node = self.assumed_nodes.get(key)
        if node is None:
            return obj
        return {**obj, "spec": {**spec, "nodeName": node}}

    def _account_claim(self, key: str, obj: dict[str, Any] | None) -> None:
        state = self._state
        assert state is not None
        if obj is None:
            state.release(key)
            return
        try:
            state.record_claim(parse_claim(obj))
            self.bad.pop(f"{CLAIMS} {key}", None)
        except AllocatorError as err:
            state.release(key)
            self._bad(CLAIMS, key, err)

    def _account_pod(self, key: str, obj: dict[str, Any] | None) -> None:
        state = self._state
        assert state is not None
        if obj is None:
            state.forget_pod(key)
            return
        try:
            state.record_pod(parse_pod(self._pod_for_state(key, obj)))
            self.bad.pop(f"{PODS} {key}", None)
        except AllocatorError as err:
            state.forget_pod(key)
            self._bad(PODS, key, err)

    def _bad(self, kind: str, key: str, err: Exception) -> None:
        if self.bad.get(f"{kind} {key}") != str(err):
            log.warning("left out of the allocator's view: %s", err)
        self.bad[f"{kind} {key}"] = str(err)

    def _build(self) -> ClusterState:
        devices = self._devices()
        classes, nodes = [], []
        for key, obj in self.classes.items():
            try:
                classes.append(parse_device_class(obj))
            except AllocatorError as err:
                self._bad(CLASSES, key, err)
        for key, obj in self.nodes.items():
            try:
                nodes.append(parse_node(obj))
            except AllocatorError as err:
                self._bad(NODES, key, err)
        state = ClusterState(devices, classes, (), nodes, (), selectors=self.selectors, demand=self.demand)
        self._state = state
        for key, obj in self.claims.items():
            self._account_claim(key, obj)
        for key, obj in self.pods.items():
            self._account_pod(key, obj)
        return state

    def _devices(self) -> list[Device]:
        try:
            return parse_slices(self.slices.values())
        except AllocatorError:
            pass
        # One bad slice must not hide every device: parse pool by pool and leave out the pools that fail.
        pools: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for obj in self.slices.values():
            spec = obj.get("spec") or {}
            pool = (spec.get("pool") or {}).get("name") if isinstance(spec.get("pool"), dict) else None
            pools.setdefault((str(spec.get("driver")), str(pool)), []).append(obj)
        devices = []
        for (driver, pool), members in sorted(pools.items()):
            try:
                devices.extend(parse_slices(members))
            except AllocatorError as err:
                self._bad(SLICES, f"{driver}/{pool}", err)
        return devices


def _same_node(a: Node, b: Node) -> bool:
    """What the allocator reads of a node (Node compares by identity)."""
    return (
        a.name == b.name
        and dict(a.labels) == dict(b.labels)
        and a.taints == b.taints
        and (a.allocatable_milli_cpu, a.allocatable_memory, a.allocatable_pods)
        == (b.allocatable_milli_cpu, b.allocatable_memory, b.allocatable_pods)
    )


def _pod_finished(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
