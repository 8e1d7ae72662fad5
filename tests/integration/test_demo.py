"""`dra-hami demo`, the README's main command, end to end as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def run_demo(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dra_hami", "demo", *args],
        capture_output=True, text=True, timeout=300, check=False, env=env, cwd=cwd,
    )  # fmt: skip


@pytest.fixture
def short_tmpdir():
    """A TMPDIR short enough for the plugin's sockets, so the demo's temporary directories land where we look."""
    path = Path(tempfile.mkdtemp(prefix="dht-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


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
    done = run_demo("--fake-profile", "h100x8")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fake GPU profile 'h100x8', 8 GPU(s)" in done.stdout
    assert "default/training: claim training-gpu request gpu -> demo-node/" in done.stdout


def test_demo_rejects_an_unknown_profile_and_profile_still_works_deprecated():
    done = run_demo("--profile", "tpu-v5")
    assert done.returncode != 0 and "tpu-v5" in done.stderr and "Traceback" not in done.stderr
    assert "--profile is deprecated; use --fake-profile" in done.stderr


def test_demo_refuses_a_non_empty_output_it_did_not_write(tmp_path):
    (tmp_path / "cdi").mkdir()
    (tmp_path / "cdi" / "nvidia.yaml").write_text("the toolkit's spec\n")
    done = run_demo("--output", str(tmp_path))
    assert done.returncode != 0
    assert "not written by dra-hami demo" in done.stderr and "--force" in done.stderr
    assert "== Node" not in done.stdout  # refused before any work
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cdi", "nvidia.yaml"]


def test_demo_force_writes_only_its_files_and_leaves_no_temporary_directory(tmp_path, short_tmpdir):
    (tmp_path / "cdi").mkdir()
    (tmp_path / "cdi" / "nvidia.yaml").write_text("the toolkit's spec\n")
    (tmp_path / "notes.txt").write_text("mine\n")
    done = run_demo("--output", str(tmp_path), "--force", env={**os.environ, "TMPDIR": str(short_tmpdir)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (tmp_path / "cdi" / "nvidia.yaml").read_text() == "the toolkit's spec\n"
    assert (tmp_path / "notes.txt").read_text() == "mine\n"
    assert len(list((tmp_path / "cdi").glob("*.json"))) >= 5
    assert list(short_tmpdir.iterdir()) == []  # no dh-* socket dir, no dra-hami-demo-* state dir
    # The header names the default policy and says annotations override it; the table shows what placed each.
    assert "default policy first-fit; a pod's hami.io/node-scheduler-policy" in done.stdout
    assert "POLICY" in done.stdout and "binpack" in done.stdout.split("Where each claim landed")[1]
    # The HAMi example went through the webhook's translation and got a claim like any other pod.
    assert "pod homelab/legacy-worker: HAMi resources -> ResourceClaimTemplate hami-legacy-" in done.stdout
    claims = {c["metadata"]["name"] for c in yaml.safe_load_all((tmp_path / "claims.yaml").read_text())}
    assert "legacy-worker-hami-worker" in claims


def test_ctrl_c_removes_the_temporary_directories(short_tmpdir):
    proc = subprocess.Popen(
        [sys.executable, "-m", "dra_hami", "demo"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(short_tmpdir)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(short_tmpdir.glob("dh-*/registry/*.sock")):  # the plugin is up: mid-run
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the demo's plugin never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(short_tmpdir.iterdir()) == []


def test_malformed_example_yaml_names_the_file(tmp_path):
    (tmp_path / "good.yaml").write_text((REPO / "examples" / "single-slice.yaml").read_text())
    (tmp_path / "broken.yaml").write_text("kind: Pod\nmetadata: {name: [oops\n")
    done = run_demo("--examples", str(tmp_path))
    assert done.returncode != 0
    assert f"{tmp_path / 'broken.yaml'}: not valid YAML" in done.stderr and "Traceback" not in done.stderr


def test_demo_from_a_regular_non_editable_install(tmp_path):
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(REPO)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("dra_hami-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if n.startswith("dra_hami/demo/examples/")}
    assert shipped == {f"dra_hami/demo/examples/{p.name}" for p in (REPO / "examples").glob("*.yaml")}
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)  # what pip install puts in site-packages; the dependencies come from this venv
    done = run_demo(env={**os.environ, "PYTHONPATH": str(site)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Allocating the pods of {site / 'dra_hami' / 'demo' / 'examples'}" in done.stdout
