"""Parsed, immutable views of the resource.k8s.io/v1 objects the allocator reads.

Input is always the plain JSON dicts the API server returns. Attribute names are stored fully qualified
(``<driver>/<id>`` for a device's unqualified names); capacity keys are kept as published, because the
scheduler matches request keys to device keys literally.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from dra_hami.kube import objects as k8s

from .nodes import (
    NodeSelector,
    Taint,
    Toleration,
    parse_node_selector,
    parse_taint,
    parse_toleration,
)
from .ordering import Signature
from .parsing import boolean, fail, integer, mapping, object_label, quantity, sequence, string
from .semver import Version

AttributeValue = bool | int | str | Version

ALLOCATION_MODE_EXACT = "ExactCount"
ALLOCATION_MODE_ALL = "All"


class DeviceKey(NamedTuple):
    driver: str
    pool: str
    device: str

    def __str__(self) -> str:
        return f"{self.driver}/{self.pool}/{self.device}"


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    default: int | None
    valid_values: tuple[int, ...] | None  # ascending, as validation requires
    range_min: int | None
    range_max: int | None
    range_step: int | None


@dataclass(frozen=True, slots=True)
class Capacity:
    value: int
    policy: RequestPolicy | None


@dataclass(frozen=True, slots=True, eq=False)
class Device:
    key: DeviceKey
    generation: int  # the pool generation it was published in: attributes are static within one
    node_name: str | None  # node-local device
    node_selector: NodeSelector | None  # device usable on the nodes this selects
    all_nodes: bool
    attributes: Mapping[str, AttributeValue]  # fully qualified names
    capacity: Mapping[str, Capacity]  # keys as published
    allow_multiple_allocations: bool
    taints: tuple[Taint, ...]
    order: int  # position in the listing: the stock allocator's first-fit order

    @property
    def name(self) -> str:
        return self.key.device


@dataclass(frozen=True, slots=True)
class DeviceClass:
    name: str
    selectors: tuple[str, ...]  # CEL expressions
    config: tuple[Mapping[str, Any], ...]  # each a DeviceConfiguration ({"opaque": {...}})


@dataclass(frozen=True, slots=True)
class ExactRequest:
    """One way to satisfy a request: ``exactly`` or one ``firstAvailable`` subrequest."""

    name: str  # "req" or "req/sub", as results name it
    class_name: str
    selectors: tuple[str, ...]
    allocation_mode: str
    count: int
    admin_access: bool
    capacity_requests: Mapping[str, int]
    tolerations: tuple[Toleration, ...]
    raw_tolerations: tuple[Mapping[str, Any], ...]  # copied into results verbatim
    path: str  # e.g. spec.devices.requests[0].exactly, for error messages

    @property
    def signature(self) -> Signature:
        """Everything that decides which devices can serve it, as a hashable key."""
        return (
            self.class_name,
            self.selectors,
            self.allocation_mode,
            self.count,
            self.admin_access,
            tuple(sorted(self.capacity_requests.items())),
            self.tolerations,
        )


@dataclass(frozen=True, slots=True)
class Request:
    name: str
    alternatives: tuple[ExactRequest, ...]  # one for exactly; the subrequests, in order, for firstAvailable


@dataclass(frozen=True, slots=True)
class Constraint:
    requests: tuple[str, ...]  # empty: every request of the claim
    match_attribute: str | None
    distinct_attribute: str | None

    def applies_to(self, request_name: str) -> bool:
        if not self.requests:
            return True
        parent = request_name.split("/", 1)[0]
        return request_name in self.requests or parent in self.requests


@dataclass(frozen=True, slots=True)
class ClaimConfig:
    requests: tuple[str, ...]
    configuration: Mapping[str, Any]  # the DeviceConfiguration part ({"opaque": {...}})


@dataclass(frozen=True, slots=True)
class AllocatedDevice:
    """One result of an allocation (``status.allocation.devices.results[i]``), read one way everywhere.

    What it takes of its device, the rule every reader counts by (as the scheduler's GatherAllocatedState
    does): a result with adminAccess takes nothing; one with a shareID takes its consumedCapacity; one without
    a shareID holds the whole device, whatever consumedCapacity says.
    """

    request: str
    device: DeviceKey
    share_id: str | None
    consumed: Mapping[str, int]  # consumedCapacity as written (keys as published), rounded up like Value()
    admin_access: bool

    @property
    def whole_device(self) -> bool:
        return self.share_id is None and not self.admin_access

    def taken(self, capacity: Mapping[str, int] | None = None) -> dict[str, int]:
        """What the result takes of its device, per capacity key. ``capacity``: the device's published
        capacity, which a whole-device result takes (unknown device: nothing known, so {}). A negative
        consumed amount counts as 0: it would make free capacity grow (the real scheduler overcommitted once)."""
        if self.admin_access:
            return {}
        if self.share_id is None:
            return dict(capacity or {})
        return {key: max(0, value) for key, value in self.consumed.items()}

    def amount(self, name: str, capacity: Mapping[str, int] | None = None) -> int:
        """``taken`` of one capacity name, qualified keys (``<domain>/memory``) included."""
        return sum(value for key, value in self.taken(capacity).items() if key.rsplit("/", 1)[-1] == name)


@dataclass(frozen=True, slots=True)
class ExistingAllocation:
    results: tuple[AllocatedDevice, ...]
    node_selector: NodeSelector | None


@dataclass(frozen=True, slots=True, eq=False)
class Claim:
    namespace: str
    name: str
    uid: str
    requests: tuple[Request, ...]
    constraints: tuple[Constraint, ...]
    config: tuple[ClaimConfig, ...]
    allocation: ExistingAllocation | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def label(self) -> str:
        return f"ResourceClaim {self.key}"


def qualify(name: str, driver: str) -> str:
    """Attribute names without a domain live in the device's driver domain."""
    return name if "/" in name else f"{driver}/{name}"


