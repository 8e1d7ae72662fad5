"""The node guard against a process that bypasses libvgpu, end to end on the fake driver.

Two "tenant" processes allocate on the fake libcuda without libvgpu preloaded (as a static binary or a
direct ioctl would). Each runs as a container would: in a pod's cgroup, in a mount namespace of its own
that holds only its claim directory (the claim's real tmpfs, bind-mounted), with an environment that lies
about its claim. The guard runs in a separate process with the real NVML bindings (nvidia-ml-py) loading
the fake libnvidia-ml.so.1, which reports per-process memory like the driver; it must attribute each
process to its claim, wait out the grace period and SIGKILL only the process over its claim's cap.

Needs root (mounts, mount namespaces, cgroups, the kill), util-linux's unshare and the fake driver.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from exporter_fixtures import GiB, claim_record, save_checkpoint
from test_exporter_collector import G0, GPUS

from dra_hami.plugin.claim_dirs import ClaimDirs

REPO = Path(__file__).resolve().parents[3]
BUILD = REPO / "libvgpu" / "build"
FAKE, ALLOC = BUILD / "fake", BUILD / "programs" / "alloc"
CGROUP_ROOT = Path("/sys/fs/cgroup/pids")


def can_mount() -> bool:
    """Root with CAP_SYS_ADMIN, probed (a UID of 0 without capabilities cannot mount)."""
    import tempfile

    from dra_hami.plugin import claim_dirs

    with tempfile.TemporaryDirectory() as d:
        try:
            claim_dirs._mount_tmpfs(Path(d), 0, "size=64k")
        except OSError:
            return False
        claim_dirs._umount(Path(d), 0)
        return True


pytestmark = pytest.mark.skipif(
    shutil.which("unshare") is None
    or not CGROUP_ROOT.is_dir()
    or not os.access(CGROUP_ROOT, os.W_OK)
    or not can_mount(),
    reason="needs root with CAP_SYS_ADMIN (mounts, namespaces), unshare(1) and a writable cgroup v1 pids hierarchy",
)

PROBE = r"""
import json, sys, time
from pathlib import Path
from dra_hami.exporter.claims import CheckpointReader, prepared_claims
from dra_hami.exporter.gpus import NvmlProcesses
from dra_hami.exporter.guard import NodeGuard
from dra_hami.discovery import FakeDiscovery

vgpu, plugin, grace = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
gpus = FakeDiscovery.from_profile("t4x2").discover()
reader = CheckpointReader(plugin / "checkpoint.json")

class Events:
    def emit(self, claim, reason, message):
        print(json.dumps({"event": reason, "claim": claim.name, "t": time.monotonic() - t0}), flush=True)

guard = NodeGuard("node-a", "kill", grace, vgpu / "claims", lambda: prepared_claims(reader.records(), gpus),
                  lambda c: frozenset(), NvmlProcesses(), events=Events())
t0 = time.monotonic()
deadline = t0 + 60
killed_at, polls_after = None, 0
while time.monotonic() < deadline:
    verdicts = guard.poll()
    print(json.dumps({"t": time.monotonic() - t0, "verdicts": [
        {"claims": v.claims, "used": v.used, "limit": v.limit, "over": v.over,
         "pids": [a.process.pid for a in v.processes], "by": sorted({a.by for a in v.processes})}
        for v in verdicts]}), flush=True)
    if killed_at is None and any(
            s.value for f in guard.collect() if f.name == "dra_hami_guard_kills" for s in f.samples):
        killed_at = len(verdicts)
    polls_after = polls_after + 1 if killed_at is not None else 0
    if polls_after > 2:  # a few looks after the kill: the memory is gone, nothing else is touched
        break
    time.sleep(0.2)
"""


def fake_env(state: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LD_LIBRARY_PATH": str(FAKE),
        "FAKE_CUDA_STATE": str(state),
        "FAKE_CUDA_DEVICE_COUNT": "1",
        "FAKE_CUDA_UUIDS": G0.uuid,
        "FAKE_CUDA_MEMORY": "15g",
    }


@pytest.fixture
def built() -> None:
    if not (ALLOC.is_file() and (FAKE / "libnvidia-ml.so.1").is_file()):
        done = subprocess.run(["make", "-C", str(BUILD.parent), "-j2"], capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"make -C libvgpu failed:\n{(done.stdout + done.stderr)[-3000:]}", pytrace=False)


def tenant(env: dict[str, str], cgroup: Path, claim_dir: Path, view: Path, claims_root: Path, size: str, lie: str):
    """alloc without libvgpu, in the pod's cgroup, seeing only its own claim directory (at ``view``)."""
    script = (
        'echo $$ > "$CG/cgroup.procs" && mount --bind "$CLAIM" "$VIEW" && '
        'for m in "$ROOT"/*; do umount -l "$m"; done && exec "$ALLOC" --size="$SIZE" --hold=-1'
    )
    env = {
        **env, "CG": str(cgroup), "CLAIM": str(claim_dir), "VIEW": str(view), "ROOT": str(claims_root),
        "ALLOC": str(ALLOC), "SIZE": size,
        # What a tenant would forge: the guard never reads a process's environment.
        "DRA_HAMI_CLAIM": lie, "VGPU_DEVICE_LIMIT_zz": f"{G0.uuid},{64 * GiB},0",
    }  # fmt: skip
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "ready=1":
            return proc
    raise AssertionError(f"tenant did not start (exit {proc.wait(10)})")


