"""Pydantic models of a CDI spec, shaped like specs-go.

Python attributes are snake_case, JSON keys are the camelCase keys of specs-go. The models check
structure only (types, required keys, no unknown keys, as the runtimes' loaders do); the semantic
rules (names, paths, versions) live in ``cdi.validation`` so each error can name its JSON path.
Serialization omits unset and empty values so written specs stay minimal, like Go's ``omitempty``.
"""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer
from pydantic.alias_generators import to_camel

# Go's uint32/int64 ranges: larger values would make the runtime's JSON decoder fail.
UINT32_MAX = 2**32 - 1
INT64_MAX = 2**63 - 1
Uint32 = Annotated[int, Field(ge=0, le=UINT32_MAX)]
Int64 = Annotated[int, Field(ge=0, le=INT64_MAX)]


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


class CDIModel(BaseModel):
    # strict: a runtime's Go decoder rejects "5" for an int, so we do too.
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        strict=True,
    )

    @model_serializer(mode="wrap")
    def _omit_empty(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if not _is_empty(value)}


class DeviceNode(CDIModel):
    path: str
    host_path: str | None = None
    type: str | None = None
    major: Int64 | None = None
    minor: Int64 | None = None
    file_mode: Uint32 | None = None
    permissions: str | None = None
    uid: Uint32 | None = None
    gid: Uint32 | None = None


class Mount(CDIModel):
    host_path: str
    container_path: str
    type: str | None = None
    options: list[str] = Field(default_factory=list)


class Hook(CDIModel):
    hook_name: str
    path: str
    args: list[str] = Field(default_factory=list)
    env: list[str] = Field(default_factory=list)
    timeout: int | None = None


class IntelRdt(CDIModel):
    clos_id: str | None = Field(default=None, alias="closID")
    l3_cache_schema: str | None = None
    mem_bw_schema: str | None = None
    schemata: list[str] = Field(default_factory=list)
    enable_monitoring: bool | None = None


class NetDevice(CDIModel):
    host_interface_name: str
    name: str


class ContainerEdits(CDIModel):
    env: list[str] = Field(default_factory=list)
    device_nodes: list[DeviceNode] = Field(default_factory=list)
    mounts: list[Mount] = Field(default_factory=list)
    hooks: list[Hook] = Field(default_factory=list)
    intel_rdt: IntelRdt | None = None
    additional_gids: list[Uint32] = Field(default_factory=list)
    net_devices: list[NetDevice] = Field(default_factory=list)

    def is_empty(self) -> bool:
        lists = (self.env, self.device_nodes, self.mounts, self.hooks, self.additional_gids, self.net_devices)
        return self.intel_rdt is None and not any(lists)


class Device(CDIModel):
    name: str
    annotations: dict[str, str] = Field(default_factory=dict)
    container_edits: ContainerEdits = Field(default_factory=ContainerEdits)


class Spec(CDIModel):
    cdi_version: str
    kind: str
    annotations: dict[str, str] = Field(default_factory=dict)
    devices: list[Device] = Field(default_factory=list)
    container_edits: ContainerEdits | None = None
