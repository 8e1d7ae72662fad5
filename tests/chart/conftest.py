"""Fixtures of the chart tests: the helm binary (built once from the Go module proxy) and a renderer.

``helm`` runs tests/chart/build_helm.sh, which reuses ${DRA_HAMI_CACHE:-~/.cache/dra-hami}/helm/<version>.
A missing Go toolchain or proxy is a failure, never a skip: the chart checks are part of CI.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from chart_render import REPO_ROOT


@pytest.fixture(scope="session")
def helm() -> str:
    script = REPO_ROOT / "tests" / "chart" / "build_helm.sh"
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        pytest.fail(f"{script} failed:\n{done.stderr[-4000:]}", pytrace=False)
    path = done.stdout.strip().splitlines()[-1].removeprefix("HELM=")
    assert Path(path).is_file(), done.stdout
    return path
