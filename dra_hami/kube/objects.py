"""Typed views of the Kubernetes objects we read: the raw JSON stays a dict (we patch and forward it as it came),
but the fields we read are declared once here, so the type checker knows their types and a reader sees their shape.

Everything here is pure and import-light (the allocator uses it). The views never validate: where a field is
absent or null they answer what ``(obj.get("metadata") or {}).get(...)`` used to answer. Field names and meaning:
the Kubernetes API reference (ObjectMeta, PodSpec, ResourceClaimStatus of resource.k8s.io/v1).
"""

# No `from __future__ import annotations`: it would bind the name `annotations`, taken by the view below.
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict, cast


class OwnerReference(TypedDict):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: NotRequired[bool]
    blockOwnerDeletion: NotRequired[bool]


class ObjectMeta(TypedDict, total=False):
    name: str
    generateName: str
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    creationTimestamp: str
    deletionTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]
    finalizers: list[str]
    ownerReferences: list[OwnerReference]


# ListMeta of a list response ("continue" is a Python keyword, hence the functional form).
ListMeta = TypedDict("ListMeta", {"resourceVersion": str, "continue": str, "remainingItemCount": int}, total=False)


class PodResourceClaim(TypedDict, total=False):
    """An entry of pod.spec.resourceClaims: a claim by name or one made from a template."""

    name: str
    resourceClaimName: str
    resourceClaimTemplateName: str


class PodResourceClaimStatus(TypedDict, total=False):
    """An entry of pod.status.resourceClaimStatuses: the claim the kubelet's template entry became."""

    name: str
    resourceClaimName: str


class DeviceRequestAllocationResult(TypedDict, total=False):
    """One device of status.allocation.devices.results (allocator/model.py parses it into an AllocatedDevice)."""

    request: str
    driver: str
    pool: str
    device: str
    adminAccess: bool
    shareID: str
    consumedCapacity: dict[str, str]


class DeviceAllocationResult(TypedDict, total=False):
    results: list[DeviceRequestAllocationResult]
    config: list[dict[str, Any]]


class AllocationResult(TypedDict, total=False):
    devices: DeviceAllocationResult
    nodeSelector: dict[str, Any]
    allocationTimestamp: str


def meta(obj: Mapping[str, Any] | None) -> ObjectMeta:
    """``obj.metadata``; empty when the object (or its metadata) is absent or null."""
    value = obj.get("metadata") if obj else None
    return cast(ObjectMeta, value) if isinstance(value, dict) else {}


def list_meta(page: Mapping[str, Any] | None) -> ListMeta:
    """A list response's metadata (its resourceVersion and continue token); empty when absent."""
    value = page.get("metadata") if page else None
    return cast(ListMeta, value) if isinstance(value, dict) else {}


def name(obj: Mapping[str, Any] | None) -> str:
    return meta(obj).get("name") or ""


def namespace(obj: Mapping[str, Any] | None) -> str:
    return meta(obj).get("namespace") or ""


def uid(obj: Mapping[str, Any] | None) -> str:
    return meta(obj).get("uid") or ""


def resource_version(obj: Mapping[str, Any] | None) -> str:
    return meta(obj).get("resourceVersion") or ""


def labels(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return meta(obj).get("labels") or {}


def annotations(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return meta(obj).get("annotations") or {}


def namespaced_name(obj: Mapping[str, Any] | None) -> tuple[str, str]:
    """(namespace, name): the key under which caches keep a namespaced object."""
    found = meta(obj)
    return found.get("namespace") or "", found.get("name") or ""


def allocation(claim: Mapping[str, Any] | None) -> AllocationResult | None:
    """A ResourceClaim's status.allocation, None while it is not allocated."""
    status = claim.get("status") if claim else None
    value = status.get("allocation") if isinstance(status, dict) else None
    return cast(AllocationResult, value) if isinstance(value, dict) and value else None


def pod_claims(pod: Mapping[str, Any] | None) -> list[PodResourceClaim]:
    """pod.spec.resourceClaims (empty when none)."""
    spec = pod.get("spec") if pod else None
    return cast(list[PodResourceClaim], (spec.get("resourceClaims") if isinstance(spec, dict) else None) or [])


def pod_claim_statuses(pod: Mapping[str, Any] | None) -> list[PodResourceClaimStatus]:
    """pod.status.resourceClaimStatuses (empty when none)."""
    status = pod.get("status") if pod else None
    found = status.get("resourceClaimStatuses") if isinstance(status, dict) else None
    return cast(list[PodResourceClaimStatus], found or [])
