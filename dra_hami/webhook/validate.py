"""Claims and templates: opaque VGpuConfig for our driver must parse (the kubelet plugin's own model). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dra_hami.plugin.vgpu_config import ConfigError, parse_vgpu_config

FIX_HINT = "fix the VGpuConfig (see examples/vgpu-config.yaml) or remove the config entry"


def claim_spec_of(kind: str, obj: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """(the ResourceClaimSpec, its path) of a ResourceClaim or a ResourceClaimTemplate."""
    if kind == "ResourceClaimTemplate":
        return ((obj.get("spec") or {}).get("spec") or {}), "spec.spec"
    return (obj.get("spec") or {}), "spec"


def config_problems(kind: str, obj: Mapping[str, Any], driver: str) -> list[str]:
    """One message per invalid opaque config of ``driver``, each naming the field and the fix."""
    spec, base = claim_spec_of(kind, obj)
    problems = []
    for i, entry in enumerate((spec.get("devices") or {}).get("config") or []):
        opaque = (entry or {}).get("opaque") or {}
        if opaque.get("driver") != driver:
            continue
        where = f"{base}.devices.config[{i}].opaque.parameters"
        try:
            parse_vgpu_config(opaque.get("parameters"), where)
        except ConfigError as err:
            problems.append(str(err))
    return problems


def config_message(kind: str, obj: Mapping[str, Any], problems: list[str]) -> str:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName") or "<unnamed>"
    return f"{kind} {meta.get('namespace', '')}/{name}: invalid VGpuConfig: {'; '.join(problems)}; {FIX_HINT}"


def dry_run(review_request: Mapping[str, Any]) -> bool:
    return bool(review_request.get("dryRun"))
