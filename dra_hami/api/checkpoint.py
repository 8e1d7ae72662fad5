"""The kubelet plugin's checkpoint file (``<plugin-dir>/checkpoint.json``), read by the plugin at start and by the
exporter on every change.

    {"kind": "DraHamiCheckpoint", "version": 1, "checksum": "sha256:<hex>", "data": {"claims": {<uid>: Claim}}}

``checksum`` covers ``data`` in canonical JSON (sorted keys, no spaces). The plugin writes the file without these
models (dra_hami/plugin/checkpoint.py assembles it from per-claim cached text: a prepare rewrites every claim), so
a test checks that what it writes is what these models read. A field may be added with a default; anything
else is a new ``version``, and a plugin refuses a checkpoint newer than it knows.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

KIND = "DraHamiCheckpoint"
VERSION = 1

ClaimStateName = Literal["PrepareStarted", "PrepareCompleted"]


class _Entry(BaseModel):
    # Unknown fields are ignored, so a plugin rolled back one release still reads what the newer one wrote.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class DeviceEntry(_Entry):
    """One device of the kubelet's NodePrepareResources answer for the claim, kept to answer it again."""

    request_names: list[str] = Field(alias="requestNames")
    pool_name: str = Field(alias="poolName")
    device_name: str = Field(alias="deviceName")
    cdi_device_ids: list[str] = Field(alias="cdiDeviceIDs")
    share_id: str | None = Field(default=None, alias="shareID")


class ShareEntry(_Entry):
    """What one share of the claim takes of a GPU (the node-side capacity guard adds these up)."""

    device: str
    memory: int  # bytes
    cores: int  # percent of the GPU's SMs


class ClaimEntry(_Entry):
    namespace: str
    name: str
    state: ClaimStateName  # PrepareStarted: the spec may or may not be on disk (redo or undo, never trust)
    boot_id: str = Field(alias="bootID")  # the boot it was prepared in: a reboot wipes the CDI dir
    spec: dict[str, Any] | None = None  # the CDI spec written for it, so a rebuild needs no API call
    devices: list[DeviceEntry] = []
    shares: list[ShareEntry] | None = None  # None: written by a plugin that did not record shares


class CheckpointData(_Entry):
    claims: dict[str, ClaimEntry]  # by claim UID


class CheckpointDocument(_Entry):
    """The whole file. ``data`` stays raw JSON here: the checksum is over its exact canonical text."""

    kind: Literal["DraHamiCheckpoint"]
    version: int
    checksum: str
    data: dict[str, Any]
