"""Claims and templates: opaque VGpuConfig for our driver must parse (the kubelet plugin's own model). Pure."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from dra_hami.api.vgpu_config import ConfigError, VGpuConfig, parse_vgpu_config
from dra_hami.kube import objects as k8s

FIX_HINT = "fix the VGpuConfig (see examples/vgpu-config.yaml) or remove the config entry"


def claim_spec_of(kind: str, obj: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """(the ResourceClaimSpec, its path) of a ResourceClaim or a ResourceClaimTemplate."""
    if kind == "ResourceClaimTemplate":
        return ((obj.get("spec") or {}).get("spec") or {}), "spec.spec"
    return (obj.get("spec") or {}), "spec"


def _driver_configs(
    devices: Mapping[str, Any], base: str, driver: str
) -> Iterator[tuple[Mapping[str, Any], str, VGpuConfig | ConfigError]]:
    """(entry, its parameters' field path, the parsed VGpuConfig or why it does not parse) per opaque config
    entry of ``driver`` in a claim spec's ``devices``."""
    for i, entry in enumerate(devices.get("config") or []):
        opaque = (entry or {}).get("opaque") or {}
        if opaque.get("driver") != driver:
            continue
        where = f"{base}.devices.config[{i}].opaque.parameters"
        parsed: VGpuConfig | ConfigError
        try:
            parsed = parse_vgpu_config(opaque.get("parameters"), where)
        except ConfigError as err:
            parsed = err
        yield entry, where, parsed


def config_problems(kind: str, obj: Mapping[str, Any], driver: str) -> list[str]:
    """One message per invalid opaque config of ``driver``, each naming the field and the fix."""
    spec, base = claim_spec_of(kind, obj)
    problems = []
    for _, where, config in _driver_configs(spec.get("devices") or {}, base, driver):
        if isinstance(config, ConfigError):
            problems.append(str(config))
            continue
        if config.pinned:
            problems.append(f"{where}.pinned: only a DeviceClass's config may pin fields")
    return problems


def _request_classes(devices: Mapping[str, Any]) -> dict[str, set[str]]:
    """Request name (and ``request/subrequest``) -> the DeviceClasses it may be allocated from."""
    out: dict[str, set[str]] = {}
    for request in devices.get("requests") or []:
        name = str((request or {}).get("name") or "")
        exactly = request.get("exactly") or {}
        if exactly.get("deviceClassName"):
            out.setdefault(name, set()).add(exactly["deviceClassName"])
        for sub in request.get("firstAvailable") or []:
            cls = (sub or {}).get("deviceClassName")
            if cls:
                out.setdefault(name, set()).add(cls)
                out.setdefault(f"{name}/{sub.get('name')}", set()).add(cls)
    return out


def class_configs(device_class: Mapping[str, Any] | None, driver: str) -> list[VGpuConfig]:
    """The valid VGpuConfigs of ``driver`` in a DeviceClass (an invalid one fails the plugin's prepare anyway)."""
    out = []
    for entry in ((device_class or {}).get("spec") or {}).get("config") or []:
        opaque = (entry or {}).get("opaque") or {}
        if opaque.get("driver") == driver:
            try:
                out.append(parse_vgpu_config(opaque.get("parameters"), "class config"))
            except ConfigError:
                continue
    return out


def pinned_problems(
    kind: str, obj: Mapping[str, Any], driver: str, classes: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """The claim's VGpuConfig fields that a DeviceClass of its requests pins to another value."""
    spec, base = claim_spec_of(kind, obj)
    devices = spec.get("devices") or {}
    request_classes = _request_classes(devices)
    problems: list[str] = []
    for entry, where, config in _driver_configs(devices, base, driver):
        if isinstance(config, ConfigError):
            continue  # config_problems reports it
        for target in entry.get("requests") or sorted(request_classes):
            for class_name in sorted(request_classes.get(target, ())):
                for admin in class_configs(classes.get(class_name), driver):
                    for field in config.overrides_of(admin):
                        pinned = admin.model_dump(by_alias=True, exclude_none=True).get(field)
                        value = repr(str(pinned)) if pinned is not None else "libvgpu's default"
                        line = (f"{where}.{field}: DeviceClass {class_name} pins {field} to {value}; "
                                "remove the field from the claim")  # fmt: skip
                        if line not in problems:
                            problems.append(line)
    return problems


def uses_driver_config(kind: str, obj: Mapping[str, Any], driver: str) -> bool:
    spec, _ = claim_spec_of(kind, obj)
    return any(((e or {}).get("opaque") or {}).get("driver") == driver
               for e in (spec.get("devices") or {}).get("config") or [])  # fmt: skip


def config_message(kind: str, obj: Mapping[str, Any], problems: list[str]) -> str:
    meta = k8s.meta(obj)
    name = meta.get("name") or meta.get("generateName") or "<unnamed>"
    return f"{kind} {meta.get('namespace', '')}/{name}: invalid VGpuConfig: {'; '.join(problems)}; {FIX_HINT}"


def dry_run(review_request: Mapping[str, Any]) -> bool:
    return bool(review_request.get("dryRun"))
