"""Test images without a registry: OCI image-layout tarballs written from directories, imported into containerd.

An image is one uncompressed layer (a tar of a root directory) plus an OCI config; ``oci_archive`` writes the
OCI layout (``oci-layout``, ``index.json``, ``blobs/sha256/...``) as a tar that ``ctr images import`` reads.
The tars are reproducible (sorted entries, fixed mtimes and owners), so re-importing an unchanged image is a no-op.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_PREFIX = "localhost/dra-hami-e2e"
BUSYBOX_IMAGE = f"{IMAGE_PREFIX}/busybox:1"
PAUSE_IMAGE = f"{IMAGE_PREFIX}/pause:1"

_MTIME = 946684800  # 2000-01-01, any fixed value


@dataclass
class ImageSpec:
    """An image to build: ``rootfs`` is copied into the single layer as is (symlinks kept)."""

    name: str  # full reference, e.g. localhost/dra-hami-e2e/busybox:1 (never ":latest": the kubelet would pull)
    rootfs: Path
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(
        default_factory=lambda: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    )
    workdir: str = "/"


def _blob(blobs: dict[str, bytes], data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return digest


def layer_tar(rootfs: Path) -> bytes:
    """A deterministic tar of ``rootfs`` (relative paths, root-owned, fixed mtime)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = sorted(rootfs.rglob("*"), key=lambda p: p.relative_to(rootfs).as_posix())
        for path in paths:
            info = tar.gettarinfo(str(path), arcname=path.relative_to(rootfs).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = _MTIME
            if info.isreg():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def oci_archive(spec: ImageSpec, out: Path) -> Path:
    """Write ``spec`` as an OCI image-layout tar at ``out``."""
    blobs: dict[str, bytes] = {}
    layer = layer_tar(spec.rootfs)
    layer_digest = _blob(blobs, layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": spec.env, "Entrypoint": spec.entrypoint or None, "Cmd": spec.cmd or None},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},  # uncompressed: diff id == layer digest
        "history": [{"created": "2000-01-01T00:00:00Z", "created_by": "dra-hami tests/e2e/e2e_images.py"}],
    }
    if spec.workdir:
        config["config"]["WorkingDir"] = spec.workdir
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = _blob(blobs, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer)}],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = _blob(blobs, manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": spec.name,
                    "org.opencontainers.image.ref.name": spec.name.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index).encode(),
    }
    for digest, data in blobs.items():
        files[f"blobs/sha256/{digest.split(':', 1)[1]}"] = data
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, mode="w") as tar:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, _MTIME
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, _MTIME
            tar.addfile(info, io.BytesIO(data))
    return out


def busybox_rootfs(busybox: Path, dest: Path) -> Path:
    """A root with a static busybox at /bin/busybox and a symlink per applet (sh, env, sleep, cat, ...)."""
    if dest.exists():
        shutil.rmtree(dest)
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "var/run"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)
    shutil.copy2(os.path.realpath(busybox), dest / "bin" / "busybox")
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (dest / "bin" / applet).symlink_to("busybox")
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return dest


# The sandbox ("pause") container: PID 1 must exit on SIGTERM, and wait forever otherwise.
PAUSE_ENTRYPOINT = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]


class ImageStore:
    """Builds OCI archives under ``work_dir`` and imports them into containerd's ``k8s.io`` namespace."""

    def __init__(self, ctr: Path, address: Path, snapshotter: str, work_dir: Path, busybox: Path) -> None:
        self.ctr, self.address, self.snapshotter, self.work_dir = ctr, address, snapshotter, work_dir
        self.busybox = busybox
        self.imported: dict[str, Path] = {}

    def add_busybox_based(self, name: str, files: dict[str, Path], **spec: object) -> str:
        """Import busybox plus ``files`` ({path in the image: host file}, e.g. a CUDA test program and a fake
        libcuda.so.1); ``spec`` goes to ImageSpec (entrypoint, cmd, env, workdir)."""
        rootfs = busybox_rootfs(self.busybox, self.work_dir / (name.replace("/", "_").replace(":", "_") + "-rootfs"))
        for dest, src in files.items():
            target = rootfs / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
        return self.add(ImageSpec(name, rootfs, **spec))  # type: ignore[arg-type]

    def add(self, spec: ImageSpec) -> str:
        """Build and import ``spec``; returns its reference."""
        safe = spec.name.replace("/", "_").replace(":", "_")
        archive = oci_archive(spec, self.work_dir / f"{safe}.oci.tar")
        cmd = [str(self.ctr), "--address", str(self.address), "--namespace", "k8s.io", "images", "import"]
        cmd += ["--snapshotter", self.snapshotter, "--platform", "linux/amd64", str(archive)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"ctr images import {spec.name} failed ({proc.returncode}): {proc.stderr.strip()}")
        self.imported[spec.name] = archive
        return spec.name

    def list(self) -> list[str]:
        cmd = [str(self.ctr), "--address", str(self.address), "--namespace", "k8s.io", "images", "ls", "-q"]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout.split()


def shared_libraries(*binaries: Path, exclude: Path | None = None) -> dict[str, Path]:
    """{path in the image: host file} for what the dynamic loader maps for ``binaries`` (per ``ldd``), at the same
    paths as on the host; libraries under ``exclude`` (e.g. a fake driver shipped elsewhere) are left out."""
    files: dict[str, Path] = {}
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            path = parts[2] if len(parts) >= 3 and parts[1] == "=>" else parts[0]
            if not path.startswith("/"):
                continue  # linux-vdso.so.1, or "not found"
            if exclude is not None and Path(path).resolve().is_relative_to(exclude.resolve()):
                continue
            files[path] = Path(path)
    return files
