"""What the publisher advertises: driver, node, and HAMi's sharing knobs."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dra_hami import wire
from dra_hami.quantity import QuantityError, to_int

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")

MAX_DEVICES_PER_SLICE = 128  # resource.k8s.io/v1 limit (64 when devices carry taints or counters)


class PublisherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    node_name: str
    driver_name: str = wire.DEFAULT_DRIVER_NAME
    # When set, slices get an ownerReference to the Node so they are garbage-collected with it.
    node_uid: str | None = None
    # HAMi's deviceSplitCount: the most claims one GPU may hold.
    split_count: int = Field(wire.DEFAULT_SPLIT_COUNT, ge=1)
    # Bytes per GPU kept back from claims (driver, ECC, CUDA context); a quantity string is accepted too.
    reserved_memory: int = Field(0, ge=0)
    # HAMi's deviceMemoryScaling: above 1 advertises more memory than the card has (oversubscription).
    memory_scaling: float = Field(1.0, gt=0)
    max_devices_per_slice: int = Field(MAX_DEVICES_PER_SLICE, ge=1, le=MAX_DEVICES_PER_SLICE)

    @field_validator("node_name", "driver_name")
    @classmethod
    def _dns_subdomain(cls, value: str, info: Any) -> str:
        limit = 63 if info.field_name == "driver_name" else 253
        if len(value) > limit or not _DNS_SUBDOMAIN.match(value):
            raise ValueError(f"{value!r} is not a lower-case DNS subdomain of at most {limit} characters")
        return value

    @field_validator("reserved_memory", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return to_int(value, "reserved_memory")
            except QuantityError as err:
                raise ValueError(str(err)) from None
        return value

    @property
    def field_selector(self) -> str:
        """Exactly this node's slices of this driver (the selector the kubelet itself wipes with)."""
        return f"spec.nodeName={self.node_name},spec.driver={self.driver_name}"