def split_qualified(name: str, driver: str) -> tuple[str, str]:
    return tuple(name.split("/", 1)) if "/" in name else (driver, name)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------- slices


def _attribute(raw: Any, label: str, path: str) -> AttributeValue | None:
    raw = mapping(raw, label, path)
    if "bool" in raw:
        return boolean(raw["bool"], label, f"{path}.bool")
    if "int" in raw:
        return integer(raw["int"], label, f"{path}.int")
    if "string" in raw:
        return string(raw["string"], label, f"{path}.string", required=False)
    if "version" in raw:
        try:
            return Version.parse(string(raw["version"], label, f"{path}.version"))
        except ValueError as err:
            raise fail(label, f"{path}.version", str(err)) from None
    return None  # list forms (alpha) and future types are not used by the allocator


def _request_policy(raw: Any, label: str, path: str) -> RequestPolicy | None:
    if raw is None:
        return None
    raw = mapping(raw, label, path)
    default = quantity(raw["default"], label, f"{path}.default") if raw.get("default") is not None else None
    values = None
    if raw.get("validValues") is not None:
        values = tuple(
            quantity(v, label, f"{path}.validValues[{i}]")
            for i, v in enumerate(sequence(raw["validValues"], label, f"{path}.validValues"))
        )
    rng = mapping(raw.get("validRange"), label, f"{path}.validRange") if raw.get("validRange") is not None else None

    def bound(key: str) -> int | None:
        if rng is None or rng.get(key) is None:
            return None
        return quantity(rng[key], label, f"{path}.validRange.{key}")

    step = bound("step")
    if step is not None and step <= 0:
        raise fail(label, f"{path}.validRange.step", f"{step} must be positive")
    return RequestPolicy(default, values, bound("min"), bound("max"), step)


