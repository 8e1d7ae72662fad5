"""Reading HAMi's legacy GPU requests out of a pod (pure).

Per container: ``nvidia.com/gpu`` (count), ``nvidia.com/gpumem`` (MiB), ``nvidia.com/gpumem-percentage`` (1-100,
of the card that is picked), ``nvidia.com/gpucores`` (0-100); per pod: ``nvidia.com/use-gputype``,
``nouse-gputype`` (comma lists, matched as HAMi does: case-insensitive substring of the product name),
``use-gpuuuid``, ``nouse-gpuuuid`` (comma lists of exact UUIDs). Every rule with its outcome:

* limits are read first, requests second (HAMi reads limits); both set and different: refused.
* a value that is not a whole non-negative number: refused, naming container and resource.
* gpu 0 alone: the resource is dropped, the container gets no GPU; gpu 0 with gpumem/gpucores: refused.
* gpumem/gpumem-percentage/gpucores without gpu: one GPU (HAMi's defaultGPUNum), with a warning.
* gpumem 0, percentage 0 or over 100, cores over 100: refused. cores 0 = no reservation and no cap (HAMi's default).
* gpumem and gpumem-percentage both set: gpumem wins (as in HAMi), with a warning.
* neither gpumem nor percentage: no memory request = the whole card (HAMi's default of 100%).
* an unknown ``nvidia.com/*`` annotation: ignored with a warning; ``nvidia.com/vgpu-mode`` other than
  ``hami-core``: refused (MIG slices are not what this driver hands out).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dra_hami.kube import objects as k8s
from dra_hami.quantity import QuantityError, to_int
from dra_hami.webhook import labels as L


class LegacyError(ValueError):
    """The pod's HAMi request cannot be translated; the message names container, field and fix."""


@dataclass(frozen=True)
class LegacyRequest:
    container: str
    init: bool  # an initContainer (sidecars use GPUs too)
    count: int
    memory_mib: int | None
    memory_percent: int | None
    cores: int | None

    @property
    def kind(self) -> str:
        return "initContainers" if self.init else "containers"


@dataclass(frozen=True)
class Selection:
    """HAMi's GPU selection annotations, split and trimmed."""

    use_types: tuple[str, ...] = ()
    nouse_types: tuple[str, ...] = ()
    use_uuids: tuple[str, ...] = ()
    nouse_uuids: tuple[str, ...] = ()

    def accepts(self, product_name: str, uuid: str) -> bool:
        """The same test as the CEL selectors the translation writes, for published devices."""
        name = product_name.upper()
        if self.use_types and not any(t.upper() in name for t in self.use_types):
            return False
        if any(t.upper() in name for t in self.nouse_types):
            return False
        if self.use_uuids and uuid not in self.use_uuids:
            return False
        return uuid not in self.nouse_uuids


@dataclass(frozen=True)
class LegacyPod:
    requests: tuple[LegacyRequest, ...]  # containers that get a claim
    stripped: tuple[tuple[str, str], ...]  # (kind, container) whose legacy resources are removed
    selection: Selection
    warnings: tuple[str, ...]


_TYPE_CHARS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/()+-]*$")
_UUID_CHARS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


def _containers(pod: dict[str, Any]) -> Iterator[tuple[bool, dict[str, Any]]]:
    spec = pod.get("spec") or {}
    for init, key in ((True, "initContainers"), (False, "containers")):
        for container in spec.get(key) or []:
            yield init, container


def legacy_keys(container: dict[str, Any]) -> set[str]:
    resources = container.get("resources") or {}
    keys = set((resources.get("limits") or {}).keys()) | set((resources.get("requests") or {}).keys())
    return {k for k in keys if k in L.LEGACY_RESOURCES}


def has_legacy_resources(pod: dict[str, Any]) -> bool:
    return any(legacy_keys(c) for _, c in _containers(pod))


def uses_dra(pod: dict[str, Any]) -> list[str]:
    """Where the pod already uses DRA: spec.resourceClaims and containers' resources.claims."""
    where = []
    if (pod.get("spec") or {}).get("resourceClaims"):
        where.append("spec.resourceClaims")
    for init, c in _containers(pod):
        if (c.get("resources") or {}).get("claims"):
            where.append(f"{'initContainers' if init else 'containers'}[{c.get('name')}].resources.claims")
    return where


def _value(container: dict[str, Any], key: str, where: str) -> int | None:
    resources = container.get("resources") or {}
    limit = (resources.get("limits") or {}).get(key)
    request = (resources.get("requests") or {}).get(key)
    numbers = []
    for field, raw in (("limits", limit), ("requests", request)):
        if raw is None:
            continue
        try:
            number = to_int(raw, f"{where}.resources.{field}['{key}']")
        except QuantityError as err:
            raise LegacyError(f"{err}: {key} takes a whole number") from None
        if number < 0:
            raise LegacyError(
                f"{where}.resources.{field}['{key}']: {raw!r} is negative: {key} takes a whole number >= 0"
            )
        numbers.append((field, raw, number))
    if len(numbers) == 2 and numbers[0][2] != numbers[1][2]:
        raise LegacyError(
            f"{where}.resources: limits['{key}'] = {limit!r} and requests['{key}'] = {request!r} differ: "
            f"set them equal or set only limits"
        )
    return numbers[0][2] if numbers else None


