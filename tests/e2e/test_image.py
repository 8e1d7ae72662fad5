"""The shipped image (tests/e2e/build_image.sh: the Dockerfile on a Debian-made base, under podman) runs.

Every command runs in the image exactly as exported (loaded from its OCI archive into a store of the test's own),
as the chart runs it: the controller and webhook as uid 65532 with a read-only root filesystem, the kubelet
plugin's init container as root.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from shipped_image import BuiltImage, PodmanStore, build

pytestmark = pytest.mark.e2e

NON_ROOT = ("--user", "65532:65532", "--read-only")  # the chart's controller/webhook securityContext


@pytest.fixture(scope="module")
def image() -> BuiltImage:
    if os.geteuid() != 0:
        pytest.fail("building and running the image needs root (rootful podman)", pytrace=False)
    return build()


@pytest.fixture(scope="module")
def store(image: BuiltImage, tmp_path_factory: pytest.TempPathFactory):
    s = PodmanStore(tmp_path_factory.mktemp("podman-image"))
    try:
        s.load(image)
        yield s
    finally:
        s.cleanup()


def _ok(proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def test_archive_names_the_chart_default_image(image: BuiltImage, store: PodmanStore) -> None:
    assert image.archive.is_file()
    # The chart's default values pull `dra-hami:<appVersion>`, which containerd reads as docker.io/library/...
    appversion = next(
        line.split('"')[1]
        for line in (Path(__file__).parents[2] / "charts/dra-hami/Chart.yaml").read_text().splitlines()
        if line.startswith("appVersion:")
    )
    assert image.ref == f"docker.io/library/dra-hami:{appversion}"
    listed = _ok(store.podman("images", "--format", "{{.Repository}}:{{.Tag}}"))
    assert image.ref in listed.split(), listed


@pytest.mark.parametrize("argv", [["--help"], ["install-libvgpu", "--help"], ["controller", "--help"]])
def test_cli_runs_as_non_root_on_a_read_only_root(image: BuiltImage, store: PodmanStore, argv: list[str]) -> None:
    out = _ok(store.run(image.ref, ["dra-hami", *argv], flags=NON_ROOT))
    assert "Usage: dra-hami" in out, out


def test_default_entrypoint_and_user(image: BuiltImage, store: PodmanStore) -> None:
    # No command: the ENTRYPOINT (`dra-hami`) with its CMD (`--help`).
    assert "Usage: dra-hami" in _ok(store.run(image.ref, None))
    # The uid the chart gives the controller/webhook is really what the process gets.
    ids = _ok(store.run(image.ref, ["python3", "-c", "import os; print(os.getuid(), os.getgid())"], flags=NON_ROOT))
    assert ids.split() == ["65532", "65532"]


def test_install_libvgpu_copies_the_image_library(image: BuiltImage, store: PodmanStore, tmp_path: Path) -> None:
    # What the DaemonSet's init container does, into a host directory mounted like the chart's vgpu-dir.
    dest = tmp_path / "vgpu"
    dest.mkdir()
    _ok(
        store.run(
            image.ref, ["dra-hami", "install-libvgpu", "--dest", "/host-vgpu"], flags=("--volume", f"{dest}:/host-vgpu")
        )
    )
    installed = dest / "libvgpu.so"
    assert installed.is_file()
    in_image = _ok(store.run(image.ref, ["sha256sum", "/opt/dra-hami/lib/libvgpu.so"]))
    assert in_image.split()[0] == hashlib.sha256(installed.read_bytes()).hexdigest()
    # A real ELF shared object built for this architecture, not an empty placeholder.
    assert installed.read_bytes()[:4] == b"\x7fELF" and installed.stat().st_size > 10_000
