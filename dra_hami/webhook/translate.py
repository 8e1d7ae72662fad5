"""HAMi legacy requests -> ResourceClaimTemplates and the pod patch that uses them (pure).

Design (why templates, shared by shape): the pod does not exist yet when the webhook runs (Deployments even
use generateName), so nothing the webhook creates can carry an ownerReference to it. Claims created here
would leak whenever the pod is never created or dies (HAMi-DRA #21). Instead each container gets a
``spec.resourceClaims`` entry naming a ResourceClaimTemplate: Kubernetes' own resourceclaim controller then
creates the claim *owned by the pod* and deletes it with the pod, for bare pods, Deployments, Jobs and
StatefulSets alike. The template's name is a hash of its content, so all pods with the same request shape
in a namespace share one template (a 100-replica Deployment makes one), and the webhook's collector deletes
templates no pod references any more (``webhook.collector``).

gpumem-percentage: DRA capacity requests are absolute, so a percentage becomes one alternative per GPU
memory size published (after the type/UUID annotations are applied), smallest first, each pinned to that size
with a CEL selector and asking for floor(size x percent / 100) rounded down to the 1Mi step. One size: a
plain ``exactly`` request; several: ``firstAvailable`` (at most 8, the API's limit). So the slice is exactly
the percentage of the card it lands on, as in HAMi, with the stock scheduler as well as in policy mode.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dra_hami import wire
from dra_hami.quantity import QuantityError, format_bytes, to_int
from dra_hami.webhook import labels as L
from dra_hami.webhook.legacy import LegacyError, LegacyPod, LegacyRequest, Selection

MAX_ALTERNATIVES = 8  # firstAvailable holds at most 8 subrequests
REQUEST_NAME = "gpu"
TEMPLATE_PREFIX = "hami-legacy-"
_RE_SPECIAL = set("\\.+*?()|[]{}^$")


@dataclass(frozen=True)
class PublishedGpu:
    product_name: str
    uuid: str
    memory: int  # bytes, the published capacity (what DRA requests are measured against)


def published_gpus(slices: Iterable[dict[str, Any]], driver: str) -> list[PublishedGpu]:
    out = []
    for slice_ in slices:
        spec = slice_.get("spec") or {}
        if spec.get("driver") != driver:
            continue
        for device in spec.get("devices") or []:
            attrs = device.get("attributes") or {}
            memory = ((device.get("capacity") or {}).get(wire.CAPACITY_MEMORY) or {}).get("value")
            try:
                size = to_int(memory, "memory") if memory is not None else 0
            except QuantityError:
                continue
            out.append(
                PublishedGpu(
                    product_name=str((attrs.get("productName") or {}).get("string", "")),
                    uuid=str((attrs.get("uuid") or {}).get("string", "")),
                    memory=size,
                )
            )
    return out


@dataclass(frozen=True)
class TemplatePlan:
    pod_claim: str  # the pod's spec.resourceClaims[].name
    container: str
    kind: str  # containers | initContainers
    name: str  # ResourceClaimTemplate name (content hash)
    template: dict[str, Any]  # the whole object, ready to create


@dataclass(frozen=True)
class Translation:
    templates: tuple[TemplatePlan, ...]
    pod: dict[str, Any]  # the mutated pod
    warnings: tuple[str, ...] = field(default=())


def _cel_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _regex_any(items: Iterable[str]) -> str:
    """Case-insensitive substring match of any item, as HAMi matches GPU types (RE2 and Python agree on it)."""
    escaped = ["".join("\\" + ch if ch in _RE_SPECIAL else ch for ch in item) for item in items]
    return "(?i)(" + "|".join(escaped) + ")"


def selection_selectors(sel: Selection, driver: str) -> list[str]:
    attr = f"device.attributes[{_cel_string(driver)}]"
    out = []
    if sel.use_types:
        out.append(f"{attr}.productName.matches({_cel_string(_regex_any(sel.use_types))})")
    if sel.nouse_types:
        out.append(f"!{attr}.productName.matches({_cel_string(_regex_any(sel.nouse_types))})")
    if sel.use_uuids:
        out.append(f"{attr}.uuid in [{', '.join(_cel_string(u) for u in sel.use_uuids)}]")
    if sel.nouse_uuids:
        out.append(f"!({attr}.uuid in [{', '.join(_cel_string(u) for u in sel.nouse_uuids)}])")
    return out


def size_selector(size: int, driver: str) -> str:
    return f"device.capacity[{_cel_string(driver)}].memory.compareTo(quantity({_cel_string(format_bytes(size))})) == 0"


def percent_of(size: int, percent: int) -> int:
    """floor(size x percent / 100) on the 1Mi grid, at least 1Mi (the request policy's minimum)."""
    return max(size * percent // 100 // wire.MEMORY_STEP * wire.MEMORY_STEP, wire.MEMORY_STEP)


def _exact(driver: str, count: int, selectors: list[str], capacity: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {"deviceClassName": driver, "allocationMode": "ExactCount", "count": count}
    if selectors:
        body["selectors"] = [{"cel": {"expression": s}} for s in selectors]
    if capacity:
        body["capacity"] = {"requests": capacity}
    return body


def claim_spec(request: LegacyRequest, sel: Selection, gpus: list[PublishedGpu], driver: str) -> dict[str, Any]:
    """The ResourceClaimSpec for one container. Raises LegacyError when no published GPU could ever serve it."""
    where = f"{request.kind}[{request.container}]"
    candidates = [g for g in gpus if sel.accepts(g.product_name, g.uuid)]
    base_selectors = selection_selectors(sel, driver)
    capacity: dict[str, str] = {}
    if request.cores is not None:
        capacity[wire.CAPACITY_CORES] = str(request.cores)
    if request.memory_mib is not None:
        wanted = request.memory_mib * wire.MEMORY_STEP
        largest = max((g.memory for g in candidates), default=0)
        if candidates and wanted > largest:
            raise LegacyError(
                f"{where}: {L.RESOURCE_MEM} is {request.memory_mib} MiB but the largest GPU"
                f"{' matching the annotations' if base_selectors else ''} has {largest // wire.MEMORY_STEP} MiB: "
                f"ask for at most {largest // wire.MEMORY_STEP} (the value is in MiB) or use {L.RESOURCE_MEM_PERCENT}"
            )
        capacity[wire.CAPACITY_MEMORY] = format_bytes(wanted)
    request_body: dict[str, Any]
    if request.memory_percent is None:
        request_body = {"name": REQUEST_NAME, "exactly": _exact(driver, request.count, base_selectors, capacity)}
    else:
        sizes = sorted({g.memory for g in candidates})
        if not sizes:
            raise LegacyError(
                f"{where}: {L.RESOURCE_MEM_PERCENT} needs the GPU's memory size, and no published GPU of driver "
                f"{driver}{' matches the annotations' if base_selectors else ' exists yet'}: use {L.RESOURCE_MEM} "
                f"(MiB) instead, or retry once the GPU nodes have published their ResourceSlices"
            )
        alternatives = []
        for size in sizes[:MAX_ALTERNATIVES]:
            cap = {**capacity, wire.CAPACITY_MEMORY: format_bytes(percent_of(size, request.memory_percent))}
            alternatives.append(
                (size, _exact(driver, request.count, [*base_selectors, size_selector(size, driver)], cap))
            )
        if len(alternatives) == 1:
            request_body = {"name": REQUEST_NAME, "exactly": alternatives[0][1]}
        else:
            subs = []
            for size, body in alternatives:
                body.pop("allocationMode")  # same default; keeps subrequests short
                subs.append({"name": f"mem-{size // wire.MEMORY_STEP}mi", **body})
            request_body = {"name": REQUEST_NAME, "firstAvailable": subs}
    devices: dict[str, Any] = {"requests": [request_body]}
    if request.count > 1:
        # HAMi's nvidia.com/gpu: N means N different GPUs; shared devices could otherwise repeat.
        devices["constraints"] = [{"requests": [REQUEST_NAME], "distinctAttribute": f"{driver}/uuid"}]
    return {"devices": devices}


def template_name(spec: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return TEMPLATE_PREFIX + digest[:16]


def pod_claim_name(container: str, kind: str) -> str:
    name = f"hami-{'init-' if kind == 'initContainers' else ''}{container}"
    if len(name) <= 63:
        return name
    return f"{name[:54]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _strip(container: dict[str, Any]) -> None:
    resources = container.get("resources")
    if not resources:
        return
    for field_name in ("limits", "requests"):
        values = resources.get(field_name)
        if not values:
            continue
        for key in L.LEGACY_RESOURCES:
            values.pop(key, None)
        if not values:
            del resources[field_name]


def translate(
    pod: dict[str, Any], legacy: LegacyPod, gpus: list[PublishedGpu], driver: str, namespace: str, now: str
) -> Translation:
    """The templates to create and the translated pod (a deep copy; ``pod`` is left alone)."""
    new = json.loads(json.dumps(pod))
    spec = new.setdefault("spec", {})
    plans = []
    for request in legacy.requests:
        claim = claim_spec(request, legacy.selection, gpus, driver)
        template_spec = {"metadata": {"labels": {L.TRANSLATED_LABEL: "true"}}, "spec": claim}
        name = template_name(template_spec)
        template = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {L.TEMPLATE_LABEL: "true"},
                "annotations": {L.LAST_USED_ANNOTATION: now},
            },
            "spec": template_spec,
        }
        plans.append(
            TemplatePlan(
                pod_claim_name(request.container, request.kind), request.container, request.kind, name, template
            )
        )
    by_container = {(p.kind, p.container): p for p in plans}
    for kind, name in legacy.stripped:
        for container in spec.get(kind) or []:
            if container.get("name") != name:
                continue
            _strip(container)
            plan = by_container.get((kind, name))
            if plan is not None:
                resources = container.setdefault("resources", {})
                resources.setdefault("claims", []).append({"name": plan.pod_claim})
            if container.get("resources") == {}:
                del container["resources"]
    if plans:
        claims = spec.setdefault("resourceClaims", [])
        claims.extend({"name": p.pod_claim, "resourceClaimTemplateName": p.name} for p in plans)
    meta = new.setdefault("metadata", {})
    meta.setdefault("labels", {})[L.TRANSLATED_LABEL] = "true"
    if plans:
        meta.setdefault("annotations", {})[L.SOURCE_ANNOTATION] = ",".join(f"{p.container}={p.name}" for p in plans)
    return Translation(tuple(plans), new, legacy.warnings)
