"""Stand-ins for the health tests: a pynvml with an event queue, and an in-memory ResourceSlice API."""

from __future__ import annotations

import copy
import queue
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml as real

from dra_hami.kube.client import ApiError


@dataclass
class Gpu:
    uuid: str
    lost: bool = False
    retired_pending: int = 0
    remapped: tuple[int, int, int, int] = (0, 0, 0, 0)
    register_error: int | None = None


class EventNvml(SimpleNamespace):
    def __init__(self, gpus: list[Gpu], event_sets: bool = True):
        constants = {k: getattr(real, k) for k in dir(real) if k.startswith(("NVML_", "nvmlEventType"))}
        super().__init__(**constants)
        self.NVMLError = real.NVMLError
        self.gpus = {g.uuid: g for g in gpus}
        self.events: queue.Queue[Any] = queue.Queue()
        self.registered: list[str] = []
        self.event_sets = event_sets

    def emit(self, uuid: str, xid: int, event_type: int = real.nvmlEventTypeXidCriticalError) -> None:
        self.events.put(SimpleNamespace(device=uuid, eventType=event_type, eventData=xid))

    def emit_error(self, code: int) -> None:
        self.events.put(real.NVMLError(code))

    def nvmlInit(self) -> None:
        pass

    def nvmlEventSetCreate(self) -> str:
        if not self.event_sets:
            raise real.NVMLError(real.NVML_ERROR_NOT_SUPPORTED)
        return "set"

    def nvmlEventSetFree(self, event_set: str) -> None:
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        gpu = self.gpus.get(uuid)
        if gpu is None:
            raise real.NVMLError(real.NVML_ERROR_NOT_FOUND)
        if gpu.lost:
            raise real.NVMLError(real.NVML_ERROR_GPU_IS_LOST)
        return uuid  # the handle is the UUID here

    def nvmlDeviceRegisterEvents(self, handle: str, types: int, event_set: str) -> None:
        gpu = self.gpus[handle]
        if gpu.register_error is not None:
            raise real.NVMLError(gpu.register_error)
        assert types & real.nvmlEventTypeXidCriticalError
        self.registered.append(handle)

    def nvmlEventSetWait_v2(self, event_set: str, timeout_ms: int) -> Any:
        try:
            item = self.events.get_nowait()
        except queue.Empty:
            raise real.NVMLError(real.NVML_ERROR_TIMEOUT) from None
        if isinstance(item, Exception):
            raise item
        return item

    def nvmlDeviceGetUUID(self, handle: str) -> bytes:
        return handle.encode()

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> Any:
        if self.gpus[handle].lost:
            raise real.NVMLError(real.NVML_ERROR_GPU_IS_LOST)
        return SimpleNamespace(total=16 << 30, used=1 << 30)

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: str) -> int:
        return self.gpus[handle].retired_pending

    def nvmlDeviceGetRemappedRows(self, handle: str) -> tuple[int, int, int, int]:
        return self.gpus[handle].remapped


@dataclass
class Slices:
    """create/update/list/delete/watch of ResourceSlices; ``drop_taints`` acts like a server with the
    DRADeviceTaints gate off."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: int = 0
    drop_taints: bool = False
    _rv: int = 0

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(body)
        if self.drop_taints:
            for device in body["spec"]["devices"]:
                device.pop("taints", None)
        self._rv += 1
        body["metadata"]["resourceVersion"] = str(self._rv)
        self.objects[body["metadata"]["name"]] = body
        self.writes += 1
        return copy.deepcopy(body)

    def list_resource_slices(self, field_selector: str = "") -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for o in self.objects.values()]

    def create_resource_slice(self, body: dict[str, Any]) -> dict[str, Any]:
        if body["metadata"]["name"] in self.objects:
            raise ApiError(409, "exists", "AlreadyExists")
        return self._store(body)

    def update_resource_slice(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._store(body)

    def delete_resource_slice(self, name: str) -> None:
        self.objects.pop(name, None)

    def list_objects(self, path: str, query=None, first_page_only: bool = False):
        return [copy.deepcopy(o) for o in self.objects.values()], "1"

    def watch(self, path: str, resource_version: str, timeout_seconds: int, query=None):
        return iter(())

    def taints(self) -> dict[str, list[dict[str, Any]]]:
        return {d["name"]: d.get("taints") or [] for o in self.objects.values() for d in o["spec"]["devices"]}