def _device(
    raw: Any,
    pool: tuple[str, str, int],
    slice_scope: tuple[str | None, NodeSelector | None, bool],
    label: str,
    path: str,
    order: int,
) -> Device:
    driver, pool_name, generation = pool
    raw = mapping(raw, label, path)
    name = string(raw.get("name"), label, f"{path}.name")
    attributes: dict[str, AttributeValue] = {}
    for key, value in mapping(raw.get("attributes"), label, f"{path}.attributes").items():
        parsed = _attribute(value, label, f"{path}.attributes[{key}]")
        if parsed is not None:
            attributes[qualify(key, driver)] = parsed
    capacity: dict[str, Capacity] = {}
    for key, value in mapping(raw.get("capacity"), label, f"{path}.capacity").items():
        where = f"{path}.capacity[{key}]"
        value = mapping(value, label, where)
        capacity[key] = Capacity(
            value=quantity(value.get("value"), label, f"{where}.value"),
            policy=_request_policy(value.get("requestPolicy"), label, f"{where}.requestPolicy"),
        )
    node_name, node_selector, all_nodes = slice_scope
    if raw.get("nodeName") or raw.get("nodeSelector") or raw.get("allNodes"):  # perDeviceNodeSelection
        node_name = raw.get("nodeName") or None
        node_selector = (
            parse_node_selector(raw["nodeSelector"], label, f"{path}.nodeSelector") if raw.get("nodeSelector") else None
        )
        all_nodes = bool(raw.get("allNodes"))
    taints = tuple(
        parse_taint(t, label, f"{path}.taints[{i}]")
        for i, t in enumerate(sequence(raw.get("taints"), label, f"{path}.taints"))
    )
    return Device(
        key=DeviceKey(driver, pool_name, name),
        generation=generation,
        node_name=node_name,
        node_selector=node_selector,
        all_nodes=all_nodes,
        attributes=MappingProxyType(attributes),
        capacity=MappingProxyType(capacity),
        allow_multiple_allocations=boolean(
            raw.get("allowMultipleAllocations"), label, f"{path}.allowMultipleAllocations"
        ),
        taints=taints,
        order=order,
    )


def parse_slices(slices: Iterable[dict[str, Any]]) -> list[Device]:
    """Devices of all complete pools, at each pool's highest generation, in the stock allocator's order.

    A pool whose newest generation has fewer slices than ``resourceSliceCount`` is being republished and is
    skipped, like the scheduler does.
    """
    pools: dict[tuple[str, str], list[tuple[dict[str, Any], str, int, int]]] = {}
    for obj in slices:
        label = object_label("ResourceSlice", obj)
        spec = mapping(obj.get("spec"), label, "spec")
        driver = string(spec.get("driver"), label, "spec.driver")
        pool = mapping(spec.get("pool"), label, "spec.pool")
        pool_name = string(pool.get("name"), label, "spec.pool.name")
        generation = integer(pool.get("generation"), label, "spec.pool.generation", default=0)
        count = integer(pool.get("resourceSliceCount"), label, "spec.pool.resourceSliceCount", default=1)
        pools.setdefault((driver, pool_name), []).append((obj, label, generation, count))

    devices: list[Device] = []
    for (driver, pool_name), members in sorted(pools.items()):
        newest = max(generation for _, _, generation, _ in members)
        current = [(obj, label, count) for obj, label, generation, count in members if generation == newest]
        if len(current) < max(count for _, _, count in current):
            continue  # incomplete pool
        current.sort(key=lambda item: k8s.name(item[0]))
        for obj, label, _ in current:
            spec = obj["spec"]
            scope = (
                spec.get("nodeName") or None,
                parse_node_selector(spec["nodeSelector"], label, "spec.nodeSelector")
                if spec.get("nodeSelector")
                else None,
                bool(spec.get("allNodes")),
            )
            for i, raw in enumerate(sequence(spec.get("devices"), label, "spec.devices")):
                devices.append(
                    _device(raw, (driver, pool_name, newest), scope, label, f"spec.devices[{i}]", len(devices))
                )
    return devices


# ------------------------------------------------------------------------------------------- classes


