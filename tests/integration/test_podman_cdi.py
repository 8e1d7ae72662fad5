"""The cdi library's specs, applied by a real runtime: podman + runc read /var/run/cdi."""

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from podman import CDI_DIR, make_busybox_rootfs, podman_skip_reason, run_with_cdi

import cdi

pytestmark = pytest.mark.podman

PRELOAD = "/usr/local/vgpu/libvgpu.so\n"


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = podman_skip_reason()
    if reason:
        pytest.skip(reason)
    return make_busybox_rootfs(tmp_path_factory.mktemp("rootfs"))


@pytest.fixture(scope="module")
def host_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("host")
    preload = base / "ld.so.preload"
    preload.write_text(PRELOAD)
    shared = base / "claim-dir"
    shared.mkdir()
    return {"preload": preload, "shared": shared}


@pytest.fixture(scope="module")
def device_ids(rootfs: Path, host_files: dict[str, Path]) -> Iterator[dict[str, str]]:
    """Write one spec with two devices under a kind nobody else uses; remove it afterwards."""
    kind = f"k8s.test-{secrets.token_hex(4)}.example/claim"
    # A name starting with a digit (like a claim UID) needs cdiVersion 0.5.0, podman 4.3's newest.
    gpu = cdi.Device(
        name=f"{secrets.randbelow(10)}{secrets.token_hex(4)}-gpu0",
        container_edits=cdi.ContainerEdits(
            env=["CUDA_DEVICE_MEMORY_LIMIT_0=1024m", "CUDA_DEVICE_SM_LIMIT_0=30"],
            mounts=[
                cdi.Mount(
                    host_path=str(host_files["preload"]),
                    container_path="/etc/ld.so.preload",
                    options=["ro", "nosuid", "nodev", "bind"],
                ),
                cdi.Mount(
                    host_path=str(host_files["shared"]),
                    container_path="/var/lib/vgpu",
                    options=["rw", "nosuid", "nodev", "noexec", "bind"],
                ),
            ],
        ),
    )
    other = cdi.Device(name="other", container_edits=cdi.ContainerEdits(env=["OTHER_DEVICE=1"]))
    spec = cdi.build_spec(kind, [gpu, other], container_edits=cdi.ContainerEdits(env=["CUDA_DEVICE_ORDER=PCI_BUS_ID"]))
    assert spec.cdi_version == "0.5.0"
    path = cdi.write_spec(CDI_DIR, spec, "test-claim")
    try:
        yield {"gpu": cdi.qualified_name(kind, gpu.name), "other": cdi.qualified_name(kind, other.name)}
    finally:
        cdi.remove_spec(CDI_DIR, path)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"podman exited {proc.returncode}\nstderr:\n{proc.stderr}\nstdout:\n{proc.stdout}"
    return proc.stdout


def test_env_from_device_and_spec(rootfs: Path, device_ids: dict[str, str]) -> None:
    env = _ok(run_with_cdi([device_ids["gpu"]], ["env"], rootfs)).splitlines()
    assert "CUDA_DEVICE_MEMORY_LIMIT_0=1024m" in env
    assert "CUDA_DEVICE_SM_LIMIT_0=30" in env
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in env  # spec-level edits apply with any of its devices
    assert "OTHER_DEVICE=1" not in env


def test_two_devices(rootfs: Path, device_ids: dict[str, str]) -> None:
    env = _ok(run_with_cdi([device_ids["gpu"], device_ids["other"]], ["env"], rootfs)).splitlines()
    assert {"CUDA_DEVICE_SM_LIMIT_0=30", "OTHER_DEVICE=1"} <= set(env)


def test_read_only_preload_mount(rootfs: Path, device_ids: dict[str, str]) -> None:
    assert _ok(run_with_cdi([device_ids["gpu"]], ["cat", "/etc/ld.so.preload"], rootfs)) == PRELOAD
    proc = run_with_cdi([device_ids["gpu"]], ["sh", "-c", "echo x > /etc/ld.so.preload"], rootfs)
    assert proc.returncode != 0
    assert "Read-only file system" in proc.stderr


def test_read_write_directory_mount(rootfs: Path, device_ids: dict[str, str], host_files: dict[str, Path]) -> None:
    _ok(run_with_cdi([device_ids["gpu"]], ["sh", "-c", "echo hello > /var/lib/vgpu/vgpu.cache"], rootfs))
    assert (host_files["shared"] / "vgpu.cache").read_text() == "hello\n"


def test_unknown_device_is_refused(rootfs: Path, device_ids: dict[str, str]) -> None:
    kind = cdi.parse_qualified_name(device_ids["gpu"]).kind
    proc = run_with_cdi([cdi.qualified_name(kind, "missing")], ["true"], rootfs)
    assert proc.returncode != 0
    assert "missing" in proc.stderr


def test_spec_removed_then_unresolvable(rootfs: Path) -> None:
    kind = f"k8s.test-{secrets.token_hex(4)}.example/claim"
    spec = cdi.build_spec(kind, [cdi.Device(name="dev", container_edits=cdi.ContainerEdits(env=["A=1"]))])
    path = cdi.write_spec(CDI_DIR, spec, "gone")
    try:
        assert "A=1" in _ok(run_with_cdi([cdi.qualified_name(kind, "dev")], ["env"], rootfs)).splitlines()
    finally:
        assert cdi.remove_spec(CDI_DIR, path)
    proc = run_with_cdi([cdi.qualified_name(kind, "dev")], ["true"], rootfs)
    assert proc.returncode != 0
    assert "unresolvable CDI devices" in proc.stderr
