"""`dra-hami exporter` as a process: serves the node's claims, stops cleanly, refuses a bad address."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from exporter_fixtures import DeviceRecord, GiB, RegionContent, claim_record, save_checkpoint, write_region

from dra_hami.discovery import FakeDiscovery

GPUS = FakeDiscovery.from_profile("t4x2").discover()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_exporter_process_serves_and_stops(tmp_path: Path) -> None:
    plugin, vgpu = tmp_path / "plugin", tmp_path / "vgpu"
    save_checkpoint(plugin, [claim_record("uid-1", "c1", [(GPUS[0].device_name, 2 * GiB, 25)], GPUS)])
    write_region(vgpu / "claims" / "uid-1" / "vgpu.cache", RegionContent([DeviceRecord(GPUS[0].uuid, used=GiB)], 1))
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-such-kubeconfig")}
    args = [
        sys.executable, "-m", "dra_hami", "exporter", "--node-name", "node-a", "--fake-profile", "t4x2",
        "--plugin-dir", str(plugin), "--vgpu-dir", str(vgpu), "--metrics-bind-address", f"127.0.0.1:{port}",
    ]  # fmt: skip
    log = (tmp_path / "exporter.log").open("wb")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "exporter.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.read() == b"ok\n"
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "exporter.log").read_text()
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = r.read().decode()
        assert 'dra_hami_claim_memory_used_bytes{claim="c1",claim_uid="uid-1",container="",device="hami-gpu-0"' in text
        host = f'HostGPUMemoryUsage{{deviceidx="0",devicetype="NVIDIA-Tesla T4",deviceuuid="{GPUS[0].uuid}"'
        assert host in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert "pod and container labels stay empty" in (tmp_path / "exporter.log").read_text()


def test_bad_bind_address_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dra_hami", "exporter", "--node-name", "n", "--metrics-bind-address", "9401"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--metrics-bind-address" in result.stderr and "HOST:PORT" in result.stderr
