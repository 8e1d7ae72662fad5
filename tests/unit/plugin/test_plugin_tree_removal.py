"""Claim-directory removal against what a hostile tenant can leave in its claim directory."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_plugin_claim_dirs import can_mknod, can_mount

from dra_hami.plugin.claim_dirs import TRASH_PREFIX, ClaimDirs
from dra_hami.plugin.tree_removal import MAX_OPEN_DIRS, TreeRemovalError, remove_tree


def deep_tree(top: Path, depth: int) -> None:
    """A chain of ``depth`` directories, built with descriptors (the path gets far longer than PATH_MAX)."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(depth):
            os.mkdir("d", dir_fd=fd)
            if i % 100 == 0:
                os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_1200_deep_tree_that_breaks_rmtree_is_removed(tmp_path: Path) -> None:
    # Python's default recursion limit, as the plugin process has it: importing celpy (any CEL test earlier in
    # the same pytest run) raises it to 2500, deep enough for rmtree to get through 1200 levels.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        _deep_tree_case(tmp_path)
    finally:
        sys.setrecursionlimit(limit)


def _deep_tree_case(tmp_path: Path) -> None:
    if sys.version_info < (3, 13):  # the image's Python; 3.13's rmtree walks without recursing
        witness = tmp_path / "witness"
        deep_tree(witness, 1200)
        with pytest.raises(RecursionError):
            shutil.rmtree(witness, ignore_errors=True)  # the attack, as seen: the unprepare handler missed it
        remove_tree(witness)
        assert not witness.exists()
    claim = tmp_path / "claim"
    deep_tree(claim, 1200)
    before = open_fds()
    remove_tree(claim)
    assert not claim.exists() and os.listdir(tmp_path) == []
    assert open_fds() == before  # every descriptor closed, at most MAX_OPEN_DIRS held on the way
    assert MAX_OPEN_DIRS < 1200


def test_links_are_removed_never_followed(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "shadow").write_text("secret")
    (host / "sub").mkdir()
    (host / "sub" / "keep").write_text("x")
    claim = tmp_path / "claim"
    (claim / "a").mkdir(parents=True)
    (claim / "to-file").symlink_to(host / "shadow")
    (claim / "to-dir").symlink_to(host / "sub")
    (claim / "a" / "to-root").symlink_to("/")
    os.link(host / "shadow", claim / "hardlink")
    remove_tree(claim)
    assert not claim.exists()
    assert (host / "shadow").read_text() == "secret" and (host / "sub" / "keep").read_text() == "x"


def test_fifos_sockets_and_permissionless_dirs_do_not_stop_it(tmp_path: Path) -> None:
    claim = tmp_path / "claim"
    (claim / "ro" / "inner").mkdir(parents=True)
    (claim / "ro" / "inner" / "f").write_text("x")
    os.mkfifo(claim / "vgpu.cache")  # opening it for reading would block forever
    os.mkfifo(claim / "ro" / "inner" / "fifo")
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(claim / "sock"))
    (claim / "ro" / "inner").chmod(0o000)
    (claim / "ro").chmod(0o500)
    remove_tree(claim)
    assert not claim.exists()


@pytest.mark.skipif(not can_mknod(), reason="device nodes need CAP_MKNOD")
def test_device_nodes_are_removed(tmp_path: Path) -> None:
    claim = tmp_path / "claim"
    claim.mkdir()
    os.mknod(claim / "mem", 0o666 | stat.S_IFCHR, os.makedev(1, 1))  # /dev/mem's numbers
    remove_tree(claim)
    assert not claim.exists()


def test_a_missing_path_and_a_plain_file(tmp_path: Path) -> None:
    remove_tree(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    remove_tree(tmp_path / "file")
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not can_mount(), reason="a mount point inside the tree needs CAP_SYS_ADMIN")
def test_what_cannot_be_removed_is_named_and_the_rest_goes(tmp_path: Path) -> None:
    import subprocess

    claim = tmp_path / "claim"
    (claim / "busy").mkdir(parents=True)
    (claim / "other" / "deep").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(claim / "busy")], check=True)
    try:
        with pytest.raises(TreeRemovalError) as caught:
            remove_tree(claim)
        assert "claim/busy" in str(caught.value) and "busy" in str(caught.value).lower()
        assert os.listdir(claim) == ["busy"]
    finally:
        subprocess.run(["umount", str(claim / "busy")], check=True)
    remove_tree(claim)
    assert not claim.exists()


