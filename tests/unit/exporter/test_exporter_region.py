"""The region reader: values, and refusal of regions caught mid-write or of another layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from exporter_fixtures import DeviceRecord, GiB, RegionContent, write_region

from dra_hami.exporter import region as r

UUID_A = "GPU-3f2a61b0-0000-4000-8000-000000000001"
UUID_B = "GPU-3f2a61b0-0000-4000-8000-000000000002"


def test_reads_devices_and_processes(tmp_path: Path) -> None:
    path = tmp_path / "vgpu.cache"
    write_region(
        path,
        RegionContent(
            [
                DeviceRecord(UUID_A, used=3 * GiB, limit=4 * GiB, sm_limit=30, peak=3 * GiB + 5, util=27),
                DeviceRecord(UUID_B, used=1, limit=None),
            ],
            processes=3,
        ),
    )
    snap = r.read_region(path)
    assert snap is not None
    assert snap.processes == 3
    a = snap.device(UUID_A.lower().removeprefix("gpu-"))  # libvgpu's UUID equality
    assert a == r.RegionDevice(UUID_A, 3 * GiB, 4 * GiB, 30, 3 * GiB + 5, 27)
    b = snap.device(UUID_B)
    assert b is not None and b.limit is None and b.used == 1
    assert snap.device("GPU-other") is None


def test_missing_file_is_no_region(tmp_path: Path) -> None:
    assert r.read_region(tmp_path / "absent") is None


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (RegionContent(magic=0), r.RegionNotReady),
        (RegionContent([DeviceRecord("")], device_count=1), r.RegionNotReady),
        (RegionContent(magic=0x1234), r.RegionError),
        (RegionContent(version=r.VERSION + 1), r.RegionError),
    ],
)
def test_refuses_unready_or_foreign_regions(tmp_path: Path, content: RegionContent, error: type) -> None:
    path = tmp_path / "vgpu.cache"
    write_region(path, content)
    with pytest.raises(error):
        r.read_region(path)


def test_empty_file_is_not_ready_and_truncated_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "vgpu.cache"
    path.write_bytes(b"")
    with pytest.raises(r.RegionNotReady):
        r.read_region(path)
    path.write_bytes(b"\x01" * 100)
    with pytest.raises(r.RegionError, match="shorter"):
        r.read_region(path)


def test_utilization_is_clamped_and_device_count_bounded(tmp_path: Path) -> None:
    path = tmp_path / "vgpu.cache"
    write_region(path, RegionContent([DeviceRecord(UUID_A, util=250)], device_count=1))
    snap = r.read_region(path)
    assert snap is not None and snap.devices[0].util == 100
    write_region(path, RegionContent([DeviceRecord(UUID_A)], device_count=99))  # torn count: capped, then empty
    with pytest.raises(r.RegionNotReady):
        r.read_region(path)
