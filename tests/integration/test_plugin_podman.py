"""A spec the kubelet plugin prepared, applied by a real container runtime (podman + runc)."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest
from plugin_harness import PluginProcess, allocated_claim
from podman import CDI_DIR, make_busybox_rootfs, podman_skip_reason, run_with_cdi

from dra_hami.demo.apiserver import FakeApiServer
from dra_hami.plugin import claim_dirs

pytestmark = [
    pytest.mark.podman,
    pytest.mark.skipif(podman_skip_reason() is not None, reason=podman_skip_reason() or ""),
]


@pytest.fixture
def plugin(tmp_path):
    api = FakeApiServer().start()
    libvgpu = tmp_path / "libvgpu.so"
    libvgpu.write_bytes(b"static busybox never loads this")  # the mount must have a source
    driver = f"test-{uuid.uuid4().hex[:8]}.dra-hami.example"  # our own CDI kind in the shared /var/run/cdi
    process = PluginProcess(tmp_path, api, libvgpu=libvgpu, driver_name=driver, cdi_root=CDI_DIR).start()
    yield process, api, driver
    process.cleanup()
    api.stop()
    for leftover in CDI_DIR.glob(f"k8s.{driver}-*"):
        leftover.unlink()


def test_runtime_applies_env_preload_and_claim_dir(plugin, tmp_path):
    process, api, driver = plugin
    claim = allocated_claim("c1", memory="4Gi", cores="30")
    claim["status"]["allocation"]["devices"]["results"][0]["driver"] = driver
    api.put("resourceclaims", claim)
    uid = claim["metadata"]["uid"]
    entry = process.prepare([claim]).claims[uid]
    assert entry.error == ""
    (device,) = entry.devices
    rootfs = make_busybox_rootfs(tmp_path / "rootfs")
    limits = f"/usr/local/vgpu/limits/{uid}"
    script = (
        f"env; echo preload=$(cat /etc/ld.so.preload); echo hi > /usr/local/vgpu/claims/{uid}/probe; "
        # issue 18: the claim's limits file is there, read-only, and cannot be replaced or rewritten
        f"sed 's/^/limits: /' {limits}; "
        f"if echo x >> {limits} 2>/dev/null; then echo limits_write=ok; else echo limits_write=refused; fi; "
        f"if rm -f {limits} 2>/dev/null && [ ! -e {limits} ]; then echo limits_rm=ok; else echo limits_rm=refused; fi; "
        f"grep ' {limits} ' /proc/self/mountinfo | sed 's/^/mountinfo: /'"
    )
    result = run_with_cdi(list(device.cdi_device_ids), ["/bin/sh", "-c", script], rootfs)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert f"limits: VGPU_DEVICE_LIMIT_{uid.replace('-', '')[:8]}_0=GPU-" in "\n".join(out)
    assert "limits_write=refused" in out and "limits_rm=refused" in out
    (mountinfo,) = [line for line in out if line.startswith("mountinfo: ")]
    assert " ro," in mountinfo or " ro " in mountinfo, mountinfo  # a read-only mount of its own
    host_limits = process.vgpu_dir / "limits" / uid
    assert host_limits.read_text().count("\n") == len([line for line in out if line.startswith("limits: ")])

    env = dict(line.split("=", 1) for line in out if "=" in line and not line.startswith(("limits: ", "mountinfo: ")))
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "4096m"
    assert env["CUDA_DEVICE_SM_LIMIT_0"] == "30"
    assert env["CUDA_DEVICE_MEMORY_SHARED_CACHE"] == f"/usr/local/vgpu/claims/{uid}/vgpu.cache"
    assert env["DRA_HAMI_CLAIM"] == "default/c1"
    (limit,) = [v for k, v in env.items() if k.startswith("VGPU_DEVICE_LIMIT_")]
    assert limit.endswith(f",{4 << 30},30")
    assert env["preload"] == "/usr/local/vgpu/libvgpu.so"
    # The claim directory is the host's: what a container writes there, every container of the claim sees.
    assert (process.vgpu_dir / "claims" / uid / "probe").read_text() == "hi\n"
    assert not (process.vgpu_dir / "claims" / uid / "vgpu.env").exists()

    assert process.unprepare([claim]).claims[uid].error == ""
    gone = run_with_cdi(list(device.cdi_device_ids), ["/bin/true"], rootfs)
    assert gone.returncode != 0 and "unresolvable CDI devices" in gone.stderr + gone.stdout


def test_a_claim_tmpfs_in_a_real_container_is_bounded_and_inert(tmp_path):
    """The shipped storage (--claim-dir-storage=tmpfs, as the chart runs the plugin): runc binds the claim's
    tmpfs into the container nosuid,nodev,noexec; the container writes there, but not past the bound."""
    with tempfile.TemporaryDirectory() as probe:
        try:
            claim_dirs._mount_tmpfs(Path(probe), 0, "size=64k")
        except OSError:
            pytest.skip("the plugin's tmpfs mount needs CAP_SYS_ADMIN")
        claim_dirs._umount(Path(probe), 0)
    api = FakeApiServer().start()
    libvgpu = tmp_path / "libvgpu.so"
    libvgpu.write_bytes(b"static busybox never loads this")
    driver = f"test-{uuid.uuid4().hex[:8]}.dra-hami.example"
    process = PluginProcess(
        tmp_path, api, libvgpu=libvgpu, driver_name=driver, cdi_root=CDI_DIR,
        extra_args=["--claim-dir-storage", "tmpfs", "--claim-dir-size", "1Mi"],
    ).start()  # fmt: skip
    try:
        claim = allocated_claim("c1", memory="4Gi", cores="30")
        claim["status"]["allocation"]["devices"]["results"][0]["driver"] = driver
        api.put("resourceclaims", claim)
        uid = claim["metadata"]["uid"]
        entry = process.prepare([claim]).claims[uid]
        assert entry.error == ""
        (device,) = entry.devices
        host_dir = process.vgpu_dir / "claims" / uid
        assert os.path.ismount(host_dir)
        rootfs = make_busybox_rootfs(tmp_path / "rootfs")
        inside = f"/usr/local/vgpu/claims/{uid}"
        script = (
            f"grep ' {inside} ' /proc/self/mountinfo | sed 's/^/mountinfo: /'; echo hi > {inside}/probe; "
            f"cp /bin/busybox {inside}/bb && chmod 4755 {inside}/bb; "
            f"if {inside}/bb true 2>/dev/null; then echo exec=ok; else echo exec=refused; fi; "
            f"if dd if=/dev/zero of={inside}/fill bs=64k count=64 2>/dev/null; then echo fill=ok; "
            "else echo fill=refused; fi"
        )
        result = run_with_cdi(list(device.cdi_device_ids), ["/bin/sh", "-c", script], rootfs)
        out = result.stdout.splitlines()
        (mountinfo,) = [line for line in out if line.startswith("mountinfo: ")]
        options = mountinfo.removeprefix("mountinfo: ").split(" - ")[0].split()[5].split(",")
        assert {"nosuid", "nodev", "noexec"} <= set(options), mountinfo
        assert "exec=refused" in out and "fill=refused" in out, result.stdout + result.stderr
        assert (host_dir / "probe").read_text() == "hi\n"  # shared with the node (and the exporter)
        assert process.unprepare([claim]).claims[uid].error == ""
        assert not host_dir.exists()
    finally:
        process.cleanup()
        api.stop()
        for leftover in CDI_DIR.glob(f"k8s.{driver}-*"):
            leftover.unlink()
        with open("/proc/self/mountinfo") as f:  # a failed assertion skipped the unprepare: no mount may stay
            for point in [line.split()[4] for line in f if f" {tmp_path}/" in line]:
                claim_dirs._umount(Path(point), claim_dirs.MNT_DETACH)
