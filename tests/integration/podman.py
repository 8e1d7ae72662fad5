"""Run a command in a real container with CDI devices, through rootful podman + runc.

Reusable by any integration test that writes CDI specs (the cdi library's, the kubelet plugin's).

Podman flags that this host needs, found by trying (podman 4.3, runc, no network, a VM without
CAP_SYS_RESOURCE):
  --runtime runc          crun fails on this host.
  --network none          there is no network; also skips netavark/CNI setup.
  --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
                          rootful podman raises RLIMIT_NOFILE/RLIMIT_NPROC above the host's hard
                          limits, which needs CAP_SYS_RESOURCE: runc fails with "error setting
                          rlimit type 7 (then 6): operation not permitted". 1024 is below any
                          sane hard limit, so setting it never needs the capability.
  --rootfs DIR            a plain directory as the root filesystem: no image, no registry. It is a
                          boolean flag: DIR is the positional argument in the image's place, after
                          every other option (podman reads what follows as the command).
  --device <vendor/class=name>
                          podman resolves fully-qualified CDI ids from /etc/cdi and /var/run/cdi.
                          Podman 4.3 only loads specs with cdiVersion <= 0.5.0.
"""

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

CDI_DIR = Path("/var/run/cdi")
BUSYBOX = Path("/bin/busybox")
PODMAN_FLAGS: tuple[str, ...] = (
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


def _is_static(binary: Path) -> bool:
    # A dynamic busybox would need the host's libc inside the bare rootfs.
    if shutil.which("ldd") is None:
        return True  # cannot tell; let podman's error say so
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    return "not a dynamic executable" in out.stdout + out.stderr or "statically linked" in out.stdout


def podman_skip_reason() -> str | None:
    """Why podman cannot run here at all, or None. An installed podman that fails is not a skip."""
    if os.geteuid() != 0:
        return "needs root: rootful podman and writing /var/run/cdi"
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install podman runc busybox-static)"
    if not BUSYBOX.is_file() or not _is_static(BUSYBOX):
        return f"no static {BUSYBOX} for the container rootfs (apt-get install busybox-static)"
    return None


def make_busybox_rootfs(root: Path) -> Path:
    """A minimal root filesystem: a static busybox and a symlink per applet in /bin."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (root / "etc").mkdir(exist_ok=True)
    shutil.copy2(BUSYBOX, bin_dir / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout
    for applet in applets.split():
        link = bin_dir / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    return root


def run_with_cdi(
    device_ids: Sequence[str], argv: Sequence[str], rootfs: Path, *, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a container on ``rootfs`` with the CDI devices; the caller checks the result."""
    cmd = ["podman", "run", *PODMAN_FLAGS]
    for device_id in device_ids:
        cmd += ["--device", device_id]
    cmd += ["--rootfs", str(rootfs), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
