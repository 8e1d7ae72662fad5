"""Building a spec whose cdiVersion is the lowest its fields need."""

from collections.abc import Iterable, Mapping

from .models import ContainerEdits, Device, Spec
from .validation import validate_spec
from .versions import minimum_version


def with_minimum_version(spec: Spec) -> Spec:
    """A validated copy of ``spec`` whose cdiVersion is the lowest covering its fields."""
    copy = spec.model_copy(deep=True)
    copy.cdi_version = minimum_version(copy)
    return validate_spec(copy)


def build_spec(
    kind: str,
    devices: Iterable[Device],
    *,
    container_edits: ContainerEdits | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Spec:
    """A validated spec for ``kind`` with the minimum cdiVersion for the fields used."""
    spec = Spec(
        cdi_version="0.3.0",
        kind=kind,
        annotations=dict(annotations or {}),
        devices=list(devices),
        container_edits=container_edits,
    )
    return with_minimum_version(spec)
