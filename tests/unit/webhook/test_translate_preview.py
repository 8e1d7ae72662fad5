"""`dra-hami translate`: the webhook's translation of a HAMi manifest with no cluster, and the same errors."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from webhook_fixtures import DRIVER, FakeApi, container, fleet, pod, review

from dra_hami.cli import main
from dra_hami.translate_preview import gpus_of_slices, preview_pod
from dra_hami.webhook.admission import Admission, AdmissionOptions
from dra_hami.webhook.review import apply_patch

REPO = Path(__file__).resolve().parents[3]
NOW = datetime.datetime(2026, 12, 3, 9, 0, 0, tzinfo=datetime.UTC)
NOW_TEXT = "2026-12-03T09:00:00Z"
HOMELAB = {"nvidia.com/gpu": 1, "nvidia.com/gpumem-percentage": 20, "nvidia.com/gpucores": 25}

PODS = {
    "percentage": pod(container("w", HOMELAB), annotations={"nvidia.com/use-gputype": "T4"}),
    "mib-and-two-gpus": pod(container("w", {"nvidia.com/gpu": 2, "nvidia.com/gpumem": 3000})),
    "cores-over-100": pod(container("w", {"nvidia.com/gpu": 1, "nvidia.com/gpucores": 150})),
    "mixed-with-dra": pod(container("w", {"nvidia.com/gpu": 1}, resources={"claims": [{"name": "c"}]})),
    "no-gpu-of-that-type": pod(container("w", HOMELAB), annotations={"nvidia.com/use-gputype": "A100"}),
    "plain": pod(container("w", None)),
}


@pytest.mark.parametrize("name", sorted(PODS))
def test_the_preview_is_what_the_webhook_admits_or_refuses(name: str) -> None:
    slices = fleet("t4x2", "h100x8")
    api = FakeApi(slices=slices)
    original = PODS[name]
    response = Admission(api, AdmissionOptions(DRIVER, legacy_translation=True), clock=lambda: NOW).mutate_pod(
        review(original)
    )
    shown = preview_pod(original, gpus_of_slices(slices, DRIVER), DRIVER, "pod", NOW_TEXT)
    if not response.allowed:
        assert shown.error == response.message
        return
    assert shown.error == ""
    assert shown.pod == apply_patch(original, response.patch or [])
    assert list(shown.templates) == [
        {k: v for k, v in t.items() if k != "metadata"} | {"metadata": _without_rv(t["metadata"])}
        for t in api.templates.values()
    ]


def _without_rv(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "resourceVersion"}


def test_translate_prints_the_templates_and_the_rewritten_example_pod() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dra_hami", "translate", "-f", str(REPO / "examples" / "legacy-hami-pod.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    template, new_pod = docs
    request = template["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    # 20% of a 15360Mi T4 of the default t4x2 profile, 25 cores.
    assert request["capacity"]["requests"] == {"cores": "25", "memory": "3Gi"}
    assert new_pod["spec"]["resourceClaims"] == [
        {"name": "hami-worker", "resourceClaimTemplateName": template["metadata"]["name"]}
    ]
    assert "nvidia.com/gpu" not in str(new_pod["spec"]["containers"])
    assert "skipped" in done.stderr and "Namespace homelab: not a Pod" in done.stderr


def test_translate_reads_stdin_and_gives_the_webhooks_error() -> None:
    manifest = yaml.safe_dump(pod(container("w", {"nvidia.com/gpu": 1, "nvidia.com/gpucores": 150})))
    result = CliRunner().invoke(main, ["translate", "-f", "-"], input=manifest)
    assert result.exit_code == 1
    assert "dra-hami: HAMi resources of this pod cannot be translated:" in result.output
    assert "gpucores" in result.output


def test_translate_uses_the_clusters_slices(tmp_path: Path) -> None:
    slices = tmp_path / "slices.yaml"
    slices.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": fleet("h100x8")}))
    manifest = yaml.safe_dump(pod(container("w", HOMELAB)))
    result = CliRunner().invoke(main, ["translate", "-f", "-", "--slices", str(slices)], input=manifest)
    assert result.exit_code == 0, result.output
    assert "8 from the ResourceSlices of" in result.output
    request = next(d for d in yaml.safe_load_all(result.output) if d and d["kind"] == "ResourceClaimTemplate")
    memory = request["spec"]["spec"]["devices"]["requests"][0]["exactly"]["capacity"]["requests"]["memory"]
    assert memory != "3Gi"  # 20% of an H100, not of a T4


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("kind: Pod\nmetadata: [unclosed\n")
    result = CliRunner().invoke(main, ["translate", "-f", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: not valid YAML" in result.output
    assert "Traceback" not in result.output
