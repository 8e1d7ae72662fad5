"""What a tenant can plant in its claim directory must never hang, redirect or stall the exporter."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest
from exporter_fixtures import DeviceRecord, GiB, RegionContent, claim_record, save_checkpoint, write_region
from test_exporter_collector import G0, GPUS, Node, one

from dra_hami.exporter import region as r


@pytest.fixture
def node(tmp_path: Path):
    n = Node(tmp_path, api=None)
    yield n
    n.server.shutdown()
    n.server.server_close()


def claims(node: Node, count: int) -> list[Path]:
    save_checkpoint(
        node.plugin, [claim_record(f"uid-{i}", f"c{i}", [(G0.device_name, GiB, 0)], GPUS) for i in range(count)]
    )
    return [node.region(f"uid-{i}") for i in range(count)]


def test_a_fifo_region_neither_hangs_nor_leaks_threads(node: Node) -> None:
    fifo, good = claims(node, 2)
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)  # before: the exporter's open() blocked forever, holding the collector lock
    write_region(good, RegionContent([DeviceRecord(G0.uuid, used=7)], 1))
    threads = threading.active_count()
    for _ in range(6):
        s = node.scrape()  # urlopen's 10 s timeout fails the test if a scrape hangs
    deadline = time.monotonic() + 5
    while threading.active_count() > threads + 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # the handler thread of the last request may still be closing its socket
    assert threading.active_count() <= threads + 1  # before: one thread per scrape stayed blocked in open()
    assert one(s, "dra_hami_claim_region_readable", claim="c0") == 0
    assert one(s, "dra_hami_claim_region_readable", claim="c1") == 1
    assert one(s, "dra_hami_claim_memory_used_bytes", claim="c1") == 7  # the other tenants are unaffected
    assert one(s, "dra_hami_exporter_region_read_errors_total", reason="unsafe") == 6
    assert not [lab for lab, _ in s["dra_hami_claim_memory_used_bytes"] if lab["claim"] == "c0"]


def test_a_symlink_to_a_host_file_is_not_followed(node: Node, tmp_path: Path) -> None:
    (link,) = claims(node, 1)
    link.parent.mkdir(parents=True)
    foreign = tmp_path / "host-file"  # a valid region elsewhere: following the link would publish its numbers
    write_region(foreign, RegionContent([DeviceRecord(G0.uuid, used=123456)], 1))
    link.symlink_to(foreign)
    s = node.scrape()
    assert one(s, "dra_hami_claim_region_readable", claim="c0") == 0
    assert "dra_hami_claim_memory_used_bytes" not in s or not s["dra_hami_claim_memory_used_bytes"]
    assert one(s, "dra_hami_exporter_region_read_errors_total", reason="unsafe") == 1
    with pytest.raises(r.RegionUnsafe, match="symbolic link"):
        r.read_region(link)
    link.unlink()
    link.symlink_to("/etc/shadow" if Path("/etc/shadow").exists() else "/etc/passwd")
    with pytest.raises(r.RegionUnsafe, match="symbolic link"):
        r.read_region(link)


def test_hard_links_wrong_sizes_and_a_symlinked_claim_dir_are_refused(tmp_path: Path) -> None:
    region = tmp_path / "claim" / "vgpu.cache"
    write_region(region, RegionContent([DeviceRecord(G0.uuid, used=1)], 1))
    assert r.read_region(region) is not None
    os.link(region, tmp_path / "other-name")
    with pytest.raises(r.RegionUnsafe, match="2 hard links"):
        r.read_region(region)
    (tmp_path / "other-name").unlink()
    with open(region, "ab") as f:
        f.write(b"\0" * 4096)
    with pytest.raises(r.RegionError, match="not the size"):
        r.read_region(region)
    (tmp_path / "claim-link").symlink_to(tmp_path / "claim")
    with pytest.raises(r.RegionUnsafe, match="not a directory"):
        r.read_region(tmp_path / "claim-link" / "vgpu.cache")
    (tmp_path / "dir-region").mkdir()
    (tmp_path / "dir-region" / "vgpu.cache").mkdir()
    with pytest.raises(r.RegionUnsafe, match="a directory"):
        r.read_region(tmp_path / "dir-region" / "vgpu.cache")


def test_a_claim_dir_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    region = tmp_path / "claim" / "vgpu.cache"
    write_region(region, RegionContent([DeviceRecord(G0.uuid, used=1)], 1))
    assert r.read_region(region, dir_owner=os.geteuid()) is not None
    with pytest.raises(r.RegionUnsafe, match="owned by UID"):
        r.read_region(region, dir_owner=os.geteuid() + 1)


def can_mknod() -> bool:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        try:
            os.mknod(Path(d) / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        except OSError:
            return False
        return True


@pytest.mark.skipif(not can_mknod(), reason="device nodes need CAP_MKNOD")
def test_a_device_node_is_never_opened(tmp_path: Path) -> None:
    region = tmp_path / "claim" / "vgpu.cache"
    region.parent.mkdir()
    os.mknod(region, 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero: reading it "works" and never ends
    with pytest.raises(r.RegionUnsafe, match="character device"):
        r.read_region(region)