def _request(init: bool, container: dict[str, Any], warnings: list[str]) -> LegacyRequest | None:
    name = container.get("name") or "<unnamed>"
    where = f"{'initContainers' if init else 'containers'}[{name}]"
    count = _value(container, L.RESOURCE_GPU, where)
    mem = _value(container, L.RESOURCE_MEM, where)
    percent = _value(container, L.RESOURCE_MEM_PERCENT, where)
    cores = _value(container, L.RESOURCE_CORES, where)
    extras = [
        k
        for k, v in ((L.RESOURCE_MEM, mem), (L.RESOURCE_MEM_PERCENT, percent), (L.RESOURCE_CORES, cores))
        if v is not None
    ]
    if count == 0:
        if extras:
            raise LegacyError(
                f"{where}: {L.RESOURCE_GPU} is 0 but {', '.join(extras)} is set: ask for at least one GPU or drop "
                f"{', '.join(extras)}"
            )
        warnings.append(f"{where}: {L.RESOURCE_GPU}: 0 removed; the container gets no GPU")
        return None
    if count is None:
        count = 1
        warnings.append(f"{where}: {', '.join(extras)} without {L.RESOURCE_GPU}: one GPU assumed (HAMi's default)")
    if mem is not None and mem < 1:
        raise LegacyError(
            f"{where}: {L.RESOURCE_MEM} is 0: give the slice's memory in MiB (at least 1), "
            "or drop it for the whole card"
        )
    if percent is not None and not 1 <= percent <= 100:
        raise LegacyError(
            f"{where}: {L.RESOURCE_MEM_PERCENT} is {percent}: it must be between 1 and 100 "
            "(percent of the GPU's memory)"
        )
    if cores is not None and cores > 100:
        raise LegacyError(
            f"{where}: {L.RESOURCE_CORES} is {cores}: it must be between 0 and 100 (percent of the GPU's compute)"
        )
    if mem is not None and percent is not None:
        warnings.append(
            f"{where}: both {L.RESOURCE_MEM} and {L.RESOURCE_MEM_PERCENT} set: "
            f"{L.RESOURCE_MEM} ({mem} MiB) wins, as in HAMi"
        )
        percent = None
    return LegacyRequest(name, init, count, mem, percent, cores)


def _list(annotations: dict[str, str], key: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
    raw = annotations.get(key)
    if raw is None:
        return ()
    items = tuple(item.strip() for item in str(raw).split(",") if item.strip())
    if not items:
        raise LegacyError(
            f"metadata.annotations['{key}']: empty: list {what} separated by commas, or drop the annotation"
        )
    for item in items:
        if not pattern.match(item):
            raise LegacyError(f"metadata.annotations['{key}']: {item!r} is not a valid {what[:-1]}")
    return items


def selection(pod: dict[str, Any], warnings: list[str]) -> Selection:
    annotations = k8s.annotations(pod)
    mode = annotations.get(L.VGPU_MODE)
    if mode is not None and mode != "hami-core":
        raise LegacyError(
            f"metadata.annotations['{L.VGPU_MODE}']: {mode!r}: dra-hami shares GPUs the hami-core way only; "
            f"remove the annotation or set it to hami-core"
        )
    unknown = sorted(k for k in annotations if k.startswith(L.LEGACY_PREFIX) and k not in L.KNOWN_ANNOTATIONS)
    if unknown:
        warnings.append(
            f"annotations {', '.join(unknown)} are not HAMi GPU-selection annotations dra-hami knows and are ignored "
            f"(known: {', '.join(L.KNOWN_ANNOTATIONS)})"
        )
    return Selection(
        use_types=_list(annotations, L.USE_TYPE, _TYPE_CHARS, "GPU types"),
        nouse_types=_list(annotations, L.NOUSE_TYPE, _TYPE_CHARS, "GPU types"),
        use_uuids=_list(annotations, L.USE_UUID, _UUID_CHARS, "GPU UUIDs"),
        nouse_uuids=_list(annotations, L.NOUSE_UUID, _UUID_CHARS, "GPU UUIDs"),
    )


def parse_legacy_pod(pod: dict[str, Any]) -> LegacyPod | None:
    """The pod's HAMi requests, or None when it has none. Raises LegacyError for input with no defined meaning."""
    if not has_legacy_resources(pod):
        return None
    dra = uses_dra(pod)
    if dra:
        legacy = sorted({k for _, c in _containers(pod) for k in legacy_keys(c)})
        raise LegacyError(
            f"the pod mixes HAMi resources ({', '.join(legacy)}) with DRA ({', '.join(dra)}): use one or the other, "
            f"either drop the nvidia.com/* resources and reference a ResourceClaimTemplate, or drop the claims"
        )
    warnings: list[str] = []
    requests, stripped = [], []
    for init, container in _containers(pod):
        if not legacy_keys(container):
            continue
        stripped.append(("initContainers" if init else "containers", container.get("name") or ""))
        request = _request(init, container, warnings)
        if request is not None:
            requests.append(request)
    sel = selection(pod, warnings) if requests else Selection()
    return LegacyPod(tuple(requests), tuple(stripped), sel, tuple(warnings))
