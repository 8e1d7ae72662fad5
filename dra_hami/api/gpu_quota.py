"""``dra-hami.project-hami.io/v1alpha1 GpuQuota``: a namespace's budget of GPU memory, cores and GPUs.

The shape the CRD (crds/gpuquota.yaml) declares, as the webhook, the reconciler and the allocation controller read
it. The CRD's schema is checked by the API server, but a quota written before a schema change, or served by a
cluster without the CRD's validation, can still hold anything: every field is checked again here, and an error
names the object and the field.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from dra_hami.quantity import QuantityError, to_int

GROUP = "dra-hami.project-hami.io"
VERSION = "v1alpha1"
KIND = "GpuQuota"
PLURAL = "gpuquotas"
API_VERSION = f"{GROUP}/{VERSION}"


class QuotaError(ValueError):
    """A GpuQuota object that cannot be understood; the message names the object and field."""


class GpuAmounts(BaseModel):
    """spec.hard (the limits) or status.used: memory in bytes, cores in percent of one GPU, whole GPUs.
    An absent dimension is not limited (in hard) or zero (in used)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    memory: int | None = None  # a Kubernetes quantity on the wire (16Gi) or a plain number of bytes
    cores: int | None = None
    gpus: int | None = None

    @field_validator("memory", mode="before")
    @classmethod
    def _quantity(cls, value: Any, info: ValidationInfo) -> int | None:
        if value is None:
            return None
        try:
            number = to_int(value, _where(info))
        except QuantityError as err:
            raise ValueError(f"{err} (use a quantity such as 16Gi)") from None
        return _not_negative(number, value, info)

    @field_validator("cores", "gpus", mode="before")
    @classmethod
    def _count(cls, value: Any, info: ValidationInfo) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{_where(info)}: {value!r} is not an integer")
        return _not_negative(value, value, info)


class GpuQuotaSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    hard: GpuAmounts = GpuAmounts()


class GpuQuotaStatus(BaseModel):
    """Written by the webhook's reconciler (used) and by an admission that charged a claim (chargedAt: the
    reconciler keeps that charge until the claim shows up in its list)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    used: GpuAmounts | None = None
    charged_at: str | None = Field(default=None, alias="chargedAt")  # RFC 3339


def _where(info: ValidationInfo) -> str:
    context = info.context or {}
    return f"{context.get('label', KIND)}: {context.get('path', '')}.{info.field_name}"


def _not_negative(number: int, shown: Any, info: ValidationInfo) -> int:
    if number < 0:
        raise ValueError(f"{_where(info)}: {shown!r} must not be negative")
    return number


def parse_spec(raw: Any, label: str) -> GpuQuotaSpec:
    """``spec`` of a GpuQuota (absent: no limits); QuotaError names ``label`` and the field."""
    spec = raw or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("hard") or {}, dict):
        raise QuotaError(f"{label}: spec.hard must be an object with memory, cores and/or gpus")
    return _validate(GpuQuotaSpec, {"hard": spec.get("hard") or {}}, label, "spec.hard")


def parse_status(raw: Any, label: str) -> GpuQuotaStatus:
    """``status`` of a GpuQuota; ``used`` is None until the reconciler has written it as an object."""
    status = raw if isinstance(raw, dict) else {}
    used = status.get("used") if isinstance(status.get("used"), dict) else None
    charged = status.get("chargedAt")
    data = {"used": used, "chargedAt": charged if isinstance(charged, str) else None}  # a bad stamp is no charge
    return _validate(GpuQuotaStatus, data, label, "status.used")


_Model = TypeVar("_Model", bound=BaseModel)


def _validate(model: type[_Model], data: dict[str, Any], label: str, path: str) -> _Model:
    try:
        return model.model_validate(data, context={"label": label, "path": path})
    except ValidationError as err:
        # Our validators word their own messages (object, field, value); the first one is the answer.
        error = err.errors()[0]
        cause = (error.get("ctx") or {}).get("error")
        raise QuotaError(str(cause) if cause else f"{label}: {path}: {error['msg']}") from None
