"""A fake GPU profile: the YAML a node's ``--fake-profile`` names (built-in ones: dra_hami/discovery/profiles/).
Validated, unknown fields refused; dra_hami/discovery/profile.py expands it to GPUs. An example::

    name: t4x2
    driverVersion: 535.104.05
    cudaDriverVersion: "12.2"
    defaults: {productName: Tesla T4, memory: 15360Mi, cudaComputeCapability: "7.5"}
    gpus:
      - {pciBusID: "0000:00:04.0", numaNode: 0, pcieRoot: pci0000:00}
      - {pciBusID: "0000:00:05.0", numaNode: 0, pcieRoot: pci0000:00}

``defaults`` holds what the GPUs have in common and ``count`` repeats an entry; bus ids, minors and UUIDs that are
not given are derived deterministically, so the same profile always yields the same devices.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from dra_hami.quantity import QuantityError, to_int
from dra_hami.wire import normalise_pci_bus_id

_CAPABILITY = re.compile(r"^\d+\.\d+$")
_PCIE_ROOT = re.compile(r"^pci[0-9a-f]{4,8}:[0-9a-f]{2}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class GpuTemplate(_Strict):
    product_name: str | None = None
    brand: str | None = None
    architecture: str | None = None
    cuda_compute_capability: str | None = None
    memory: int | None = None  # bytes; the YAML may say "15360Mi"
    sm_count: int | None = Field(None, ge=1)
    numa_node: int | None = Field(None, ge=0)
    pcie_root: str | None = None
    nvlink_group: int | None = Field(None, ge=0)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        if value is None:
            return None
        try:
            parsed = to_int(value, "memory")
        except QuantityError as err:
            raise ValueError(str(err)) from None
        if parsed <= 0:
            raise ValueError("memory must be positive")
        return parsed

    @field_validator("cuda_compute_capability", mode="before")
    @classmethod
    def _capability(cls, value: Any) -> Any:
        if value is not None and not _CAPABILITY.match(str(value)):
            raise ValueError(f"{value!r} is not <major>.<minor>, e.g. '7.5'")
        return None if value is None else str(value)

    @field_validator("pcie_root")
    @classmethod
    def _pcie_root(cls, value: str | None) -> str | None:
        if value is not None and not _PCIE_ROOT.match(value):
            raise ValueError(f"{value!r} is not a PCIe root like 'pci0000:00'")
        return value


class GpuEntry(GpuTemplate):
    uuid: str | None = None
    minor: int | None = Field(None, ge=0)
    pci_bus_id: str | None = Field(None, alias="pciBusID")
    count: int = Field(1, ge=1, le=4096)

    @field_validator("pci_bus_id")
    @classmethod
    def _bus_id(cls, value: str | None) -> str | None:
        return None if value is None else normalise_pci_bus_id(value)

    @model_validator(mode="after")
    def _count_with_identity(self) -> GpuEntry:
        if self.count > 1 and (self.uuid or self.minor is not None or self.pci_bus_id):
            raise ValueError("count > 1 cannot be combined with uuid, minor or pciBusID (each GPU needs its own)")
        return self


class Profile(_Strict):
    name: str | None = None
    description: str | None = None
    driver_version: str | None = "550.54.15"
    cuda_driver_version: str | None = "12.4"
    defaults: GpuTemplate = GpuTemplate()
    gpus: list[GpuEntry]

    @field_validator("driver_version", "cuda_driver_version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return None if value is None else str(value)  # YAML reads 12.4 as a float
