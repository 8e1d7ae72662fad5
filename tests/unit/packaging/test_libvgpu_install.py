"""dra-hami install-libvgpu: copies only a changed library, atomically, and says clearly when there is none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from dra_hami.cli import main
from dra_hami.libvgpu_install import InstallError, install


def library(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_installs_then_skips_an_identical_library_then_replaces_a_changed_one(tmp_path: Path) -> None:
    dest = tmp_path / "host" / "vgpu"
    v1 = library(tmp_path / "v1.so", b"\x7fELF version one")
    assert install(dest, v1) is True
    target = dest / "libvgpu.so"
    assert target.read_bytes() == v1.read_bytes()
    assert os.stat(target).st_mode & 0o777 == 0o755
    inode = target.stat().st_ino
    assert install(dest, v1) is False  # same sha256: the file the containers map is left alone
    assert target.stat().st_ino == inode
    v2 = library(tmp_path / "v2.so", b"\x7fELF version two")
    assert install(dest, v2) is True
    assert target.read_bytes() == v2.read_bytes()
    assert target.stat().st_ino != inode  # renamed over, never rewritten in place
    assert [p.name for p in dest.iterdir()] == ["libvgpu.so"]  # no temporary file left


def test_a_missing_library_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="DRA_HAMI_LIBVGPU"):
        install(tmp_path / "dest", tmp_path / "absent.so")
    assert not (tmp_path / "dest").exists()


def test_command(tmp_path: Path) -> None:
    source = library(tmp_path / "lib.so", b"\x7fELF")
    runner = CliRunner()
    first = runner.invoke(main, ["install-libvgpu", "--dest", str(tmp_path / "d"), "--source", str(source)])
    assert first.exit_code == 0, first.output
    assert "installed" in first.output
    again = runner.invoke(main, ["install-libvgpu", "--dest", str(tmp_path / "d"), "--source", str(source)])
    assert "already up to date" in again.output
