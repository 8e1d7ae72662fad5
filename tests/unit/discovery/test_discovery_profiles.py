"""Fake profiles: built-ins, the YAML schema, deterministic identities, live changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dra_hami.discovery import DiscoveryError, FakeDiscovery, GpuInfo, builtin_profiles, load_discovery
from dra_hami.discovery.profile import profile_gpus


def write(path: Path, profile: dict) -> Path:
    path.write_text(yaml.safe_dump(profile))
    return path


def test_builtins_present() -> None:
    assert {"t4x2", "h100x8", "a100x4", "l40sx2"} <= set(builtin_profiles())


@pytest.mark.parametrize("name", ["t4x2", "h100x8", "a100x4", "l40sx2"])
def test_every_builtin_loads_complete(name: str) -> None:
    gpus = load_discovery(name).discover()
    assert gpus
    assert [gpu.minor for gpu in gpus] == list(range(len(gpus)))
    assert [gpu.index for gpu in gpus] == list(range(len(gpus)))
    for gpu in gpus:
        assert gpu.uuid.startswith("GPU-")
        assert None not in (gpu.brand, gpu.architecture, gpu.cuda_compute_capability, gpu.numa_node, gpu.pcie_root)


def test_t4x2() -> None:
    gpus = load_discovery("t4x2").discover()
    assert len(gpus) == 2
    assert {(g.name, g.architecture, g.cuda_compute_capability, g.numa_node, g.pcie_root) for g in gpus} == {
        ("Tesla T4", "Turing", "7.5", 0, "pci0000:00")
    }
    assert gpus[0].memory_bytes == 15360 << 20  # a "16 GB" T4 as NVML reports it


def test_h100x8_topology() -> None:
    gpus = load_discovery("h100x8").discover()
    assert len(gpus) == 8
    assert {g.name for g in gpus} == {"NVIDIA H100 80GB HBM3"}
    assert {(g.architecture, g.cuda_compute_capability) for g in gpus} == {("Hopper", "9.0")}
    assert [g.numa_node for g in gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [g.pcie_root for g in gpus] == [f"pci0000:{r}" for r in ("00", "00", "40", "40", "80", "80", "c0", "c0")]
    assert {g.nvlink_group for g in gpus} == {0}  # one NVSwitch domain


def test_uuids_are_deterministic_and_distinct() -> None:
    first = [g.uuid for g in load_discovery("h100x8").discover()]
    again = [g.uuid for g in load_discovery("h100x8").discover()]
    other = [g.uuid for g in load_discovery("a100x4").discover()]
    assert first == again
    assert len(set(first)) == 8
    assert not set(first) & set(other)


def test_count_generates_unique_ordered_gpus(tmp_path: Path) -> None:
    path = write(tmp_path / "big.yaml", {"gpus": [{"productName": "G", "memory": "1Gi", "count": 300}]})
    gpus = load_discovery(str(path)).discover()
    assert len(gpus) == 300
    assert [g.minor for g in gpus] == list(range(300))
    assert len({g.pci_bus_id for g in gpus}) == 300
    assert gpus[0].memory_bytes == 1 << 30


def test_explicit_identity_and_defaults_override(tmp_path: Path) -> None:
    profile = {
        "defaults": {"productName": "Tesla T4", "memory": 1000, "numaNode": 0},
        "gpus": [
            {"pciBusID": "00000000:AF:00.0", "minor": 5, "uuid": "GPU-x", "numaNode": 1, "memory": "2Ki"},
            {"pciBusID": "0000:3b:00.0", "minor": 2},
        ],
    }
    gpus = FakeDiscovery(path=write(tmp_path / "p.yaml", profile)).discover()
    assert [(g.pci_bus_id, g.minor, g.index) for g in gpus] == [("0000:3b:00.0", 2, 0), ("0000:af:00.0", 5, 1)]
    assert (gpus[1].uuid, gpus[1].numa_node, gpus[1].memory_bytes) == ("GPU-x", 1, 2048)
    assert (gpus[0].numa_node, gpus[0].memory_bytes) == (0, 1000)


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"gpus": [{"productName": "G", "memory": 1, "colour": "red"}]}, r"gpus\.0\.colour: Extra inputs"),
        ({"gpus": [], "extra": 1}, r"extra: Extra inputs"),
        ({"gpus": [{"productName": "G", "memory": "lots"}]}, r"gpus\.0\.memory: .*not a Kubernetes quantity"),
        ({"gpus": [{"productName": "G", "memory": 0}]}, r"gpus\.0\.memory: .*positive"),
        ({"gpus": [{"memory": "1Gi"}]}, r"gpus\.0: productName is required"),
        ({"gpus": [{"productName": "G", "memory": 1, "pciBusID": "nope"}]}, r"gpus\.0\.pciBusID: .*PCI bus id"),
        ({"gpus": [{"productName": "G", "memory": 1, "cudaComputeCapability": "7"}]}, r"cudaComputeCapability"),
        ({"gpus": [{"productName": "G", "memory": 1, "pcieRoot": "root0"}]}, r"pcieRoot"),
        ({"gpus": [{"productName": "G", "memory": 1, "count": 2, "minor": 1}]}, r"count > 1"),
        ({"gpus": [{"productName": "G", "memory": 1, "numaNode": -1}]}, r"gpus\.0\.numaNode"),
        ({"defaults": {"uuid": "GPU-1"}, "gpus": []}, r"defaults\.uuid: Extra inputs"),
        ({}, r"gpus: Field required"),
    ],
)
def test_schema_errors_name_file_and_field(tmp_path: Path, profile: dict, message: str) -> None:
    path = write(tmp_path / "broken.yaml", profile)
    with pytest.raises(DiscoveryError, match=message) as caught:
        FakeDiscovery(path=path)
    assert str(path) in str(caught.value)


def test_duplicates_are_refused() -> None:
    raw = {"gpus": [{"productName": "G", "memory": 1, "minor": 0}, {"productName": "G", "memory": 1, "minor": 0}]}
    with pytest.raises(DiscoveryError, match="two GPUs have minor 0"):
        profile_gpus(raw, "dup", source="dup")


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("gpus: [\n")
    with pytest.raises(DiscoveryError, match=r"bad\.yaml"):
        FakeDiscovery(path=path)


def test_unknown_profile_lists_builtins() -> None:
    with pytest.raises(DiscoveryError, match=r"no such file and not a built-in profile.*t4x2"):
        load_discovery("t4x3")


def test_file_is_reread_on_every_discover(tmp_path: Path) -> None:
    path = write(tmp_path / "live.yaml", {"gpus": [{"productName": "G", "memory": "1Gi"}]})
    discovery = load_discovery(str(path))
    assert len(discovery.discover()) == 1
    write(path, {"gpus": [{"productName": "G", "memory": "1Gi", "count": 3}]})
    assert len(discovery.discover()) == 3
    path.write_text("gpus: nope")
    with pytest.raises(DiscoveryError):
        discovery.discover()


def test_set_gpus_replaces_the_inventory() -> None:
    discovery = FakeDiscovery.from_profile("t4x2")
    one = GpuInfo(uuid="GPU-1", minor=4, index=0, name="G", memory_bytes=1 << 30, pci_bus_id="0000:02:00.0")
    discovery.set_gpus([one])
    assert discovery.discover() == [one]
    assert discovery.path is None
    with pytest.raises(DiscoveryError, match="two GPUs have minor 4"):
        discovery.set_gpus([one, one])
