"""The API calls the controller makes, over the raw JSON adapter (dra_hami.kube.client.RawKubeApi)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from dra_hami.kube import objects as k8s
from dra_hami.kube.client import RESOURCE_API, ApiError, RawKubeApi
from dra_hami.quota import GROUP, PLURAL, VERSION

from .leader import NotLeader, lease_path
from .view import CLAIMS, CLASSES, NODES, PODS, QUOTAS, SLICES

COLLECTIONS = {
    PODS: "/api/v1/pods",
    CLAIMS: f"{RESOURCE_API}/resourceclaims",
    SLICES: f"{RESOURCE_API}/resourceslices",
    NODES: "/api/v1/nodes",
    CLASSES: f"{RESOURCE_API}/deviceclasses",
    QUOTAS: f"/apis/{GROUP}/{VERSION}/{PLURAL}",
}
OPTIONAL = frozenset({QUOTAS})  # kinds whose CRD may be missing: an empty list until it is installed
CONDITION_TYPE = "DraHamiAllocated"
COMPONENT = "dra-hami-controller"


def claim_path(key: str) -> str:
    namespace, name = key.split("/", 1)
    return f"{RESOURCE_API}/namespaces/{namespace}/resourceclaims/{name}"


def pod_path(key: str) -> str:
    namespace, name = key.split("/", 1)
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


class ControllerApi(Protocol):
    """What the reconciler writes; RawControllerApi in production, an in-memory store in unit tests."""

    def get_claim(self, key: str) -> dict[str, Any]: ...

    def get_pod(self, key: str) -> dict[str, Any]: ...

    def write_allocation(self, key: str, resource_version: str, allocation: dict[str, Any]) -> dict[str, Any]: ...

    def clear_allocation(self, key: str, resource_version: str) -> dict[str, Any]: ...

    def remove_gate(self, key: str, current: list[dict[str, Any]], gate: str) -> dict[str, Any]: ...

    def set_condition(self, key: str, status: str, reason: str, message: str) -> dict[str, Any]: ...

    def record_event(self, pod: dict[str, Any], reason: str, message: str, warning: bool) -> None: ...


class RawControllerApi:
    """``write_budget`` (seconds our lease still covers a write started now; None: no leader election) bounds
    the writes that decide placements: none is sent without budget, each times out within it, and one that
    completes after we stopped leading raises NotLeader, so the next write (the gate removal after an
    allocation) is left to whoever leads now; what was written is repaired as a half-done pod."""

    def __init__(
        self,
        raw: RawKubeApi,
        identity: str,
        write_budget: Callable[[], float] | None = None,
        lease_timeout: float | None = None,
        on_write: Callable[[str], None] = lambda write: None,
    ) -> None:
        self.on_write = on_write  # told before each write goes out (the writes-per-pod metric)
        self.raw = raw
        self.identity = identity
        self.write_budget = write_budget
        self.lease_timeout = lease_timeout  # below the lease margin: a hung renewal must not outlive it

    def _guarded(self, write: Callable[[float | None], dict[str, Any]]) -> dict[str, Any]:
        if self.write_budget is None:
            return write(None)
        budget = self.write_budget()
        if budget <= 0:
            raise NotLeader("the lease does not cover a write now")
        answer = write(min(budget, self.raw.timeout))
        if self.write_budget() <= 0:
            raise NotLeader("the lease lapsed while a write was in flight")
        return answer

    def get_claim(self, key: str) -> dict[str, Any]:
        return self.raw.get_object(claim_path(key))

    def get_pod(self, key: str) -> dict[str, Any]:
        return self.raw.get_object(pod_path(key))

    def write_allocation(self, key: str, resource_version: str, allocation: dict[str, Any]) -> dict[str, Any]:
        # The resourceVersion in a merge patch is a precondition: 409 Conflict if the claim changed meanwhile.
        patch = {"metadata": {"resourceVersion": resource_version}, "status": {"allocation": allocation}}
        self.on_write("allocation")
        return self._guarded(lambda t: self.raw.patch_object(claim_path(key) + "/status", patch, timeout=t))

    def clear_allocation(self, key: str, resource_version: str) -> dict[str, Any]:
        patch = {
            "metadata": {"resourceVersion": resource_version},
            "status": {"allocation": None, "reservedFor": None, "devices": None},
        }
        self.on_write("deallocation")
        return self._guarded(lambda t: self.raw.patch_object(claim_path(key) + "/status", patch, timeout=t))

    def remove_gate(self, key: str, current: list[dict[str, Any]], gate: str) -> dict[str, Any]:
        remaining = [g for g in current if g.get("name") != gate]
        ops: list[dict[str, Any]] = [{"op": "test", "path": "/spec/schedulingGates", "value": current}]
        if remaining:
            ops.append({"op": "replace", "path": "/spec/schedulingGates", "value": remaining})
        else:
            ops.append({"op": "remove", "path": "/spec/schedulingGates"})
        self.on_write("gate")
        return self._guarded(lambda t: self.raw.patch_object(pod_path(key), ops, kind="json", timeout=t))

    def set_condition(self, key: str, status: str, reason: str, message: str) -> dict[str, Any]:
        condition = {
            "type": CONDITION_TYPE,
            "status": status,
            "reason": reason,
            "message": message[:32000],
            "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        patch = {"status": {"conditions": [condition]}}
        self.on_write("condition")
        return self.raw.patch_object(pod_path(key) + "/status", patch, kind="strategic")

    def record_event(self, pod: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        meta = k8s.meta(pod)
        namespace = meta.get("namespace") or "default"
        now = datetime.now(UTC)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": namespace,
                "name": meta.get("name"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.identity,
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }
        self.on_write("event")
        self.raw.create_object(f"/api/v1/namespaces/{namespace}/events", event)

    # ---------------------------------------------------------------------------------------------- leases

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.raw.get_object(lease_path(namespace, name), timeout=self.lease_timeout)
        except ApiError as err:
            if err.not_found:
                return None
            raise

    def write_lease(self, body: dict[str, Any], create: bool) -> dict[str, Any]:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        if create:
            return self.raw.create_object(lease_path(namespace), body, timeout=self.lease_timeout)
        return self.raw.replace_object(lease_path(namespace, name), body, timeout=self.lease_timeout)
