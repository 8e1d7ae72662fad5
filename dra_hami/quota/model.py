"""The GpuQuota custom resource and the three-number arithmetic of GPU usage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dra_hami.kube import objects as k8s
from dra_hami.quantity import QuantityError, format_bytes, to_int

GROUP = "dra-hami.project-hami.io"
VERSION = "v1alpha1"
KIND = "GpuQuota"
PLURAL = "gpuquotas"
API_VERSION = f"{GROUP}/{VERSION}"

DIMENSIONS = ("memory", "cores", "gpus")


class QuotaError(ValueError):
    """A GpuQuota object that cannot be understood; the message names the object and field."""


@dataclass(frozen=True, slots=True)
class Usage:
    """GPU resources held by claims: memory in bytes, cores in percent of one GPU (summed), gpus = device results."""

    memory: int = 0
    cores: int = 0
    gpus: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.memory + other.memory, self.cores + other.cores, self.gpus + other.gpus)

    def __mul__(self, factor: int) -> Usage:
        return Usage(self.memory * factor, self.cores * factor, self.gpus * factor)

    def max(self, other: Usage) -> Usage:
        """Per-dimension maximum (the worst case of alternatives, or of two views of the same usage)."""
        return Usage(max(self.memory, other.memory), max(self.cores, other.cores), max(self.gpus, other.gpus))

    @property
    def empty(self) -> bool:
        return not (self.memory or self.cores or self.gpus)

    def get(self, dimension: str) -> int:
        return {"memory": self.memory, "cores": self.cores, "gpus": self.gpus}[dimension]

    def to_status(self) -> dict[str, Any]:
        """The JSON of status.used (memory as an exact binary quantity)."""
        return {"memory": format_bytes(self.memory) if self.memory else "0", "cores": self.cores, "gpus": self.gpus}


@dataclass(frozen=True, slots=True)
class Limits:
    """spec.hard: a dimension that is not set is not limited."""

    memory: int | None = None
    cores: int | None = None
    gpus: int | None = None

    def get(self, dimension: str) -> int | None:
        return {"memory": self.memory, "cores": self.cores, "gpus": self.gpus}[dimension]


@dataclass(frozen=True, slots=True)
class GpuQuota:
    namespace: str
    name: str
    hard: Limits
    used: Usage | None  # status.used as last written; None before the reconciler's first write
    resource_version: str

    @property
    def label(self) -> str:
        return f"GpuQuota {self.namespace}/{self.name}"


def _limit(raw: dict[str, Any], key: str, label: str, path: str, *, quantity: bool) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    where = f"{label}: {path}.{key}"
    if quantity:
        try:
            number = to_int(value, where)
        except QuantityError as err:
            raise QuotaError(f"{err} (use a quantity such as 16Gi)") from None
    else:
        if isinstance(value, bool) or not isinstance(value, int):
            raise QuotaError(f"{where}: {value!r} is not an integer")
        number = value
    if number < 0:
        raise QuotaError(f"{where}: {value!r} must not be negative")
    return number


def _usage(raw: Any, label: str, path: str) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    values = {
        "memory": _limit(raw, "memory", label, path, quantity=True),
        "cores": _limit(raw, "cores", label, path, quantity=False),
        "gpus": _limit(raw, "gpus", label, path, quantity=False),
    }
    return Usage(**{k: v or 0 for k, v in values.items()})


def parse_gpu_quota(obj: dict[str, Any]) -> GpuQuota:
    meta = k8s.meta(obj)
    namespace, name = meta.get("namespace") or "default", meta.get("name") or "<unnamed>"
    label = f"{KIND} {namespace}/{name}"
    spec = obj.get("spec") or {}
    hard = spec.get("hard") or {}
    if not isinstance(hard, dict):
        raise QuotaError(f"{label}: spec.hard must be an object with memory, cores and/or gpus")
    return GpuQuota(
        namespace=namespace,
        name=name,
        hard=Limits(
            memory=_limit(hard, "memory", label, "spec.hard", quantity=True),
            cores=_limit(hard, "cores", label, "spec.hard", quantity=False),
            gpus=_limit(hard, "gpus", label, "spec.hard", quantity=False),
        ),
        used=_usage((obj.get("status") or {}).get("used"), label, "status.used"),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def describe(dimension: str, value: int) -> str:
    """How a message shows an amount: memory as a binary quantity, the others as plain numbers."""
    if dimension == "memory":
        return format_bytes(value) if value else "0"
    return str(value)
