"""The exporter end to end on fake GPUs: checkpoint + regions + pods -> /metrics over real HTTP."""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from exporter_fixtures import NODE, DeviceRecord, GiB, RegionContent, claim_record, save_checkpoint, write_region
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from dra_hami.discovery import FakeDiscovery
from dra_hami.exporter.claims import CheckpointReader
from dra_hami.exporter.collector import ExporterCollector
from dra_hami.exporter.gpus import FakeGpuStats
from dra_hami.exporter.identity import IdentityCache
from dra_hami.exporter.main import serve
from dra_hami.kube.client import ApiError

GPUS = FakeDiscovery.from_profile("t4x2").discover()
G0, G1 = GPUS


class Pods:
    """An in-memory API: claims with reservedFor, pods with containers naming the claim."""

    def __init__(self) -> None:
        self.claims: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls = 0

    def add(self, namespace: str, claim: str, uid: str, pods: dict[str, list[str]]) -> None:
        refs = []
        for pod, containers in pods.items():
            refs.append({"resource": "pods", "name": pod, "uid": f"uid-{pod}"})
            self.pods[(namespace, pod)] = {
                "metadata": {"name": pod, "uid": f"uid-{pod}"},
                "spec": {
                    "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "t"}],
                    "containers": [{"name": c, "resources": {"claims": [{"name": "gpu"}]}} for c in containers]
                    + [{"name": "sidecar"}],
                },
                "status": {"resourceClaimStatuses": [{"name": "gpu", "resourceClaimName": claim}]},
            }
        self.claims[(namespace, claim)] = {"metadata": {"uid": uid}, "status": {"reservedFor": refs}}

    def get_resource_claim(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls += 1
        try:
            return self.claims[(namespace, name)]
        except KeyError:
            raise ApiError(404, "not found", "NotFound") from None

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self.pods[(namespace, name)]
        except KeyError:
            raise ApiError(404, "not found", "NotFound") from None


class Node:
    def __init__(self, tmp_path: Path, api: Pods | None):
        self.vgpu = tmp_path / "vgpu"
        self.plugin = tmp_path / "plugin"
        self.identities = IdentityCache(api)
        self.collector = ExporterCollector(
            NODE, self.vgpu, CheckpointReader(self.plugin / "checkpoint.json"), lambda: GPUS, FakeGpuStats(),
            self.identities,
        )  # fmt: skip
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self.server, _ = serve(self.registry, "127.0.0.1:0")

    def region(self, uid: str) -> Path:
        return self.vgpu / "claims" / uid / "vgpu.cache"

    def scrape(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        port = self.server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out.setdefault(sample.name, []).append((sample.labels, sample.value))
        return out


@pytest.fixture
def pods() -> Pods:
    return Pods()


@pytest.fixture
def node(tmp_path: Path, pods: Pods) -> Iterator[Node]:
    n = Node(tmp_path, pods)
    yield n
    n.server.shutdown()
    n.server.server_close()


def one(samples: dict, name: str, **labels: str) -> float:
    found = [v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def test_claim_and_gpu_metrics_under_both_names(node: Node, pods: Pods) -> None:
    records = [
        claim_record("uid-a", "claim-a", [(G0.device_name, 4 * GiB, 30)], GPUS, namespace="ml"),
        claim_record("uid-b", "claim-b", [(G0.device_name, 2 * GiB, 0), (G1.device_name, 6 * GiB, 50)], GPUS),
    ]
    save_checkpoint(node.plugin, records)
    pods.add("ml", "claim-a", "uid-a", {"trainer": ["main"]})
    pods.add("default", "claim-b", "uid-b", {"web": ["a", "b"]})  # two containers share claim-b
    write_region(
        node.region("uid-a"),
        RegionContent([DeviceRecord(G0.uuid, used=3 * GiB, limit=4 * GiB, sm_limit=30, peak=3 * GiB, util=28)], 2),
    )
    write_region(node.region("uid-b"), RegionContent([DeviceRecord(G1.uuid, used=5 * GiB, limit=6 * GiB)], 1))
    first = node.scrape()  # owners are resolved off the scrape path: empty until then
    assert one(first, "dra_hami_claim_memory_used_bytes", claim="claim-a", pod="", container="") == 3 * GiB
    assert node.identities.resolve_due() == 2

    s = node.scrape()
    a = {"claim": "claim-a", "namespace": "ml", "pod": "trainer", "container": "main", "uuid": G0.uuid}
    assert one(s, "dra_hami_claim_memory_used_bytes", **a) == 3 * GiB
    assert one(s, "dra_hami_claim_memory_limit_bytes", **a) == 4 * GiB
    assert one(s, "dra_hami_claim_compute_utilization_percent", **a) == 28
    assert one(s, "dra_hami_claim_compute_cap_percent", **a) == 30
    assert one(s, "dra_hami_claim_processes", claim="claim-a") == 2
    # claim-b: one pod, two containers -> container empty, consumers listed in the info metric
    b1 = {"claim": "claim-b", "pod": "web", "container": "", "uuid": G1.uuid, "device": G1.device_name}
    assert one(s, "dra_hami_claim_memory_used_bytes", **b1) == 5 * GiB
    assert one(s, "dra_hami_claim_memory_used_bytes", claim="claim-b", uuid=G0.uuid) == 0  # no record yet
    assert sorted(lab["container"] for lab, _ in s["dra_hami_claim_consumer_info"] if lab["claim"] == "claim-b") == [
        "a",
        "b",
    ]
    # HAMi's names and labels
    hami = {"podnamespace": "ml", "podname": "trainer", "ctrname": "main", "vdeviceid": "0", "deviceuuid": G0.uuid}
    assert one(s, "vGPU_device_memory_usage_in_bytes", **hami) == 3 * GiB
    assert one(s, "vGPU_device_memory_limit_in_bytes", **hami) == 4 * GiB
    assert one(s, "Device_utilization_desc_of_container", **hami) == 28
    # claim-b's second GPU is its CUDA device 1 (PCI order)
    assert one(s, "vGPU_device_memory_limit_in_bytes", podname="web", vdeviceid="1", deviceuuid=G1.uuid) == 6 * GiB
    # per GPU: fake physical usage = sum of the claims; allocated totals from the checkpoint
    assert one(s, "dra_hami_gpu_memory_used_bytes", uuid=G0.uuid) == 3 * GiB
    assert one(s, "dra_hami_gpu_memory_allocated_bytes", uuid=G0.uuid) == 6 * GiB
    assert one(s, "dra_hami_gpu_cores_allocated_percent", uuid=G1.uuid) == 50
    assert one(s, "dra_hami_gpu_claims", uuid=G0.uuid) == 2
    assert one(s, "dra_hami_gpu_memory_total_bytes", uuid=G0.uuid) == G0.memory_bytes
    host = {"nodeid": NODE, "deviceidx": str(G1.index), "deviceuuid": G1.uuid, "devicetype": f"NVIDIA-{G1.name}"}
    assert one(s, "HostGPUMemoryUsage", **host) == 5 * GiB
    assert one(s, "HostCoreUtilization", **host) == 0


def test_torn_or_foreign_regions_are_skipped_not_fatal(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    records = [claim_record(f"uid-{i}", f"c{i}", [(G0.device_name, GiB, 10)], GPUS) for i in range(4)]
    save_checkpoint(node.plugin, records)
    write_region(node.region("uid-0"), RegionContent([DeviceRecord(G0.uuid, used=100)], 1))
    write_region(node.region("uid-1"), RegionContent(magic=0))  # being initialised
    write_region(node.region("uid-2"), RegionContent(version=7))  # another layout
    # uid-3: no region yet (no process started): usage 0
    with caplog.at_level(logging.WARNING):
        s = node.scrape()
        node.scrape()
    assert one(s, "dra_hami_claim_memory_used_bytes", claim="c0") == 100
    assert one(s, "dra_hami_claim_memory_used_bytes", claim="c3") == 0
    for bad in ("c1", "c2"):
        assert not [lab for lab, _ in s["dra_hami_claim_memory_used_bytes"] if lab["claim"] == bad]
        assert one(s, "dra_hami_claim_memory_limit_bytes", claim=bad) == GiB  # the limit is known regardless
    assert one(s, "dra_hami_exporter_region_read_errors_total", reason="not_ready") == 1
    assert one(s, "dra_hami_exporter_region_read_errors_total", reason="bad_layout") == 1
    assert [m for m in caplog.messages if "cannot be read" in m and "uid-2" in m]
    assert len([m for m in caplog.messages if "uid-2" in m]) == 1  # once per episode, not per scrape
    s2 = node.scrape()
    assert one(s2, "dra_hami_exporter_region_read_errors_total", reason="bad_layout") == 3


def test_pod_unknown_without_api_and_unprepared_claims_disappear(tmp_path: Path) -> None:
    n = Node(tmp_path, api=None)
    try:
        save_checkpoint(n.plugin, [claim_record("uid-x", "x", [(G1.device_name, 2 * GiB, 0)], GPUS)])
        s = n.scrape()
        assert one(s, "dra_hami_claim_memory_limit_bytes", claim="x", pod="", container="") == 2 * GiB
        save_checkpoint(n.plugin, [])
        s = n.scrape()
        assert "dra_hami_claim_memory_limit_bytes" not in s
        assert one(s, "dra_hami_gpu_claims", uuid=G1.uuid) == 0
    finally:
        n.server.shutdown()
        n.server.server_close()


def test_two_claims_of_one_unknown_pod_never_duplicate_hami_series(node: Node) -> None:
    # unresolved pods: both claims map to the same HAMi label set, which must be summed, not repeated
    records = [claim_record(f"u{i}", f"c{i}", [(G0.device_name, GiB, 20)], GPUS) for i in range(2)]
    save_checkpoint(node.plugin, records)
    for i in range(2):
        write_region(node.region(f"u{i}"), RegionContent([DeviceRecord(G0.uuid, used=GiB // 4, util=70)], 1))
    s = node.scrape()
    assert one(s, "vGPU_device_memory_usage_in_bytes", podname="", deviceuuid=G0.uuid) == GiB // 2
    assert one(s, "vGPU_device_memory_limit_in_bytes", podname="", deviceuuid=G0.uuid) == 2 * GiB
    assert one(s, "Device_utilization_desc_of_container", podname="") == 100


def test_healthz(node: Node) -> None:
    port = node.server.server_address[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
        assert response.read() == b"ok\n"


def test_corrupt_checkpoint_keeps_the_last_good_claims(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    save_checkpoint(node.plugin, [claim_record("u1", "c1", [(G0.device_name, GiB, 0)], GPUS)])
    assert one(node.scrape(), "dra_hami_claim_memory_limit_bytes", claim="c1") == GiB
    (node.plugin / "checkpoint.json").write_text('{"kind": "DraHamiCheckpoint", "version": 1, "data": {}}')
    with caplog.at_level(logging.WARNING):
        s = node.scrape()
        node.scrape()
    assert one(s, "dra_hami_claim_memory_limit_bytes", claim="c1") == GiB
    assert len([m for m in caplog.messages if "checkpoint" in m]) == 1


if TYPE_CHECKING:  # mypy (.ci/run) checks that each fake still has the shape of the Protocol it stands in for
    from dra_hami.exporter.identity import PodApi

    _pod_api: type[PodApi] = Pods
