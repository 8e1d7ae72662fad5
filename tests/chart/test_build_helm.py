"""tests/chart/build_helm.sh: a fitting helm on PATH is used as it is, and --find never builds."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from chart_render import REPO_ROOT

SCRIPT = REPO_ROOT / "tests" / "chart" / "build_helm.sh"


def fake_tool(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def run_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The script with only the fake tools and the basic system commands on PATH, and an empty cache."""
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "DRA_HAMI_CACHE": str(tmp_path / "cache")}
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def with_fake_go(tmp_path: Path) -> Path:
    """A `go` that only records that it ran: the script must not build when --find or a helm fits."""
    (tmp_path / "bin").mkdir(exist_ok=True)
    marker = tmp_path / "go-ran"
    fake_tool(tmp_path / "bin", "go", f"touch {marker}; exit 1")
    return marker


def test_a_fitting_helm_on_path_is_used_without_building(tmp_path):
    marker = with_fake_go(tmp_path)
    fake_tool(tmp_path / "bin", "helm", 'echo "v3.19.2"')
    done = run_script(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"HELM={tmp_path / 'bin' / 'helm'}"
    assert not marker.exists()


def test_find_never_builds_and_says_what_to_run(tmp_path):
    marker = with_fake_go(tmp_path)
    fake_tool(tmp_path / "bin", "helm", 'echo "v3.9.0"')  # too old: ignored, with the reason
    done = run_script(tmp_path, "--find")
    assert done.returncode == 3
    assert "ignoring" in done.stderr and "v3.9.0" in done.stderr
    assert "run tests/chart/build_helm.sh" in done.stderr
    assert not marker.exists()


def test_helm_v4_on_path_does_not_fit(tmp_path):
    with_fake_go(tmp_path)
    fake_tool(tmp_path / "bin", "helm", 'echo "v4.0.1"')
    assert run_script(tmp_path, "--find").returncode == 3