def _selectors(raw: Any, label: str, path: str) -> tuple[str, ...]:
    out = []
    for i, sel in enumerate(sequence(raw, label, path)):
        sel = mapping(sel, label, f"{path}[{i}]")
        cel = mapping(sel.get("cel"), label, f"{path}[{i}].cel")
        out.append(string(cel.get("expression"), label, f"{path}[{i}].cel.expression"))
    return tuple(out)


def parse_device_class(obj: dict[str, Any]) -> DeviceClass:
    label = object_label("DeviceClass", obj)
    spec = mapping(obj.get("spec"), label, "spec")
    config = []
    for i, item in enumerate(sequence(spec.get("config"), label, "spec.config")):
        item = mapping(item, label, f"spec.config[{i}]")
        config.append(MappingProxyType({k: copy.deepcopy(v) for k, v in item.items()}))
    return DeviceClass(
        name=string(mapping(obj.get("metadata"), label, "metadata").get("name"), label, "metadata.name"),
        selectors=_selectors(spec.get("selectors"), label, "spec.selectors"),
        config=tuple(config),
    )


# -------------------------------------------------------------------------------------------- claims


def _exact(raw: Any, name: str, label: str, path: str, *, allow_admin: bool) -> ExactRequest:
    raw = mapping(raw, label, path)
    mode = raw.get("allocationMode") or ALLOCATION_MODE_EXACT
    if mode not in (ALLOCATION_MODE_EXACT, ALLOCATION_MODE_ALL):
        raise fail(label, f"{path}.allocationMode", f"{mode!r} is not ExactCount or All")
    count = integer(raw.get("count"), label, f"{path}.count", default=1 if mode == ALLOCATION_MODE_EXACT else 0)
    if mode == ALLOCATION_MODE_EXACT and count < 1:
        raise fail(label, f"{path}.count", f"{count} must be at least 1")
    capacity = mapping(raw.get("capacity"), label, f"{path}.capacity")
    requests = {
        key: quantity(value, label, f"{path}.capacity.requests[{key}]")
        for key, value in mapping(capacity.get("requests"), label, f"{path}.capacity.requests").items()
    }
    raw_tolerations = sequence(raw.get("tolerations"), label, f"{path}.tolerations")
    return ExactRequest(
        name=name,
        class_name=string(raw.get("deviceClassName"), label, f"{path}.deviceClassName"),
        selectors=_selectors(raw.get("selectors"), label, f"{path}.selectors"),
        allocation_mode=mode,
        count=count,
        admin_access=allow_admin and boolean(raw.get("adminAccess"), label, f"{path}.adminAccess"),
        capacity_requests=MappingProxyType(requests),
        tolerations=tuple(
            parse_toleration(t, label, f"{path}.tolerations[{i}]") for i, t in enumerate(raw_tolerations)
        ),
        raw_tolerations=tuple(MappingProxyType(copy.deepcopy(t)) for t in raw_tolerations),
        path=path,
    )


def _request(raw: Any, label: str, path: str) -> Request:
    raw = mapping(raw, label, path)
    name = string(raw.get("name"), label, f"{path}.name")
    if raw.get("exactly") is not None:
        return Request(name, (_exact(raw["exactly"], name, label, f"{path}.exactly", allow_admin=True),))
    subs = sequence(raw.get("firstAvailable"), label, f"{path}.firstAvailable")
    if not subs:
        raise fail(label, path, "one of exactly or firstAvailable is required")
    alternatives = []
    for i, sub in enumerate(subs):
        where = f"{path}.firstAvailable[{i}]"
        sub_name = string(mapping(sub, label, where).get("name"), label, f"{where}.name")
        alternatives.append(_exact(sub, f"{name}/{sub_name}", label, where, allow_admin=False))
    return Request(name, tuple(alternatives))


