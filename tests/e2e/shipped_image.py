"""The dra-hami image as users get it: built from the repository's Dockerfile by tests/e2e/build_image.sh.

``build()`` runs the script (a no-op when its cache is warm) and returns the OCI archive and the image
reference. ``PodmanStore`` loads that archive into a podman store of its own (so a test runs exactly the
exported artifact, never an image left in some other store) and runs commands in it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from netns import run_in_host

E2E_DIR = Path(__file__).resolve().parent

# Flags this host needs for rootful podman (see tests/integration/podman.py): crun fails here, and podman's
# default rlimits are above the hard ones (raising them needs CAP_SYS_RESOURCE, which the VM lacks).
RUN_FLAGS: tuple[str, ...] = (
    "--rm",
    "--runtime",
    "runc",
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
)


class ImageBuildError(RuntimeError):
    """build_image.sh failed: a harness failure, never a reason to skip."""


@dataclass(frozen=True)
class BuiltImage:
    archive: Path  # OCI archive (`ctr images import` and `podman load` read it)
    ref: str  # e.g. docker.io/library/dra-hami:0.1.0, what the chart's default values name


def build(timeout: float = 3600) -> BuiltImage:
    started = time.monotonic()
    # In the host's network namespace even while a test holds the cluster's: a cold build needs apt and pip.
    proc = run_in_host(
        ["bash", str(E2E_DIR / "build_image.sh")], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-60:])
        raise ImageBuildError(
            f"tests/e2e/build_image.sh failed with exit code {proc.returncode} after "
            f"{time.monotonic() - started:.0f} s:\n{tail}"
        )
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if "IMAGE_ARCHIVE" not in values or "IMAGE_REF" not in values:
        raise ImageBuildError(f"build_image.sh printed no IMAGE_ARCHIVE/IMAGE_REF lines:\n{proc.stdout}\n{proc.stderr}")
    sys.stderr.write(proc.stderr)
    return BuiltImage(Path(values["IMAGE_ARCHIVE"]), values["IMAGE_REF"])


class PodmanStore:
    """A throw-away podman store (root, runroot) under ``work_dir`` holding one loaded image."""

    def __init__(self, work_dir: Path) -> None:
        if shutil.which("podman") is None or shutil.which("runc") is None:
            raise ImageBuildError("podman and runc are needed (apt-get install podman runc)")
        self.work_dir = work_dir
        self.base = ["podman", "--root", str(work_dir / "root"), "--runroot", str(work_dir / "run")]

    def podman(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout, check=False)

    def load(self, image: BuiltImage) -> None:
        proc = self.podman("load", "--input", str(image.archive))
        if proc.returncode != 0:
            raise ImageBuildError(f"podman load {image.archive} failed: {proc.stderr.strip()}")

    def run(
        self, image: str, command: Sequence[str] | None, *, flags: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` (replacing the ENTRYPOINT, as a pod's ``command:`` does), or the image's default."""
        argv = ["--entrypoint", command[0], image, *command[1:]] if command else [image]
        return self.podman("run", *RUN_FLAGS, *flags, *argv, timeout=120)

    def cleanup(self) -> None:
        # Not `podman system reset`: that also drops the host's podman networks. Remove the images, then any
        # mount the overlay driver left below the store (its home is bind-mounted privately), then the files.
        self.podman("rmi", "--all", "--force", timeout=120)
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(f"{self.work_dir}/")), key=len, reverse=True):
            subprocess.run(["umount", "--lazy", mount], capture_output=True, check=False)
        shutil.rmtree(self.work_dir, ignore_errors=True)