def test_claim_dirs_move_leftovers_aside_so_the_claim_is_free(tmp_path: Path, monkeypatch) -> None:
    dirs = ClaimDirs(tmp_path / "claims")
    path = dirs.create("uid-1")
    (path / "junk").write_text("x")
    real = remove_tree

    def stubborn(target: Path) -> None:
        if target.name == "uid-1":
            raise TreeRemovalError(39, f"cannot remove everything under {target}: junk: Operation not permitted")
        real(target)

    monkeypatch.setattr("dra_hami.plugin.claim_dirs.remove_tree", stubborn)
    dirs.remove("uid-1")
    names = dirs.names()
    assert len(names) == 1 and names[0].startswith(f"{TRASH_PREFIX}uid-1-")
    assert (dirs.root / names[0] / "junk").read_text() == "x"
    monkeypatch.setattr("dra_hami.plugin.claim_dirs.remove_tree", real)
    dirs.remove(names[0])
    assert dirs.names() == []


def test_unprepare_succeeds_whatever_the_tenant_left(tmp_path: Path, devices) -> None:
    from plugin_factories import DRIVER, NODE, claim, result
    from test_plugin_state import Api, Specs

    from dra_hami.plugin.cdi_spec import CdiSettings
    from dra_hami.plugin.checkpoint import Checkpoint
    from dra_hami.plugin.state import PluginState

    api, specs = Api(), Specs()
    (tmp_path / "libvgpu.so").write_bytes(b"lib")
    settings = CdiSettings(DRIVER, tmp_path / "vgpu", tmp_path / "libvgpu.so", injection="none")
    state = PluginState(api, NODE, lambda: devices, settings, specs, Checkpoint(tmp_path / "cp.json"), "boot")
    refs = [api.add(claim([result()], name=f"c{i}", uid=f"uid-{i}")) for i in range(2)]
    assert all(not r.error for r in state.prepare(refs).values())
    deep_tree(settings.claim_dir(refs[0].uid) / "tree", 1200)
    os.mkfifo(settings.claim_dir(refs[1].uid) / "fifo")
    (settings.claim_dir(refs[1].uid) / "etc").symlink_to("/etc")
    orphan = settings.claim_dir("orphan")
    deep_tree(orphan, 1200)

    assert state.unprepare(refs) == {refs[0].uid: "", refs[1].uid: ""}
    assert not settings.claim_dir(refs[0].uid).exists() and not settings.claim_dir(refs[1].uid).exists()
    assert specs.files == {} and state.records() == {}
    assert Path("/etc/hostname").exists() or Path("/etc/passwd").exists()
    assert state.sweep().orphan_dirs == ["orphan"] and not orphan.exists()


def can_chattr(where: Path) -> bool:
    probe = where / "chattr-probe"
    probe.touch()
    try:
        done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, check=False)
        return done.returncode == 0
    finally:
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True, check=False)
        probe.unlink()


def test_an_immutable_file_neither_stops_the_unprepare_nor_is_forgotten(tmp_path: Path, devices, caplog) -> None:
    """An immutable file (chattr +i: a tenant cannot set it, a host process could) makes removal fail: the
    claim's unprepare still succeeds, the leftovers are moved aside with the reason logged, and the sweep
    removes them once the file can go."""
    from plugin_factories import DRIVER, NODE, claim, result
    from test_plugin_state import Api, Specs

    from dra_hami.plugin.cdi_spec import CdiSettings
    from dra_hami.plugin.checkpoint import Checkpoint
    from dra_hami.plugin.state import PluginState

    if shutil.which("chattr") is None or not can_chattr(tmp_path):
        pytest.skip("chattr +i needs CAP_LINUX_IMMUTABLE and a filesystem that supports it")
    api, specs = Api(), Specs()
    (tmp_path / "libvgpu.so").write_bytes(b"lib")
    settings = CdiSettings(DRIVER, tmp_path / "vgpu", tmp_path / "libvgpu.so", injection="none")
    state = PluginState(api, NODE, lambda: devices, settings, specs, Checkpoint(tmp_path / "cp.json"), "boot")
    ref = api.add(claim([result()]))
    assert state.prepare([ref])[ref.uid].error == ""
    stuck = settings.claim_dir(ref.uid) / "deep" / "stuck"
    stuck.parent.mkdir()
    stuck.write_text("x")
    (settings.claim_dir(ref.uid) / "deep" / "other").write_text("y")
    subprocess.run(["chattr", "+i", str(stuck)], check=True)
    try:
        with caplog.at_level("ERROR"):
            assert state.unprepare([ref]) == {ref.uid: ""}
        assert not settings.claim_dir(ref.uid).exists() and state.records() == {}
        (aside,) = [p for p in (settings.vgpu_dir / "claims").iterdir()]
        assert aside.name.startswith(f".trash-{ref.uid}-")
        assert sorted(p.name for p in (aside / "deep").iterdir()) == ["stuck"]  # the rest went
        assert any("deep/stuck: Operation not permitted" in m for m in caplog.messages)
        assert state.sweep().orphan_dirs == []  # still stuck: logged again, kept
        assert aside.exists()
    finally:
        subprocess.run(["chattr", "-i", str(stuck if stuck.exists() else aside / "deep" / "stuck")], check=False)
    assert state.sweep().orphan_dirs == [aside.name] and not aside.exists()