def test_the_guard_kills_only_the_process_over_its_claims_cap(tmp_path: Path, built: None) -> None:
    vgpu, plugin = tmp_path / "vgpu", tmp_path / "plugin"
    dirs = ClaimDirs(vgpu / "claims", "tmpfs", 1 << 20)
    save_checkpoint(
        plugin,
        [
            claim_record("uid-a", "a", [(G0.device_name, GiB, 0)], GPUS),
            claim_record("uid-b", "b", [(G0.device_name, 2 * GiB, 0)], GPUS),
        ],
    )
    cg_base = CGROUP_ROOT / f"dra-hami-guard-test-{uuid.uuid4().hex[:8]}" / "kubepods"
    pods = {c: cg_base / f"pod{uuid.uuid4()}" for c in ("a", "b")}
    procs: list[subprocess.Popen] = []
    try:
        for path in pods.values():
            path.mkdir(parents=True)
        for c in ("a", "b"):
            dirs.create(f"uid-{c}")
            (tmp_path / f"view-{c}").mkdir()
        env = fake_env(tmp_path / "fake.state")
        # a: 3 GiB on a 1 GiB claim, claiming to be b; b: 1 GiB on a 2 GiB claim, claiming to be a.
        over = tenant(env, pods["a"], dirs.path("uid-a"), tmp_path / "view-a", dirs.root, "3g", "uid-b")
        procs.append(over)
        within = tenant(env, pods["b"], dirs.path("uid-b"), tmp_path / "view-b", dirs.root, "1g", "uid-a")
        procs.append(within)

        grace = 1.5
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, str(vgpu), str(plugin), str(grace)],
            env={**env, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr[-3000:]
        lines = [json.loads(line) for line in probe.stdout.splitlines()]
        assert over.wait(10) == -9  # SIGKILL from the guard
        assert within.poll() is None  # the claim within its cap is untouched

        polls = [line for line in lines if "verdicts" in line]
        first = {tuple(v["claims"]): v for v in polls[0]["verdicts"]}
        assert first[("uid-a",)] == {
            "claims": ["uid-a"], "used": 3 * GiB, "limit": GiB, "over": True, "pids": [over.pid], "by": ["mount"],
        }  # fmt: skip
        assert first[("uid-b",)]["used"] == GiB and not first[("uid-b",)]["over"]
        assert first[("uid-b",)]["pids"] == [within.pid]
        events = [line for line in lines if "event" in line]
        assert [(e["event"], e["claim"]) for e in events] == [("GpuMemoryOverLimit", "a"), ("GpuProcessKilled", "a")]
        assert events[1]["t"] >= grace  # never before the grace period
        assert events[1]["t"] < grace + 5  # and within a few polls of it
        last = {tuple(v["claims"]): v for v in polls[-1]["verdicts"]}
        assert ("uid-a",) not in last and not last[("uid-b",)]["over"]  # the driver freed a's memory
    finally:
        for proc in procs:
            if proc.poll() is None:
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait(30)
        for c in ("a", "b"):
            dirs.remove(f"uid-{c}")
        for path in pods.values():
            if path.exists():
                path.rmdir()
        for path in (cg_base, cg_base.parent):
            if path.exists():
                path.rmdir()


def test_the_exporter_process_runs_the_guard(tmp_path: Path, built: None) -> None:
    """`dra-hami exporter --guard-action=kill` as the DaemonSet runs it, on the fake driver (NVML discovery,
    per-process memory): the bypassing process dies after the grace period and /metrics says so."""
    import socket
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    vgpu, plugin = tmp_path / "vgpu", tmp_path / "plugin"
    dirs = ClaimDirs(vgpu / "claims", "tmpfs", 1 << 20)
    save_checkpoint(plugin, [claim_record("uid-a", "a", [(G0.device_name, GiB, 0)], GPUS)])
    cgroup = CGROUP_ROOT / f"dra-hami-guard-test-{uuid.uuid4().hex[:8]}" / "kubepods" / f"pod{uuid.uuid4()}"
    env = fake_env(tmp_path / "fake.state")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exporter = None
    over = None
    try:
        cgroup.mkdir(parents=True)
        dirs.create("uid-a")
        (tmp_path / "view").mkdir()
        over = tenant(env, cgroup, dirs.path("uid-a"), tmp_path / "view", dirs.root, "2g", "uid-b")
        started = time.monotonic()
        args = [
            sys.executable, "-m", "dra_hami", "exporter", "--node-name", "node-a", "--plugin-dir", str(plugin),
            "--vgpu-dir", str(vgpu), "--metrics-bind-address", f"127.0.0.1:{port}",
            "--guard-action", "kill", "--guard-grace-seconds", "1", "--guard-interval", "0.2",
        ]  # fmt: skip
        exporter_env = {
            **env,
            "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "KUBECONFIG": str(tmp_path / "no-such-kubeconfig"),
        }
        log = tmp_path / "exporter.log"
        exporter = subprocess.Popen(args, env=exporter_env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
        assert over.wait(60) == -9, log.read_text()[-3000:]
        killed_after = time.monotonic() - started
        assert killed_after >= 1.0  # never before the grace period
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline and exporter.poll() is None, log.read_text()[-3000:]
                time.sleep(0.1)
        samples = {
            (s.name, s.labels.get("claim_uid", "")): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }
        assert samples[("dra_hami_guard_kills_total", "uid-a")] == 1
        assert samples[("dra_hami_guard_violations_total", "uid-a")] == 1
        assert "node guard: killed PID" in log.read_text()
    finally:
        if over is not None and over.poll() is None:
            over.kill()
            over.wait(10)
        if exporter is not None:
            exporter.terminate()
            exporter.wait(20)
        dirs.remove("uid-a")
        for path in (cgroup, cgroup.parent, cgroup.parent.parent):
            if path.exists():
                path.rmdir()
