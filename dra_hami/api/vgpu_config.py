"""The opaque claim configuration ``gpu.hami.io/v1alpha1 VGpuConfig`` and how it becomes libvgpu env."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from dra_hami import wire


class CoreLimitPolicy(StrEnum):
    DEFAULT = "default"  # throttle to the claim's cores
    FORCE = "force"  # throttle even when the GPU is not contended
    DISABLE = "disable"  # never throttle (memory is still capped)


class Priority(StrEnum):
    HIGH = "high"
    LOW = "low"


class OomPolicy(StrEnum):
    ERROR = "error"  # the allocation fails with CUDA_ERROR_OUT_OF_MEMORY
    KILL = "kill"  # the process is terminated with a log line (for apps that spin on OOM)


class LogLevel(StrEnum):
    ERROR = "error"
    WARN = "warn"
    INFO = "info"
    DEBUG = "debug"


_LOG_LEVELS = {LogLevel.ERROR: "1", LogLevel.WARN: "2", LogLevel.INFO: "3", LogLevel.DEBUG: "4"}

# Fields a DeviceClass may pin: a claim's config can then not change them (e.g. coreLimitPolicy, so that a
# tenant's ``coreLimitPolicy: disable`` cannot remove the compute cap the admin set).
PinnableField = Literal["coreLimitPolicy", "priority", "oomPolicy", "logLevel"]
PINNABLE_FIELDS: tuple[str, ...] = ("coreLimitPolicy", "priority", "oomPolicy", "logLevel")


class VGpuConfig(BaseModel):
    """Per-request tuning of the slice. Unset fields keep libvgpu's defaults."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_enum_values=False)

    api_version: Literal["gpu.hami.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["VGpuConfig"]
    core_limit_policy: CoreLimitPolicy | None = Field(default=None, alias="coreLimitPolicy")
    priority: Priority | None = None
    oom_policy: OomPolicy | None = Field(default=None, alias="oomPolicy")
    log_level: LogLevel | None = Field(default=None, alias="logLevel")
    # Only in a DeviceClass's config: these fields keep this config's value (or libvgpu's default when it sets
    # none) whatever a later config, such as the claim's, says.
    pinned: tuple[PinnableField, ...] | None = None

    def merged_over(self, base: VGpuConfig | None) -> VGpuConfig:
        """This config with unset fields taken from ``base`` (later configs win, as in the API), except the
        fields ``base`` pins: those keep ``base``'s value, and stay pinned."""
        if base is None:
            return self
        values = base.model_dump(by_alias=True, exclude_none=True)
        pins = set(base.pinned or ())
        for key, value in self.model_dump(by_alias=True, exclude_none=True).items():
            if key not in pins and key != "pinned":
                values[key] = value
        if pins | set(self.pinned or ()):
            values["pinned"] = tuple(f for f in PINNABLE_FIELDS if f in pins | set(self.pinned or ()))
        return VGpuConfig.model_validate(values)

    def overrides_of(self, base: VGpuConfig) -> list[str]:
        """The fields ``base`` pins that this config sets to another value (what the webhook refuses)."""
        mine = self.model_dump(by_alias=True, exclude_none=True)
        theirs = base.model_dump(by_alias=True, exclude_none=True)
        return [f for f in base.pinned or () if f in mine and mine[f] != theirs.get(f)]

    def env(self) -> list[str]:
        env = []
        if self.core_limit_policy is not None:
            env.append(f"{wire.ENV_CORE_POLICY}={self.core_limit_policy.value}")
        if self.priority is not None:
            env.append(f"{wire.ENV_TASK_PRIORITY}={0 if self.priority is Priority.HIGH else 1}")
        if self.oom_policy is not None:
            env.append(f"{wire.ENV_OOM_POLICY}={self.oom_policy.value}")
        if self.log_level is not None:
            env.append(f"{wire.ENV_LOG_LEVEL}={_LOG_LEVELS[self.log_level]}")
        return env


class ConfigError(ValueError):
    """Invalid opaque configuration; the message names the field and how to fix it."""


def parse_vgpu_config(parameters: Any, where: str) -> VGpuConfig:
    """Validate opaque ``parameters`` (a JSON object) as a VGpuConfig; ``where`` prefixes field paths."""
    if not isinstance(parameters, dict):
        raise ConfigError(f"{where}: must be a JSON object with apiVersion {wire.CONFIG_API_VERSION!r}")
    try:
        return VGpuConfig.model_validate(parameters)
    except ValidationError as err:
        problems = []
        for item in err.errors():
            field = ".".join(str(part) for part in item["loc"])
            problems.append(f"{where}.{field}: {_explain(item)}")
        raise ConfigError("; ".join(problems)) from None


def _explain(item: ErrorDetails) -> str:
    kind = item["type"]
    if kind == "extra_forbidden":
        known = ", ".join(f.alias or n for n, f in VGpuConfig.model_fields.items())
        return f"unknown field; VGpuConfig knows {known}"
    if kind == "missing":
        return "required"
    if kind in ("literal_error", "enum"):
        return f"got {item.get('input')!r}, expected {item['ctx'].get('expected')}"
    return item["msg"]
