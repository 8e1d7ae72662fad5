"""A stand-in for the ``pynvml`` module: real constants and error classes, GPUs described in Python."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml as real

NOT_SUPPORTED = real.NVML_ERROR_NOT_SUPPORTED


@dataclass
class FakeGpu:
    uuid: str
    minor: int
    bus_id: str  # as NVML prints it: "00000000:3B:00.0"
    name: str = "Tesla T4"
    memory: int = 15360 << 20
    brand: int = real.NVML_BRAND_TESLA
    arch: int = real.NVML_DEVICE_ARCH_TURING
    capability: tuple[int, int] = (7, 5)
    numa: int = 0
    sm_count: int = 40
    # link number -> ("gpu", remote NVML bus id) or ("switch", "")
    links: dict[int, tuple[str, str]] = field(default_factory=dict)
    link_count: int = 4
    # NVML function name -> error code it raises for this GPU
    errors: dict[str, int] = field(default_factory=dict)


class FakeNvml(SimpleNamespace):
    def __init__(
        self,
        gpus: list[FakeGpu],
        driver: str = "535.104.05",
        cuda: int = 12020,
        init_error: int | None = None,
        system_errors: dict[str, int] | None = None,
    ):
        constants = {k: getattr(real, k) for k in dir(real) if k.startswith(("NVML_", "NVMLError"))}
        super().__init__(**constants)
        self.gpus = gpus
        self.driver = driver
        self.cuda = cuda
        self.init_error = init_error
        self.system_errors = system_errors or {}
        self.init_calls = 0
        self.shutdown_calls = 0

    # -- helpers --------------------------------------------------------------------------------------
    def _gpu(self, handle: int, function: str) -> FakeGpu:
        gpu = self.gpus[handle]
        if function in gpu.errors:
            raise real.NVMLError(gpu.errors[function])
        return gpu

    def _system(self, function: str) -> None:
        if function in self.system_errors:
            raise real.NVMLError(self.system_errors[function])

    # -- the NVML calls ---------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise real.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._system("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._system("nvmlSystemGetCudaDriverVersion_v2")
        return self.cuda

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._system("nvmlSystemGetCudaDriverVersion")
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetIndex(self, handle: int) -> int:
        self._gpu(handle, "nvmlDeviceGetIndex")
        return handle

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self._gpu(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetMinorNumber(self, handle: int) -> int:
        return self._gpu(handle, "nvmlDeviceGetMinorNumber").minor

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self._gpu(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        gpu = self._gpu(handle, "nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(total=gpu.memory, free=gpu.memory, used=0)

    def nvmlDeviceGetPciInfo(self, handle: int) -> Any:
        # busId is a ctypes char array in the real structure: it comes back as bytes.
        return SimpleNamespace(busId=self._gpu(handle, "nvmlDeviceGetPciInfo").bus_id.encode())

    def nvmlDeviceGetBrand(self, handle: int) -> int:
        return self._gpu(handle, "nvmlDeviceGetBrand").brand

    def nvmlDeviceGetArchitecture(self, handle: int) -> int:
        return self._gpu(handle, "nvmlDeviceGetArchitecture").arch

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        return self._gpu(handle, "nvmlDeviceGetCudaComputeCapability").capability

    def nvmlDeviceGetNumaNodeId(self, handle: int) -> int:
        return self._gpu(handle, "nvmlDeviceGetNumaNodeId").numa

    def nvmlDeviceGetAttributes(self, handle: int) -> Any:
        return SimpleNamespace(multiprocessorCount=self._gpu(handle, "nvmlDeviceGetAttributes").sm_count)

    def nvmlDeviceGetNvLinkState(self, handle: int, link: int) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetNvLinkState")
        if not gpu.links:
            raise real.NVMLError(real.NVML_ERROR_NOT_SUPPORTED)
        if link >= gpu.link_count:
            raise real.NVMLError(real.NVML_ERROR_INVALID_ARGUMENT)
        return real.NVML_FEATURE_ENABLED if link in gpu.links else real.NVML_FEATURE_DISABLED

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, handle: int, link: int) -> int:
        kind, _ = self._gpu(handle, "nvmlDeviceGetNvLinkRemoteDeviceType").links[link]
        return real.NVML_NVLINK_DEVICE_TYPE_SWITCH if kind == "switch" else real.NVML_NVLINK_DEVICE_TYPE_GPU

    def nvmlDeviceGetNvLinkRemotePciInfo(self, handle: int, link: int) -> Any:
        _, remote = self._gpu(handle, "nvmlDeviceGetNvLinkRemotePciInfo").links[link]
        return SimpleNamespace(busId=remote.encode())
