"""`dra-hami demo --policy`: the examples allocated with the chosen policy, and where each claim landed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.cli import main
from dra_hami.demo import manifests as manifest_io
from dra_hami.demo.allocation import allocate_examples, landing_table, policy_choice
from dra_hami.discovery import load_discovery
from dra_hami.publisher.slices import build_pool, device_class

DRIVER = "hami-core-gpu.project-hami.io"


def _examples(tmp_path: Path) -> Path:
    docs = [
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": "small"},
            "spec": {
                "spec": {
                    "devices": {
                        "requests": [
                            {
                                "name": "gpu",
                                "exactly": {
                                    "deviceClassName": DRIVER,
                                    "capacity": {"requests": {"memory": "2Gi", "cores": "10"}},
                                },
                            }
                        ]
                    }
                }
            },
        }
    ]
    for name in ("a", "b"):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {
                    "containers": [{"name": "main", "image": "busybox", "resources": {"claims": [{"name": "gpu"}]}}],
                    "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "small"}],
                },
            }
        )
    (tmp_path / "pods.yaml").write_text(yaml.safe_dump_all(docs))
    return tmp_path


def _landings(tmp_path: Path, policy: str) -> list:
    config = PublisherConfig(node_name="demo-node")
    slices = build_pool(load_discovery("a100x4").discover(), config, generation=1)
    manifests = manifest_io.load(_examples(tmp_path))
    return allocate_examples(manifests, slices, [device_class(DRIVER)], "demo-node", policy).landings


@pytest.mark.parametrize(
    ("policy", "devices"),
    [
        ("binpack", ["hami-gpu-0", "hami-gpu-0"]),
        ("first-fit", ["hami-gpu-0", "hami-gpu-0"]),
        ("spread", ["hami-gpu-0", "hami-gpu-1"]),
    ],
)
def test_policy_decides_where_the_examples_land(tmp_path: Path, policy: str, devices: list[str]) -> None:
    landings = _landings(tmp_path, policy)
    assert [x.device for x in landings] == devices
    assert {(x.node, x.memory, x.cores) for x in landings} == {("demo-node", "2Gi", "10")}


def test_landing_table_has_node_device_memory_cores_and_the_policy(tmp_path: Path) -> None:
    header, first, second = landing_table(_landings(tmp_path, "spread"))
    assert header.split() == ["POD", "CLAIM", "REQUEST", "NODE", "DEVICE", "MEMORY", "CORES", "POLICY"]
    assert first.split()[0] == "default/a" and first.split()[3:] == ["demo-node", "hami-gpu-0", "2Gi", "10", "spread"]
    assert second.split()[3:] == ["demo-node", "hami-gpu-1", "2Gi", "10", "spread"]


def test_unknown_policy_is_refused_naming_the_option() -> None:
    with pytest.raises(ValueError, match="--policy: unknown policy 'tightest'"):
        policy_choice("tightest")
    result = CliRunner().invoke(main, ["demo", "--policy", "tightest"])
    assert result.exit_code == 2 and "--policy" in result.output and "binpack" in result.output
