"""The exporter end to end on fake GPUs: checkpoint + regions + pods -> /metrics over real HTTP."""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from exporter_fixtures import (
    DRIVER,
    NODE,
    DeviceRecord,
    GiB,
    RegionContent,
    claim_record,
    save_checkpoint,
    write_region,
)
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

    def add(
        self, namespace: str, claim: str, uid: str, pods: dict[str, list[str]], results: list[dict] | None = None
    ) -> None:
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
        status: dict[str, Any] = {"reservedFor": refs}
        if results is not None:
            status["allocation"] = {"devices": {"results": results}}
        self.claims[(namespace, claim)] = {"metadata": {"name": claim, "namespace": namespace, "uid": uid},
                                           "status": status}  # fmt: skip

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
    def __init__(self, tmp_path: Path, api: Pods | None, hami_names: tuple[str, ...] = ("current", "legacy")):
        self.vgpu = tmp_path / "vgpu"
        self.plugin = tmp_path / "plugin"
        self.identities = IdentityCache(api, driver=DRIVER)
        self.collector = ExporterCollector(
            NODE, self.vgpu, CheckpointReader(self.plugin / "checkpoint.json"), lambda: GPUS, FakeGpuStats(),
            self.identities, hami_names,
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


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[Node]:
    """A node whose exporter has no API: consumers unknown, claim series exported at once."""
    n = Node(tmp_path, None)
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
    first = node.scrape()  # owners are resolved off the scrape path: marked pending, never pod=""
    assert "dra_hami_claim_memory_used_bytes" not in first and "vGPU_device_memory_usage_in_bytes" not in first
    assert one(first, "dra_hami_claim_consumer_unknown", claim="claim-a", reason="pending") == 1
    assert one(first, "dra_hami_gpu_memory_allocated_bytes", uuid=G0.uuid) == 6 * GiB  # card totals regardless
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
    assert "dra_hami_claim_consumer_unknown" not in s
    hami = {"podnamespace": "ml", "podname": "trainer", "ctrname": "main", "vdeviceid": "0", "deviceuuid": G0.uuid}
    assert one(s, "vGPU_device_memory_usage_in_bytes", **hami, zone="vGPU") == 3 * GiB
    assert one(s, "vGPU_device_memory_limit_in_bytes", **hami) == 4 * GiB
    assert one(s, "Device_utilization_desc_of_container", **hami) == 28
    new = {"namespace": "ml", "pod": "trainer", "container": "main", "vdevice_index": "0", "device_uuid": G0.uuid}
    assert one(s, "hami_vgpu_memory_used_bytes", **new) == 3 * GiB
    assert one(s, "hami_container_device_utilization_ratio", **new) == 28
    # claim-b: one series per container per GPU (both share the claim's region, so both carry its numbers);
    # its second GPU is its CUDA device 1 (PCI order)
    for ctr in ("a", "b"):
        assert one(s, "vGPU_device_memory_limit_in_bytes", podname="web", ctrname=ctr, vdeviceid="1") == 6 * GiB
        assert one(s, "hami_vgpu_memory_used_bytes", pod="web", container=ctr, device_uuid=G1.uuid) == 5 * GiB
    # per GPU: fake physical usage = sum of the claims; allocated totals from the checkpoint
    assert one(s, "dra_hami_gpu_memory_used_bytes", uuid=G0.uuid) == 3 * GiB
    assert one(s, "dra_hami_gpu_memory_allocated_bytes", uuid=G0.uuid) == 6 * GiB
    assert one(s, "dra_hami_gpu_cores_allocated_percent", uuid=G1.uuid) == 50
    assert one(s, "dra_hami_gpu_claims", uuid=G0.uuid) == 2
    assert one(s, "dra_hami_gpu_memory_total_bytes", uuid=G0.uuid) == G0.memory_bytes
    host = {"nodeid": NODE, "deviceidx": str(G1.index), "deviceuuid": G1.uuid, "devicetype": f"NVIDIA-{G1.name}"}
    assert one(s, "HostGPUMemoryUsage", **host) == 5 * GiB
    assert one(s, "HostCoreUtilization", **host) == 0
    host_new = {"node": NODE, "device_index": str(G1.index), "device_uuid": G1.uuid, "device_type": f"NVIDIA-{G1.name}"}
    assert one(s, "hami_host_gpu_memory_used_bytes", **host_new) == 5 * GiB


def test_torn_or_foreign_regions_are_skipped_not_fatal(offline: Node, caplog: pytest.LogCaptureFixture) -> None:
    node = offline
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


def test_six_claims_six_series_never_a_sum(node: Node, pods: Pods) -> None:
    # Seen: vGPU_device_memory_limit_in_bytes read the sum of six claims (their pods not known yet).
    records = [claim_record(f"u{i}", f"c{i}", [(G0.device_name, (i + 1) * GiB, 10)], GPUS) for i in range(6)]
    save_checkpoint(node.plugin, records)
    for i in range(6):
        pods.add("default", f"c{i}", f"u{i}", {f"p{i}": ["main"]})
        write_region(node.region(f"u{i}"), RegionContent([DeviceRecord(G0.uuid, used=i * 100, util=70)], 1))
    assert "vGPU_device_memory_limit_in_bytes" not in node.scrape()  # pending: left out, not summed
    node.identities.resolve_due()
    s = node.scrape()
    assert len(s["vGPU_device_memory_limit_in_bytes"]) == len(s["hami_vgpu_memory_limit_bytes"]) == 6
    for i in range(6):
        assert one(s, "vGPU_device_memory_limit_in_bytes", podname=f"p{i}", ctrname="main") == (i + 1) * GiB
        assert one(s, "vGPU_device_memory_usage_in_bytes", podname=f"p{i}") == i * 100
        assert one(s, "Device_utilization_desc_of_container", podname=f"p{i}") == 70


def test_unknown_consumers_are_marked_and_their_hami_series_left_out(tmp_path: Path) -> None:
    n = Node(tmp_path, api=None)  # no API: definitively unknown
    try:
        records = [claim_record(f"u{i}", f"c{i}", [(G0.device_name, GiB, 20)], GPUS) for i in range(2)]
        save_checkpoint(n.plugin, records)
        s = n.scrape()
        assert not [k for k in s if k.startswith(("vGPU", "hami_vgpu", "Device_util", "hami_container"))]
        for i in range(2):  # ours: one series per claim (its UID), pod and container empty, marked unknown
            assert one(s, "dra_hami_claim_memory_limit_bytes", claim_uid=f"u{i}", pod="") == GiB
            assert one(s, "dra_hami_claim_consumer_unknown", claim_uid=f"u{i}", reason="no_api") == 1
    finally:
        n.server.shutdown()
        n.server.server_close()


def test_a_failed_refresh_keeps_the_known_consumer(node: Node, pods: Pods) -> None:
    save_checkpoint(node.plugin, [claim_record("u1", "c1", [(G0.device_name, GiB, 0)], GPUS)])
    pods.add("default", "c1", "u1", {"p1": ["main"]})
    node.scrape()
    node.identities.resolve_due(now=0.0)
    pods.claims.clear()
    pods.get_resource_claim = lambda *_: (_ for _ in ()).throw(ApiError(503, "down", "ServiceUnavailable"))  # type: ignore[method-assign]
    node.identities.resolve_due(now=10_000.0)  # a refresh is due and fails
    s = node.scrape()
    assert one(s, "dra_hami_claim_memory_limit_bytes", claim="c1", pod="p1", container="main") == GiB


def share(device: str, memory: str, cores: str, share_id: str) -> dict:
    return {"request": "gpu", "driver": DRIVER, "pool": NODE, "device": device, "shareID": share_id,
            "consumedCapacity": {"memory": memory, "cores": cores, "shares": "1"}}  # fmt: skip


def test_allocation_gauges_from_the_claims_allocated_here(node: Node, pods: Pods) -> None:
    records = [
        claim_record("ua", "ca", [(G0.device_name, 4 * GiB, 30)], GPUS),
        claim_record("ub", "cb", [(G0.device_name, 8 * GiB, 20)], GPUS),
        claim_record("uw", "cw", [(G1.device_name, G1.memory_bytes, 100)], GPUS),
    ]
    save_checkpoint(node.plugin, records)
    pods.add("default", "ca", "ua", {"pa": ["main"]}, [share(G0.device_name, "4Gi", "30", "s1")])
    pods.add("default", "cb", "ub", {"pb": ["x", "y"]}, [share(G0.device_name, "8Gi", "20", "s2")])
    whole = share(G1.device_name, "1Gi", "1", "")
    del whole["shareID"]  # no shareID: the whole device, whatever consumedCapacity says
    admin = {**share(G1.device_name, "1Gi", "5", "s9"), "adminAccess": True}  # takes nothing
    pods.add("default", "cw", "uw", {"pw": ["main"]}, [whole, admin])
    node.scrape()
    node.identities.resolve_due()
    s = node.scrape()
    for name in ("GPUDeviceMemoryAllocated", "hami_gpu_memory_allocated_bytes"):
        (_labels, value), *_ = [x for x in s[name] if G0.uuid in x[0].values()]
        assert value == 12 * GiB
    old = {"nodeid": NODE, "deviceuuid": G0.uuid, "deviceidx": str(G0.index), "devicetype": f"NVIDIA-{G0.name}"}
    assert one(s, "GPUDeviceMemoryAllocated", **old, devicecores="50", zone="vGPU") == 12 * GiB
    assert one(s, "GPUDeviceCoreAllocated", **old) == 50
    assert one(s, "GPUDeviceSharedNum", **old) == 2
    assert one(s, "GPUDeviceMemoryLimit", **old) == G0.memory_bytes
    assert one(s, "nodeGPUMemoryPercentage", deviceuuid=G0.uuid) == 12 * GiB / G0.memory_bytes
    assert one(s, "GPUDeviceMemoryAllocated", deviceuuid=G1.uuid) == G1.memory_bytes
    assert one(s, "GPUDeviceSharedNum", deviceuuid=G1.uuid) == 1
    new = {"node": NODE, "device_uuid": G0.uuid, "device_index": str(G0.index), "device_type": f"NVIDIA-{G0.name}"}
    assert one(s, "hami_gpu_shared_count", **new) == 2
    assert one(s, "hami_gpu_core_allocated_ratio", **new) == 50
    # per container: HAMi's containeridx is the container's place in spec.containers
    per = {"podnamespace": "default", "nodename": NODE, "podname": "pb", "deviceuuid": G0.uuid}
    assert one(s, "vGPUMemoryAllocated", **per, containeridx="0") == 8 * GiB
    assert one(s, "vGPUCoreAllocated", **per, containeridx="1") == 20
    assert one(s, "hami_vgpu_memory_allocated_bytes", namespace="default", node=NODE, pod="pa",
               container_index="0", device_uuid=G0.uuid) == 4 * GiB  # fmt: skip


def test_two_claims_of_one_container_on_one_gpu_are_left_out_not_added(node: Node, pods: Pods) -> None:
    records = [claim_record(f"u{i}", f"c{i}", [(G0.device_name, GiB, 10)], GPUS) for i in range(2)]
    save_checkpoint(node.plugin, records)
    for i in range(2):
        pods.add("default", f"c{i}", f"u{i}", {"p": ["main"]}, [share(G0.device_name, "1Gi", "10", f"s{i}")])
    pod = pods.pods[("default", "p")]  # one container naming both claims
    pod["status"]["resourceClaimStatuses"] = [{"name": f"g{i}", "resourceClaimName": f"c{i}"} for i in range(2)]
    pod["spec"]["containers"][0]["resources"]["claims"] = [{"name": "g0"}, {"name": "g1"}]
    node.scrape()
    node.identities.resolve_due()
    s = node.scrape()
    assert "vGPU_device_memory_limit_in_bytes" not in s and "vGPUMemoryAllocated" not in s
    assert one(s, "dra_hami_exporter_hami_ambiguous_series", kind="container") == 1
    assert one(s, "dra_hami_exporter_hami_ambiguous_series", kind="allocated") == 1
    assert one(s, "GPUDeviceMemoryAllocated", deviceuuid=G0.uuid) == 2 * GiB  # the card's total is exact


@pytest.mark.parametrize(
    ("names", "present", "absent"),
    [
        (("current",), "hami_gpu_shared_count", "GPUDeviceSharedNum"),
        (("legacy",), "HostGPUMemoryUsage", "hami_host_gpu_memory_used_bytes"),
        ((), "dra_hami_gpu_claims", "HostGPUMemoryUsage"),
    ],
)
def test_each_hami_name_set_is_switchable(tmp_path: Path, names, present, absent) -> None:
    n = Node(tmp_path, api=None, hami_names=names)
    try:
        s = n.scrape()
        assert present in s and absent not in s
    finally:
        n.server.shutdown()
        n.server.server_close()


def test_healthz(node: Node) -> None:
    port = node.server.server_address[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
        assert response.read() == b"ok\n"


def test_corrupt_checkpoint_keeps_the_last_good_claims(offline: Node, caplog: pytest.LogCaptureFixture) -> None:
    node = offline
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
