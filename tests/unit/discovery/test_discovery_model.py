"""Bus id normalisation, PCI ordering, NVLink grouping."""

from __future__ import annotations

import pytest

from dra_hami.discovery.model import GpuInfo, pci_sort_key, sort_gpus
from dra_hami.discovery.nvlink import SWITCH, nvlink_groups
from dra_hami.wire import normalise_pci_bus_id


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("00000000:3B:00.0", "0000:3b:00.0"),  # NVML
        ("0000:3b:00.0", "0000:3b:00.0"),  # sysfs
        ("3b:00.0", "0000:3b:00.0"),  # lspci without domain
        ("00010000:01:1F.7", "10000:01:1f.7"),  # VMD domains are wider than four digits
        (" 0000:AF:00.1 ", "0000:af:00.1"),
    ],
)
def test_normalise_pci_bus_id(raw: str, normalised: str) -> None:
    assert normalise_pci_bus_id(raw) == normalised


@pytest.mark.parametrize("bad", ["", "GPU-0", "0000:3b:00", "0000:3b:00.8", "0000:3b:000.0"])
def test_normalise_refuses_garbage(bad: str) -> None:
    with pytest.raises(ValueError, match="not a PCI bus id"):
        normalise_pci_bus_id(bad)


def test_sort_is_numeric() -> None:
    assert pci_sort_key("10000:01:00.0") > pci_sort_key("0000:ff:00.0")
    gpus = [
        GpuInfo(uuid=f"GPU-{bus}", minor=i, index=i, name="x", memory_bytes=1, pci_bus_id=bus)
        for i, bus in enumerate(["10000:01:00.0", "0000:af:00.0", "0000:3b:00.0"])
    ]
    assert [gpu.pci_bus_id for gpu in sort_gpus(gpus)] == ["0000:3b:00.0", "0000:af:00.0", "10000:01:00.0"]


def test_device_name_comes_from_the_minor() -> None:
    gpu = GpuInfo(uuid="GPU-1", minor=3, index=0, name="x", memory_bytes=1, pci_bus_id="0000:01:00.0")
    assert gpu.device_name == "hami-gpu-3"


def test_nvlink_groups_are_numbered_by_lowest_bus_id() -> None:
    a, b, c, d, e = (f"0000:{n:02x}:00.0" for n in (0x10, 0x20, 0x30, 0x40, 0x50))
    groups = nvlink_groups([e, d, c, b, a], {b: [e], c: [SWITCH], d: [SWITCH], a: ["0000:99:00.0"]})
    # a links only to a non-GPU: no group. b-e direct, c-d through the switch.
    assert groups == {a: None, b: 0, c: 1, d: 1, e: 0}