def parse_result(raw: Any, label: str, where: str) -> AllocatedDevice:
    """One allocation result; ``where`` is its path, e.g. ``status.allocation.devices.results[0]``."""
    res = mapping(raw, label, where)
    consumed = {
        key: quantity(value, label, f"{where}.consumedCapacity[{key}]")
        for key, value in mapping(res.get("consumedCapacity"), label, f"{where}.consumedCapacity").items()
    }
    return AllocatedDevice(
        request=string(res.get("request"), label, f"{where}.request"),
        device=DeviceKey(
            string(res.get("driver"), label, f"{where}.driver"),
            string(res.get("pool"), label, f"{where}.pool"),
            string(res.get("device"), label, f"{where}.device"),
        ),
        share_id=string(res.get("shareID"), label, f"{where}.shareID", required=False) or None,
        consumed=MappingProxyType(consumed),
        admin_access=boolean(res.get("adminAccess"), label, f"{where}.adminAccess"),
    )


def parse_results(raw: Any, label: str, path: str, driver: str | None = None) -> tuple[AllocatedDevice, ...]:
    """The results of an allocation (``path``: the allocation's path, e.g. ``status.allocation``).

    ``driver``: only that driver's results, the others not even read (what they hold is their driver's affair).
    """
    devices = mapping(mapping(raw, label, path).get("devices"), label, f"{path}.devices")
    return tuple(
        parse_result(res, label, f"{path}.devices.results[{i}]")
        for i, res in enumerate(sequence(devices.get("results"), label, f"{path}.devices.results"))
        if driver is None or not isinstance(res, dict) or res.get("driver") == driver
    )


def claim_results(claim: dict[str, Any], driver: str | None = None) -> tuple[AllocatedDevice, ...]:
    """The allocation results of a ResourceClaim object (of ``driver`` only, if given); () when it is not
    allocated. Raises ParseError naming the claim and the field."""
    label = object_label("ResourceClaim", claim)
    allocation = mapping(claim.get("status"), label, "status").get("allocation")
    return parse_results(allocation, label, "status.allocation", driver) if allocation else ()


def _allocation(raw: Any, label: str, path: str) -> ExistingAllocation | None:
    if not raw:
        return None
    raw = mapping(raw, label, path)
    selector = raw.get("nodeSelector")
    return ExistingAllocation(
        results=parse_results(raw, label, path),
        node_selector=parse_node_selector(selector, label, f"{path}.nodeSelector") if selector else None,
    )


def parse_claim(obj: dict[str, Any]) -> Claim:
    label = object_label("ResourceClaim", obj)
    meta = mapping(obj.get("metadata"), label, "metadata")
    devices = mapping(mapping(obj.get("spec"), label, "spec").get("devices"), label, "spec.devices")
    requests = tuple(
        _request(r, label, f"spec.devices.requests[{i}]")
        for i, r in enumerate(sequence(devices.get("requests"), label, "spec.devices.requests"))
    )
    constraints = []
    for i, c in enumerate(sequence(devices.get("constraints"), label, "spec.devices.constraints")):
        where = f"spec.devices.constraints[{i}]"
        c = mapping(c, label, where)
        match, distinct = c.get("matchAttribute"), c.get("distinctAttribute")
        if bool(match) == bool(distinct):
            raise fail(label, where, "exactly one of matchAttribute or distinctAttribute is required")
        constraints.append(
            Constraint(tuple(sequence(c.get("requests"), label, f"{where}.requests")), match or None, distinct or None)
        )
    config = []
    for i, c in enumerate(sequence(devices.get("config"), label, "spec.devices.config")):
        c = mapping(c, label, f"spec.devices.config[{i}]")
        body = {k: copy.deepcopy(v) for k, v in c.items() if k != "requests"}
        config.append(
            ClaimConfig(
                tuple(sequence(c.get("requests"), label, f"spec.devices.config[{i}].requests")), MappingProxyType(body)
            )
        )
    return Claim(
        namespace=meta.get("namespace") or "default",
        name=string(meta.get("name"), label, "metadata.name"),
        uid=meta.get("uid") or "",
        requests=requests,
        constraints=tuple(constraints),
        config=tuple(config),
        allocation=_allocation(
            mapping(obj.get("status"), label, "status").get("allocation"), label, "status.allocation"
        ),
    )
