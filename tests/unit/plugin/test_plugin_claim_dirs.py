"""Claim directories that cannot hurt the host: 0700 claims root, one bounded nosuid,nodev,noexec tmpfs per claim.

The mount tests need root with CAP_SYS_ADMIN (probed) and are skipped otherwise; every one unmounts what it mounted.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from plugin_factories import DRIVER, NODE, claim, result
from test_plugin_state import Api, Specs

from dra_hami.plugin import claim_dirs as cd
from dra_hami.plugin.cdi_spec import CdiSettings
from dra_hami.plugin.checkpoint import Checkpoint
from dra_hami.plugin.claim_dirs import ClaimDirError, ClaimDirs
from dra_hami.plugin.state import PluginState


def can_mount() -> bool:
    """Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN), probed, not guessed from the UID."""
    with tempfile.TemporaryDirectory() as d:
        try:
            cd._mount_tmpfs(Path(d), 0, "size=64k")
        except OSError:
            return False
        cd._umount(Path(d), 0)
        return True


def can_mknod() -> bool:
    """Whether this process may create device nodes (CAP_MKNOD)."""
    with tempfile.TemporaryDirectory() as d:
        try:
            os.mknod(Path(d) / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        except OSError:
            return False
        return True


needs_root = pytest.mark.skipif(
    not can_mount() or not can_mknod(), reason="needs root with CAP_SYS_ADMIN and CAP_MKNOD (mounts, device nodes)"
)
NOBODY = 65534


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(str(path))]


@pytest.fixture
def dirs(tmp_path: Path):
    root = tmp_path / "vgpu" / "claims"
    yield ClaimDirs(root, "tmpfs", 512 << 10)
    for point in sorted(mounts_under(tmp_path), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


@needs_root
def test_claims_root_is_0700_and_each_claim_a_bounded_inert_tmpfs(dirs: ClaimDirs) -> None:
    dirs.root.mkdir(parents=True, mode=0o755)  # left by an older version
    path = dirs.create("uid-1")
    st = os.stat(dirs.root)
    assert stat.S_IMODE(st.st_mode) == 0o700 and (st.st_uid, st.st_gid) == (0, 0)
    assert os.path.ismount(path) and stat.S_IMODE(path.stat().st_mode) == 0o777
    flags = os.statvfs(path).f_flag
    assert flags & os.ST_NOSUID and flags & os.ST_NODEV and flags & os.ST_NOEXEC
    assert dirs.intact("uid-1")


@needs_root
def test_a_tenant_cannot_fill_the_host_disk(dirs: ClaimDirs) -> None:
    path = dirs.create("uid-1")
    with pytest.raises(OSError) as caught, open(path / "fill", "wb") as f:
        for _ in range(64):
            f.write(b"\0" * (64 << 10))
            f.flush()
    assert caught.value.errno == errno.ENOSPC  # stopped at 512Ki; the host filesystem never saw a byte
    with pytest.raises(OSError) as caught:
        for i in range(cd.MAX_INODES + 1):
            (path / f"i{i}").mkdir()  # inodes are bounded too
    assert caught.value.errno == errno.ENOSPC


@needs_root
def test_setuid_binaries_and_device_nodes_planted_in_a_claim_are_inert(dirs: ClaimDirs, tmp_path: Path) -> None:
    path = dirs.create("uid-1")
    planted = path / "rootshell"
    shutil.copy("/bin/true", planted)
    os.chmod(planted, 0o4755)  # setuid root, as container root could make it
    with pytest.raises(PermissionError):
        subprocess.run([str(planted)], check=False)  # noexec: not even runnable
    os.mknod(path / "mem", 0o666 | stat.S_IFCHR, os.makedev(1, 1))  # /dev/mem's numbers
    with pytest.raises(PermissionError):
        open(path / "mem", "rb").close()  # nodev: the node opens no device
    # Control: the same plant on an ordinary directory would have worked.
    control = tmp_path / "control"
    control.mkdir()
    os.mknod(control / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    open(control / "null", "rb").close()


@needs_root
def test_processes_of_any_uid_share_the_region(dirs: ClaimDirs) -> None:
    path = dirs.create("uid-1")
    region = path / "vgpu.cache"
    fd = os.open(region, os.O_RDWR | os.O_CREAT, 0o666)
    os.fchmod(fd, 0o666)  # what libvgpu does after creating it
    os.close(fd)

    def as_nobody() -> None:
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    # What the runtime does: bind the claim directory into the container (the 0700 claims root and the
    # test's private tmp dir are not on the container's path).
    view = Path(tempfile.mkdtemp(prefix="claim-view-"))
    view.chmod(0o755)
    subprocess.run(["mount", "--bind", str(path), str(view)], check=True)
    try:
        script = f"open({str(view / 'vgpu.cache')!r}, 'r+b').write(b'x'); open({str(view / 'mine')!r}, 'w').write('y')"
        done = subprocess.run(["python3", "-c", script], preexec_fn=as_nobody, capture_output=True, text=True)
    finally:
        subprocess.run(["umount", str(view)], check=True)
        view.rmdir()
    assert done.returncode == 0, done.stderr
    assert (path / "mine").stat().st_uid == NOBODY and region.read_bytes() == b"x"


@needs_root
def test_removal_unmounts_even_a_busy_or_stacked_tmpfs(dirs: ClaimDirs) -> None:
    path = dirs.create("uid-1")
    cd._mount_tmpfs(path, 0, "size=64k")  # a second mount on top (a crash between mount and checkpoint)
    held = os.open(path / ".", os.O_RDONLY)  # a process still inside it
    try:
        dirs.remove("uid-1")
    finally:
        os.close(held)
    assert not path.exists() and mounts_under(dirs.root) == []


@needs_root
def test_prepare_mounts_and_unprepare_unmounts(dirs: ClaimDirs, tmp_path: Path, devices) -> None:
    api, specs = Api(), Specs()
    (tmp_path / "libvgpu.so").write_bytes(b"lib")
    settings = CdiSettings(DRIVER, tmp_path / "vgpu", tmp_path / "libvgpu.so", injection="none")

    def make(boot: str) -> PluginState:
        cp = Checkpoint(tmp_path / "cp.json")
        return PluginState(api, NODE, lambda: devices, settings, specs, cp, boot, claim_dirs=dirs)

    ref = api.add(claim([result()]))
    state = make("boot-1")
    assert state.prepare([ref])[ref.uid].error == ""
    path = settings.claim_dir(ref.uid)
    assert os.path.ismount(path) and settings.limits_file(ref.uid).is_file()
    # A reboot wipes every tmpfs: the repeated prepare mounts a fresh one.
    subprocess.run(["umount", str(path)], check=True)
    state = make("boot-2")
    assert state.prepare([ref])[ref.uid].error == ""
    assert os.path.ismount(path) and settings.limits_file(ref.uid).is_file()
    assert state.unprepare([ref]) == {ref.uid: ""}
    assert not path.exists() and mounts_under(tmp_path) == []
    assert not settings.limits_file(ref.uid).exists()


def test_without_mount_rights_prepare_fails_and_says_what_to_do(tmp_path: Path, devices, monkeypatch) -> None:
    def refused(path: Path, flags: int, options: str) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM), str(path))

    monkeypatch.setattr(cd, "_mount_tmpfs", refused)
    api, specs = Api(), Specs()
    (tmp_path / "libvgpu.so").write_bytes(b"lib")
    settings = CdiSettings(DRIVER, tmp_path / "vgpu", tmp_path / "libvgpu.so", injection="none")
    dirs = ClaimDirs(settings.vgpu_dir / "claims", "tmpfs")
    state = PluginState(
        api, NODE, lambda: devices, settings, specs, Checkpoint(tmp_path / "cp.json"), "b", claim_dirs=dirs
    )
    ref = api.add(claim([result()]))
    error = state.prepare([ref])[ref.uid].error
    assert "Operation not permitted" in error and "CAP_SYS_ADMIN" in error and "--claim-dir-storage" in error
    assert state.records() == {} and specs.files == {} and dirs.names() == []  # nothing half-made is left
    with pytest.raises(ClaimDirError):
        dirs.create("uid-x")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="storage 'disk'"):
        ClaimDirs(Path("/x"), "disk")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 256Ki"):
        ClaimDirs(Path("/x"), "tmpfs", 4096)
