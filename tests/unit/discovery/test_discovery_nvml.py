"""The NVML backend against a substituted pynvml module (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import pynvml
import pytest
from fake_pynvml import NOT_SUPPORTED, FakeGpu, FakeNvml

from dra_hami.discovery.model import DiscoveryError
from dra_hami.discovery.nvml import NvmlDiscovery

T4_A = FakeGpu("GPU-aaaaaaaa-0000-0000-0000-000000000000", minor=1, bus_id="00000000:AF:00.0")
T4_B = FakeGpu("GPU-bbbbbbbb-0000-0000-0000-000000000000", minor=0, bus_id="00000000:3B:00.0", numa=1)


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    """A sysfs with the two T4s behind host bridges pci0000:3a and pci0000:ae."""
    root = tmp_path / "sys"
    links = root / "bus/pci/devices"
    links.mkdir(parents=True)
    for bridge, port, device, numa in (
        ("pci0000:3a", "0000:3a:00.0", "0000:3b:00.0", "1"),
        ("pci0000:ae", "0000:ae:00.0", "0000:af:00.0", "0"),
    ):
        target = root / "devices" / bridge / port / device
        target.mkdir(parents=True)
        (target / "numa_node").write_text(numa + "\n")
        (links / device).symlink_to(target)
    return root


def test_reads_every_field_sorted_by_bus_id(sysfs: Path) -> None:
    nvml = FakeNvml([T4_A, T4_B], driver="535.104.05", cuda=12090)
    gpus = NvmlDiscovery(nvml, sysfs_root=sysfs).discover()

    assert [gpu.pci_bus_id for gpu in gpus] == ["0000:3b:00.0", "0000:af:00.0"]
    first = gpus[0]
    assert first.uuid == T4_B.uuid
    assert (first.minor, first.index) == (0, 1)  # index is NVML's enumeration order, minor the device node
    assert first.name == "Tesla T4"
    assert first.brand == "Tesla"
    assert first.architecture == "Turing"
    assert first.cuda_compute_capability == "7.5"
    assert first.memory_bytes == 15360 << 20
    assert first.driver_version == "535.104.05"
    assert first.cuda_driver_version == "12.9"
    assert first.numa_node == 1
    assert first.pcie_root == "pci0000:3a"
    assert first.sm_count == 40
    assert first.nvlink_group is None
    assert gpus[1].pcie_root == "pci0000:ae"
    assert nvml.init_calls == 1


def test_init_happens_once(sysfs: Path) -> None:
    nvml = FakeNvml([T4_A])
    discovery = NvmlDiscovery(nvml, sysfs_root=sysfs)
    discovery.discover()
    discovery.discover()
    discovery.close()
    assert (nvml.init_calls, nvml.shutdown_calls) == (1, 1)


@pytest.mark.parametrize(
    ("function", "field"),
    [
        ("nvmlDeviceGetBrand", "brand"),
        ("nvmlDeviceGetCudaComputeCapability", "cuda_compute_capability"),
        ("nvmlDeviceGetAttributes", "sm_count"),
    ],
)
def test_not_supported_field_is_none(sysfs: Path, function: str, field: str) -> None:
    gpu = FakeGpu(T4_A.uuid, 0, T4_A.bus_id, errors={function: NOT_SUPPORTED})
    (info,) = NvmlDiscovery(FakeNvml([gpu]), sysfs_root=sysfs).discover()
    assert getattr(info, field) is None
    assert info.uuid == T4_A.uuid  # the rest is still read


def test_architecture_falls_back_to_compute_capability(sysfs: Path) -> None:
    gpu = FakeGpu(T4_A.uuid, 0, T4_A.bus_id, capability=(8, 9), errors={"nvmlDeviceGetArchitecture": NOT_SUPPORTED})
    (info,) = NvmlDiscovery(FakeNvml([gpu]), sysfs_root=sysfs).discover()
    assert info.architecture == "Ada Lovelace"


def test_function_missing_from_an_old_pynvml_is_none(sysfs: Path) -> None:
    nvml = FakeNvml([T4_A])
    nvml.nvmlDeviceGetArchitecture = None  # pynvml too old to know it
    nvml.nvmlDeviceGetNumaNodeId = None
    (info,) = NvmlDiscovery(nvml, sysfs_root=sysfs).discover()
    assert info.architecture == "Turing"  # from the compute capability
    assert info.numa_node == 0  # from sysfs


def test_function_not_found_in_the_driver_is_none(sysfs: Path) -> None:
    gpu = FakeGpu(T4_B.uuid, 0, T4_B.bus_id, errors={"nvmlDeviceGetNumaNodeId": pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})
    (info,) = NvmlDiscovery(FakeNvml([gpu]), sysfs_root=sysfs).discover()
    assert info.numa_node == 1  # sysfs says 1


def test_numa_from_sysfs_when_nvml_has_none(sysfs: Path) -> None:
    gpu = FakeGpu(T4_B.uuid, 0, T4_B.bus_id, numa=-1)
    (info,) = NvmlDiscovery(FakeNvml([gpu]), sysfs_root=sysfs).discover()
    assert info.numa_node == 1


def test_unknown_numa_and_root_without_sysfs(tmp_path: Path) -> None:
    gpu = FakeGpu(T4_A.uuid, 0, T4_A.bus_id, errors={"nvmlDeviceGetNumaNodeId": NOT_SUPPORTED})
    (info,) = NvmlDiscovery(FakeNvml([gpu]), sysfs_root=tmp_path).discover()
    assert (info.numa_node, info.pcie_root) == (None, None)


def test_sysfs_minus_one_is_no_numa(sysfs: Path) -> None:
    (sysfs / "bus/pci/devices/0000:3b:00.0/numa_node").write_text("-1\n")
    gpu = FakeGpu(T4_B.uuid, 0, T4_B.bus_id, numa=-1)
    (info,) = NvmlDiscovery(FakeNvml([gpu]), sysfs_root=sysfs).discover()
    assert info.numa_node is None


def test_cuda_driver_version_falls_back_to_v1(sysfs: Path) -> None:
    nvml = FakeNvml([T4_A], cuda=11080, system_errors={"nvmlSystemGetCudaDriverVersion_v2": NOT_SUPPORTED})
    (info,) = NvmlDiscovery(nvml, sysfs_root=sysfs).discover()
    assert info.cuda_driver_version == "11.8"


def test_missing_minor_falls_back_to_index(sysfs: Path) -> None:
    gpu = FakeGpu(T4_A.uuid, 7, T4_A.bus_id, errors={"nvmlDeviceGetMinorNumber": NOT_SUPPORTED})
    (info,) = NvmlDiscovery(FakeNvml([gpu]), sysfs_root=sysfs).discover()
    assert info.minor == 0


def test_required_field_failure_names_the_gpu(sysfs: Path) -> None:
    gpu = FakeGpu(T4_A.uuid, 0, T4_A.bus_id, errors={"nvmlDeviceGetUUID": pynvml.NVML_ERROR_GPU_IS_LOST})
    with pytest.raises(DiscoveryError, match="GPU 0: cannot read its UUID: GPU is lost"):
        NvmlDiscovery(FakeNvml([gpu]), sysfs_root=sysfs).discover()


def test_other_errors_on_optional_fields_are_not_hidden(sysfs: Path) -> None:
    gpu = FakeGpu(T4_A.uuid, 0, T4_A.bus_id, errors={"nvmlDeviceGetBrand": pynvml.NVML_ERROR_GPU_IS_LOST})
    with pytest.raises(DiscoveryError, match="GPU is lost"):
        NvmlDiscovery(FakeNvml([gpu]), sysfs_root=sysfs).discover()


@pytest.mark.parametrize(
    "code", [pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED, pynvml.NVML_ERROR_NO_PERMISSION]
)
def test_init_failure_is_a_clear_discovery_error(code: int) -> None:
    with pytest.raises(DiscoveryError, match=r"cannot initialise NVML.*NVIDIA driver.*--fake-profile"):
        NvmlDiscovery(FakeNvml([], init_error=code))


def test_real_pynvml_without_a_driver_is_a_discovery_error() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:  # pragma: no cover - only on a machine with a GPU driver
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    with pytest.raises(DiscoveryError, match="cannot initialise NVML"):
        NvmlDiscovery()


def test_duplicate_minor_is_refused(sysfs: Path) -> None:
    twins = [FakeGpu(T4_A.uuid, 0, T4_A.bus_id), FakeGpu(T4_B.uuid, 0, T4_B.bus_id)]
    with pytest.raises(DiscoveryError, match="minor"):
        NvmlDiscovery(FakeNvml(twins), sysfs_root=sysfs).discover()


def test_nvlink_groups_direct_and_switched(tmp_path: Path) -> None:
    bus = [f"00000000:{n:02X}:00.0" for n in (0x10, 0x20, 0x30, 0x40, 0x50)]
    gpus = [
        # 0 and 1 linked directly (each side reports the other; one link is down and must be skipped)
        FakeGpu("GPU-0", 0, bus[0], links={0: ("gpu", bus[1]), 2: ("gpu", bus[1])}),
        FakeGpu("GPU-1", 1, bus[1], links={0: ("gpu", bus[0])}),
        # 2 and 3 only through NVSwitches
        FakeGpu("GPU-2", 2, bus[2], links={0: ("switch", ""), 1: ("switch", "")}),
        FakeGpu("GPU-3", 3, bus[3], links={3: ("switch", "")}),
        # 4 has no NVLink
        FakeGpu("GPU-4", 4, bus[4]),
    ]
    nvml = FakeNvml(gpus)
    original = nvml.nvmlDeviceGetNvLinkState

    def state(handle: int, link: int) -> int:
        if handle == 0 and link == 2:
            return pynvml.NVML_FEATURE_DISABLED
        return original(handle, link)

    nvml.nvmlDeviceGetNvLinkState = state
    found = NvmlDiscovery(nvml, sysfs_root=tmp_path).discover()
    assert [gpu.nvlink_group for gpu in found] == [0, 0, 1, 1, None]


def test_unreadable_link_is_skipped(tmp_path: Path) -> None:
    bus = ["00000000:10:00.0", "00000000:20:00.0"]
    gpus = [
        FakeGpu("GPU-0", 0, bus[0], links={0: ("gpu", bus[1])}, errors={}),
        FakeGpu("GPU-1", 1, bus[1], links={0: ("gpu", bus[0])}),
    ]
    gpus[0].errors["nvmlDeviceGetNvLinkRemotePciInfo"] = pynvml.NVML_ERROR_UNKNOWN
    found = NvmlDiscovery(FakeNvml(gpus), sysfs_root=tmp_path).discover()
    assert [gpu.nvlink_group for gpu in found] == [0, 0]  # GPU-1's own report still links them
