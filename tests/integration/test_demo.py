"""`dra-hami demo`, the README's main command, end to end as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dra_hami", "demo", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_demo_writes_slices_claims_and_specs(tmp_path):
    done = run_demo("--output", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    slices = list(yaml.safe_load_all((tmp_path / "resourceslices.yaml").read_text()))
    assert [d["name"] for d in slices[0]["spec"]["devices"]] == ["hami-gpu-0", "hami-gpu-1"]
    claims = {c["metadata"]["name"]: c for c in yaml.safe_load_all((tmp_path / "claims.yaml").read_text())}
    inference = claims["inference-gpu"]["status"]["allocation"]["devices"]["results"][0]
    assert inference["consumedCapacity"] == {"cores": "30", "memory": "4Gi", "shares": "1"}
    specs = [json.loads(p.read_text()) for p in (tmp_path / "cdi").glob("*.json")]
    allocated = [c for c in claims.values() if c.get("status", {}).get("allocation")]
    assert len(specs) == len(allocated) >= 5
    # Pods that cannot fit say why, like the scheduler would.
    assert "default/training: stays Pending" in done.stdout and "needs 15Gi" in done.stdout
    # The registration answer and the libvgpu run in the prepared claim's environment.
    assert "supported_versions=['v1.DRAPlugin', 'v1beta1.DRAPlugin', 'v1alpha1.DRAResourceHealth']" in done.stdout
    assert "cuDeviceTotalMem                 -> 4096 MiB" in done.stdout
    assert "-> CUDA_ERROR_OUT_OF_MEMORY" in done.stdout


def test_demo_on_another_profile():
    done = run_demo("--profile", "h100x8")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fake GPU profile 'h100x8', 8 GPU(s)" in done.stdout
    assert "default/training: claim training-gpu request gpu -> demo-node/" in done.stdout


def test_demo_rejects_an_unknown_profile():
    done = run_demo("--profile", "tpu-v5")
    assert done.returncode != 0 and "tpu-v5" in done.stderr and "Traceback" not in done.stderr
