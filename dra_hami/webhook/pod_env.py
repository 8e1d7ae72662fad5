"""Pods must not set libvgpu's control variables themselves (pure).

A container gets those variables only from its claims' CDI specs. One a pod sets in its own ``env`` could
turn a limit off (``CUDA_DISABLE_CONTROL``), point libvgpu at other limits (``VGPU_*``), or preload a copy of
libvgpu the tenant controls. ``dra_hami.wire.is_control_env`` is the one list of names; the chart's
ValidatingAdmissionPolicy (``templates/admission-policies.yaml``) enforces the same rule in the API server,
so it holds with the webhook down. ``envFrom`` keys are not visible at admission: only a prefix that is
itself a control name is refused here; libvgpu lets such variables only lower a claim's limits.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from dra_hami import wire
from dra_hami.kube import objects as k8s

LIBVGPU_MARKERS = ("libvgpu", wire.CONTAINER_VGPU_DIR)
FIX_HINT = "remove them: a container gets these variables only from its GPU claims"


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for field, kind in (("initContainers", "initContainer"), ("containers", "container"),
                        ("ephemeralContainers", "ephemeralContainer")):  # fmt: skip
        for container in spec.get(field) or []:
            if isinstance(container, Mapping):
                yield kind, container


def _forbidden(entry: Mapping[str, Any]) -> bool:
    name = str(entry.get("name") or "")
    if wire.is_control_env(name):
        return True
    value = entry.get("value")
    return name == "LD_PRELOAD" and isinstance(value, str) and any(m in value for m in LIBVGPU_MARKERS)


def control_env_problems(pod: Mapping[str, Any]) -> list[str]:
    """One line per container that sets control variables: ``container "main" sets CUDA_DISABLE_CONTROL``."""
    problems = []
    for kind, container in _containers(pod.get("spec") or {}):
        names = [str(e.get("name")) for e in container.get("env") or [] if isinstance(e, Mapping) and _forbidden(e)]
        for source in container.get("envFrom") or []:
            prefix = (source or {}).get("prefix") or ""
            if prefix and wire.is_control_env(prefix):
                names.append(f"envFrom prefix {prefix}")
        if names:
            problems.append(f"{kind} {container.get('name', '')!r} sets {', '.join(names)}")
    return problems


def control_env_message(pod: Mapping[str, Any], problems: list[str]) -> str:
    meta = k8s.meta(pod)
    name = meta.get("name") or (meta.get("generateName", "") + "<generated>")
    return (f"dra-hami: pod {name} sets libvgpu's GPU limit control variables: {'; '.join(problems)}; "
            f"{FIX_HINT}")  # fmt: skip
