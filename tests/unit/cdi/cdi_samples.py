"""Small valid CDI specs for the cdi library's tests, as JSON dicts and as models."""

import copy
from typing import Any

import cdi

KIND = "k8s.gpu.hami.io/claim"


def spec_dict(**overrides: Any) -> dict[str, Any]:
    """A minimal valid spec as decoded JSON; top-level keys can be overridden."""
    data: dict[str, Any] = {
        "cdiVersion": "0.3.0",
        "kind": KIND,
        "devices": [{"name": "gpu0", "containerEdits": {"env": ["A=1"]}}],
    }
    data.update(copy.deepcopy(overrides))
    return data


def with_device_edits(edits: dict[str, Any], version: str = cdi.CURRENT_VERSION) -> dict[str, Any]:
    """A spec whose only device has ``edits`` (at a version high enough for any field)."""
    return spec_dict(cdiVersion=version, devices=[{"name": "gpu0", "containerEdits": edits}])


def device(name: str = "gpu0", env: tuple[str, ...] = ("A=1",)) -> cdi.Device:
    return cdi.Device(name=name, container_edits=cdi.ContainerEdits(env=list(env)))
