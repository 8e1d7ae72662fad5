#!/usr/bin/env python3
"""Exporter scrape time with 100 prepared claims (issue 6: <= 50 ms per scrape).

    python tests/bench/bench_exporter.py [--claims 100] [--scrapes 200] [--writer libvgpu|python] [--out FILE]

Setup, as on a node: the plugin's checkpoint holds N prepared claims (specs built by the plugin's own
build_spec, on the t4x2 fake profile, alternating GPUs, 1..4 GiB and 10..40 cores); each claim's region is
written by the real libvgpu: one `alloc --hold=-1` process per claim, preloaded with libvgpu.so on the fake
driver, with the claim's CDI env (so its limits) and 64..256 MiB allocated and held while we scrape
(``--writer python`` writes the same layout from Python instead, for machines without the C build). Every
claim's pod and container are resolved (the identity cache is filled before timing).

Timed: a full HTTP GET of /metrics from the exporter's own server on 127.0.0.1 (collection, exposition,
transfer), as wall time and as the CPU time this process spent on it (server and client; unaffected by other
tenants of a busy machine), and separately the collector alone. Prints median / p95 / max and the verdict against 50 ms.
Not a test: pytest does not collect this directory (tests/bench/conftest.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit" / "exporter"))

from exporter_fixtures import (  # noqa: E402
    DeviceRecord,
    GiB,
    RegionContent,
    claim_record,
    save_checkpoint,
    write_region,
)
from prometheus_client import CollectorRegistry  # noqa: E402

from dra_hami import wire  # noqa: E402
from dra_hami.discovery import FakeDiscovery  # noqa: E402
from dra_hami.exporter.claims import CheckpointReader  # noqa: E402
from dra_hami.exporter.collector import ExporterCollector  # noqa: E402
from dra_hami.exporter.gpus import FakeGpuStats  # noqa: E402
from dra_hami.exporter.identity import IdentityCache  # noqa: E402
from dra_hami.exporter.main import serve  # noqa: E402
from dra_hami.exporter.region import read_region  # noqa: E402

BUILD = REPO / "libvgpu" / "build"
TARGET_MS = 50.0
MiB = 1 << 20


class Pods:
    """Every claim reserved by one pod with one container (the common case, and all labels filled)."""

    def get_resource_claim(self, namespace: str, name: str) -> dict[str, Any]:
        return {
            "metadata": {"uid": f"uid-{name}"},
            "status": {"reservedFor": [{"resource": "pods", "name": f"pod-{name}"}]},
        }

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        claim = name.removeprefix("pod-")
        return {
            "metadata": {"uid": ""},
            "spec": {
                "resourceClaims": [{"name": "gpu", "resourceClaimName": claim}],
                "containers": [{"name": "main", "resources": {"claims": [{"name": "gpu"}]}}],
            },
        }


def claim_env(record, region: Path) -> dict[str, str]:
    env = {}
    for device in [{"containerEdits": record.spec["containerEdits"]}, *record.spec["devices"]]:
        for entry in device["containerEdits"].get("env") or []:
            key, _, value = entry.partition("=")
            env[key] = value
    env[wire.ENV_SHARED_CACHE] = str(region)
    return env


def start_writers(records, gpus, vgpu: Path, tmp: Path) -> list[subprocess.Popen]:
    lib, fake, alloc = BUILD / "libvgpu.so", BUILD / "fake", BUILD / "programs" / "alloc"
    missing = [p for p in (lib, fake / "libcuda.so.1", alloc) if not p.exists()]
    if missing:
        sys.exit(f"libvgpu is not built ({', '.join(map(str, missing))}): run `make -C libvgpu` or use --writer python")
    by_name = {g.device_name: g for g in gpus}
    procs = []
    for i, record in enumerate(records):
        gpu = by_name[record.devices[0].device_name]
        region = vgpu / "claims" / record.uid / "vgpu.cache"
        region.parent.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LD_LIBRARY_PATH": str(fake),
            "LD_PRELOAD": str(lib),
            "FAKE_CUDA_DEVICE_COUNT": "1",  # the container sees its own GPU only
            "FAKE_CUDA_UUIDS": gpu.uuid,
            "FAKE_CUDA_PCI_BUS_IDS": gpu.pci_bus_id,
            "FAKE_CUDA_MEMORY": str(gpu.memory_bytes),
            "FAKE_CUDA_STATE": str(tmp / f"fake-{gpu.uuid}.state"),
            "FAKE_CUDA_SHADOW_MAX": "0",
            **claim_env(record, region),
        }
        size = (64 + 64 * (i % 4)) * MiB
        procs.append(
            subprocess.Popen(
                [str(alloc), f"--size={size}", "--hold=-1"],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        )
    for p in procs:
        assert p.stdout is not None
        for line in p.stdout:
            if line.strip() == "ready=1":
                break
        else:
            sys.exit(f"a writer exited early (status {p.wait()})")
    return procs


def write_python(records, gpus, vgpu: Path) -> None:
    by_name = {g.device_name: g for g in gpus}
    for i, record in enumerate(records):
        gpu = by_name[record.devices[0].device_name]
        used = (64 + 64 * (i % 4)) * MiB
        device = DeviceRecord(gpu.uuid, used=used, limit=(1 + i % 4) * GiB, sm_limit=10 + 10 * (i % 4), peak=used)
        write_region(vgpu / "claims" / record.uid / "vgpu.cache", RegionContent([device], processes=1))


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"| {name} | {statistics.median(ordered):.2f} | {p95:.2f} | {ordered[-1]:.2f} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=100)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--writer", choices=["libvgpu", "python"], default="libvgpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    gpus = FakeDiscovery.from_profile("t4x2").discover()
    with tempfile.TemporaryDirectory(prefix="bench-exporter-") as tmp_name:
        tmp = Path(tmp_name)
        vgpu, plugin = tmp / "vgpu", tmp / "plugin"
        records = [
            claim_record(
                f"uid-c{i:03d}", f"c{i:03d}", [(gpus[i % 2].device_name, (1 + i % 4) * GiB, 10 + 10 * (i % 4))], gpus,
                vgpu_dir=vgpu,
            )
            for i in range(args.claims)
        ]  # fmt: skip
        save_checkpoint(plugin, records)
        procs: list[subprocess.Popen] = []
        started = time.perf_counter()
        if args.writer == "libvgpu":
            procs = start_writers(records, gpus, vgpu, tmp)
        else:
            write_python(records, gpus, vgpu)
        setup_s = time.perf_counter() - started
        try:
            total = sum(read_region(vgpu / "claims" / r.uid / "vgpu.cache").devices[0].used for r in records)
            identities = IdentityCache(Pods())
            collector = ExporterCollector(
                "node-a", vgpu, CheckpointReader(plugin / "checkpoint.json"), lambda: gpus, FakeGpuStats(), identities
            )
            registry = CollectorRegistry(auto_describe=False)
            registry.register(collector)
            server, _ = serve(registry, "127.0.0.1:0")
            url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
            list(collector.collect())  # registers the claims with the identity cache
            identities.resolve_due()
            body = urllib.request.urlopen(url, timeout=10).read()
            assert f'pod="pod-c{args.claims - 1:03d}"'.encode() in body, "pods not resolved"
            http_ms, cpu_ms, collect_ms = [], [], []
            for _ in range(args.scrapes):
                t0, c0 = time.perf_counter(), time.process_time()
                urllib.request.urlopen(url, timeout=10).read()
                http_ms.append((time.perf_counter() - t0) * 1000)
                cpu_ms.append((time.process_time() - c0) * 1000)
                t0 = time.perf_counter()
                list(collector.collect())
                collect_ms.append((time.perf_counter() - t0) * 1000)
            server.shutdown()
            server.server_close()
        finally:
            for p in procs:
                assert p.stdin is not None
                p.stdin.close()
            for p in procs:
                p.wait(timeout=60)

    samples = body.count(b"\n") - body.count(b"\n#")
    lines = [
        f"exporter scrape, {args.claims} prepared claims, regions written by {args.writer} "
        f"({total / GiB:.2f} GiB held; setup {setup_s:.1f}s), {args.scrapes} scrapes, "
        f"{len(body)} bytes / {samples} samples per scrape, Python {sys.version.split()[0]}",
        "",
        "| what | median ms | p95 ms | max ms |",
        "|---|---|---|---|",
        summary("GET /metrics (HTTP, 127.0.0.1), wall", http_ms),
        summary("GET /metrics, CPU time of server + client (load-independent)", cpu_ms),
        summary("collector only", collect_ms),
        "",
        f"target: median GET <= {TARGET_MS:.0f} ms: {'PASS' if statistics.median(http_ms) <= TARGET_MS else 'FAIL'}",
        f"reproduce: python tests/bench/bench_exporter.py --claims {args.claims} --writer {args.writer}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if statistics.median(http_ms) <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
