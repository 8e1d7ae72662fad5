"""Discovery through NVML (``pynvml`` from nvidia-ml-py): the real backend on a GPU node."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from dra_hami.discovery import sysfs
from dra_hami.discovery.model import DiscoveryError, GpuInfo, check_unique, sort_gpus
from dra_hami.discovery.names import ARCHITECTURES, BRANDS, architecture_from_capability
from dra_hami.discovery.nvlink import SWITCH, nvlink_groups
from dra_hami.wire import normalise_pci_bus_id

log = logging.getLogger(__name__)

T = TypeVar("T")


def init_nvml(nvml: ModuleType | Any | None = None, user: str = "") -> ModuleType | Any:
    """``nvmlInit`` on ``nvml`` (pynvml unless tests pass a stand-in), or a DiscoveryError that says what to check."""
    if nvml is None:
        import pynvml

        nvml = pynvml
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as err:
        raise DiscoveryError(
            f"{user}cannot initialise NVML: {err}. Is the NVIDIA driver loaded and libnvidia-ml.so.1 visible "
            "to this container? (use --fake-profile to run without GPUs)"
        ) from err
    return nvml


def call_optional(nvml: ModuleType | Any, function: str, *args: Any, any_error: bool = False) -> Any:
    """``nvml.<function>(*args)``, or None when pynvml lacks the function or the GPU/driver does not support it.

    Other NVML errors are raised, unless ``any_error`` (a reading that is only a hint, never a failure).
    """
    fn = getattr(nvml, function, None)
    if fn is None:
        return None
    try:
        return fn(*args)
    except nvml.NVMLError as err:
        unsupported = (nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        if any_error or getattr(err, "value", None) in unsupported:
            return None
        raise


class NvmlDiscovery:
    """Initialises NVML once, at construction, so a node without a driver fails at start with a clear message."""

    def __init__(self, nvml: ModuleType | Any | None = None, sysfs_root: Path = Path("/sys")):
        self._nvml = init_nvml(nvml)
        self._sysfs = sysfs_root
        self._lock = threading.Lock()

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as err:
            log.debug("nvmlShutdown: %s", err)

    def discover(self) -> list[GpuInfo]:
        with self._lock:  # NVML is thread-safe, but one consistent snapshot per call is easier to reason about
            try:
                gpus = self._discover()
            except self._nvml.NVMLError as err:
                raise DiscoveryError(f"NVML: {err}") from err
        check_unique(gpus, "NVML")
        return sort_gpus(gpus)

    def _discover(self) -> list[GpuInfo]:
        nvml = self._nvml
        driver_version = self._optional("nvmlSystemGetDriverVersion")
        driver_version = _text(driver_version) if driver_version is not None else None
        cuda_driver_version = self._cuda_driver_version()
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]

        def bus_id_of(handle: Any) -> str:
            return _bus_id(nvml.nvmlDeviceGetPciInfo(handle))

        bus_ids = [
            self._required(i, "PCI bus id", functools.partial(bus_id_of, handle)) for i, handle in enumerate(handles)
        ]
        peers = {bus: self._nvlink_peers(handle, set(bus_ids)) for bus, handle in zip(bus_ids, handles, strict=True)}
        groups = nvlink_groups(bus_ids, peers)
        return [
            self._gpu(i, handle, bus_ids[i], groups[bus_ids[i]], driver_version, cuda_driver_version)
            for i, handle in enumerate(handles)
        ]

    def _gpu(
        self, i: int, handle: Any, bus_id: str, group: int | None, driver: str | None, cuda: str | None
    ) -> GpuInfo:
        nvml = self._nvml
        capability = self._optional("nvmlDeviceGetCudaComputeCapability", handle)
        index = self._optional("nvmlDeviceGetIndex", handle)
        minor = self._optional("nvmlDeviceGetMinorNumber", handle)
        if minor is None:  # WSL has no /dev/nvidia<minor>; the index is the only stable handle left
            log.warning("GPU %d (%s): NVML reports no minor number, naming the device after its index", i, bus_id)
        attributes = self._optional("nvmlDeviceGetAttributes", handle)
        return GpuInfo(
            uuid=self._required(i, "UUID", lambda: _text(nvml.nvmlDeviceGetUUID(handle))),
            minor=i if minor is None else minor,
            index=i if index is None else index,
            name=self._required(i, "name", lambda: _text(nvml.nvmlDeviceGetName(handle))),
            memory_bytes=self._required(i, "memory", lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).total)),
            pci_bus_id=bus_id,
            brand=BRANDS.get(self._optional("nvmlDeviceGetBrand", handle)),
            architecture=self._architecture(handle, capability),
            cuda_compute_capability=f"{capability[0]}.{capability[1]}" if capability else None,
            driver_version=driver,
            cuda_driver_version=cuda,
            numa_node=self._numa_node(handle, bus_id),
            pcie_root=sysfs.pcie_root(bus_id, self._sysfs),
            nvlink_group=group,
            sm_count=getattr(attributes, "multiprocessorCount", None) or None,
        )

    def _architecture(self, handle: Any, capability: tuple[int, int] | None) -> str | None:
        name = ARCHITECTURES.get(self._optional("nvmlDeviceGetArchitecture", handle))
        if name is None and capability:
            name = architecture_from_capability(*capability)
        return name

    def _cuda_driver_version(self) -> str | None:
        version = self._optional("nvmlSystemGetCudaDriverVersion_v2")
        if version is None:
            version = self._optional("nvmlSystemGetCudaDriverVersion")
        if not version:
            return None
        return f"{version // 1000}.{(version % 1000) // 10}"  # 12090 -> "12.9" (CUDA_VERSION encoding)

    def _numa_node(self, handle: Any, bus_id: str) -> int | None:
        node = self._optional("nvmlDeviceGetNumaNodeId", handle)
        if node is not None and node >= 0:
            return node
        return sysfs.numa_node(bus_id, self._sysfs)

    def _nvlink_peers(self, handle: Any, gpu_bus_ids: set[str]) -> set[str]:
        """Bus ids of the GPUs on the other end of this GPU's active links (SWITCH for an NVSwitch)."""
        nvml = self._nvml
        peers: set[str] = set()
        stop = {nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_INVALID_ARGUMENT, nvml.NVML_ERROR_FUNCTION_NOT_FOUND}
        for link in range(nvml.NVML_NVLINK_MAX_LINKS):
            try:
                if nvml.nvmlDeviceGetNvLinkState(handle, link) != nvml.NVML_FEATURE_ENABLED:
                    continue
            except nvml.NVMLError as err:
                if getattr(err, "value", None) in stop:  # no NVLink at all, or past the last link
                    break
                continue
            kind = self._optional("nvmlDeviceGetNvLinkRemoteDeviceType", handle, link)
            if kind == nvml.NVML_NVLINK_DEVICE_TYPE_SWITCH:
                peers.add(SWITCH)
                continue
            try:
                remote = _bus_id(nvml.nvmlDeviceGetNvLinkRemotePciInfo(handle, link))
            except (nvml.NVMLError, ValueError):
                continue  # topology is a hint for placement: a link we cannot read is left out
            if remote in gpu_bus_ids:
                peers.add(remote)
        return peers

    def _optional(self, function: str, *args: Any) -> Any:
        """A field this GPU, driver or pynvml does not support is unknown (None), not an error."""
        return call_optional(self._nvml, function, *args)

    def _required(self, i: int, what: str, read: Callable[[], T]) -> T:
        try:
            return read()
        except self._nvml.NVMLError as err:
            raise DiscoveryError(f"NVML: GPU {i}: cannot read its {what}: {err}") from err
        except ValueError as err:
            raise DiscoveryError(f"NVML: GPU {i}: {what}: {err}") from err


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _bus_id(pci_info: Any) -> str:
    return normalise_pci_bus_id(_text(pci_info.busId))
