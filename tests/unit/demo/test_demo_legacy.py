"""The demo runs the examples' HAMi pods through the webhook's translation (dra-hami translate)."""

from __future__ import annotations

from pathlib import Path

import yaml

from dra_hami import wire
from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.demo import manifests as m
from dra_hami.discovery import load_discovery
from dra_hami.publisher.slices import build_pool

REPO = Path(__file__).resolve().parents[3]
SLICES = build_pool(load_discovery("t4x2").discover(), PublisherConfig(node_name="demo-node"), generation=1)


def legacy_pod(name: str, limits: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "image": "x", "resources": {"limits": limits}}]}}  # fmt: skip


def test_the_example_hami_pod_gets_a_template_and_a_claim_reference():
    found = m.load(REPO / "examples")
    report = m.translate_legacy_pods(found, SLICES, wire.DEFAULT_DRIVER_NAME, "2026-12-03T09:00:00Z")
    assert report == [
        f"pod homelab/legacy-worker: HAMi resources -> ResourceClaimTemplate {name} (cores=25, memory=3Gi)"
        for (ns, name) in found.templates
        if ns == "homelab"
    ]
    pod = next(p for p in found.pods if p["metadata"]["name"] == "legacy-worker")
    (entry,) = pod["spec"]["resourceClaims"]
    assert ("homelab", entry["resourceClaimTemplateName"]) in found.templates
    assert m.pod_claims(pod, found)[0]["spec"]["devices"]["requests"][0]["exactly"]["capacity"]["requests"] == {
        "cores": "25",
        "memory": "3Gi",
    }


def test_a_pod_the_webhook_would_refuse_is_reported_and_left_out(tmp_path):
    docs = [
        legacy_pod("bad", {"nvidia.com/gpu": 1, "nvidia.com/gpucores": 150}),
        legacy_pod("ok", {"nvidia.com/gpu": 1}),
    ]
    (tmp_path / "pods.yaml").write_text(yaml.safe_dump_all(docs))
    found = m.load(tmp_path)
    report = m.translate_legacy_pods(found, SLICES, wire.DEFAULT_DRIVER_NAME, "now")
    assert report[0].startswith("pod ns/bad: refused, as the webhook would: dra-hami: HAMi resources of this pod")
    assert "a whole GPU" in report[1]
    assert [p["metadata"]["name"] for p in found.pods] == ["ok"]
