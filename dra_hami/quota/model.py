"""The GpuQuota custom resource as the quota code uses it, and the three-number arithmetic of GPU usage
(the object's wire shape and its validation: dra_hami/api/gpu_quota.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dra_hami.api.gpu_quota import API_VERSION, GROUP, KIND, PLURAL, VERSION, QuotaError, parse_spec, parse_status
from dra_hami.kube import objects as k8s
from dra_hami.quantity import format_bytes

__all__ = ["API_VERSION", "GROUP", "KIND", "PLURAL", "VERSION", "QuotaError"]  # the API's names, used from here

DIMENSIONS = ("memory", "cores", "gpus")


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


def parse_gpu_quota(obj: dict[str, Any]) -> GpuQuota:
    meta = k8s.meta(obj)
    namespace, name = meta.get("namespace") or "default", meta.get("name") or "<unnamed>"
    label = f"{KIND} {namespace}/{name}"
    hard = parse_spec(obj.get("spec"), label).hard
    used = parse_status(obj.get("status"), label).used
    return GpuQuota(
        namespace=namespace,
        name=name,
        hard=Limits(memory=hard.memory, cores=hard.cores, gpus=hard.gpus),
        used=None if used is None else Usage(used.memory or 0, used.cores or 0, used.gpus or 0),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def describe(dimension: str, value: int) -> str:
    """How a message shows an amount: memory as a binary quantity, the others as plain numbers."""
    if dimension == "memory":
        return format_bytes(value) if value else "0"
    return str(value)
