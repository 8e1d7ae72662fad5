"""Fixtures of the chart tests: the helm binary and a renderer.

``helm`` never builds anything: it asks ``tests/chart/build_helm.sh --find`` for a fitting helm (one on PATH, or
the cached build under ${DRA_HAMI_CACHE:-~/.cache/dra-hami}/helm/<version>). Without one the chart tests are
skipped with the command that gets it, so a plain ``pytest`` on a machine without helm stays fast. CI builds helm
first and sets DRA_HAMI_REQUIRE_HELM=1, which turns that skip into a failure: there the chart checks must run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from chart_render import REPO_ROOT


def find_helm() -> str:
    """The path of a fitting helm; skips (fails under DRA_HAMI_REQUIRE_HELM=1) when there is none."""
    script = REPO_ROOT / "tests" / "chart" / "build_helm.sh"
    done = subprocess.run([str(script), "--find"], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode == 3:
        why = "no helm v3 found: " + " ".join(line.removeprefix("[helm-build] ") for line in done.stderr.splitlines())
        if os.environ.get("DRA_HAMI_REQUIRE_HELM") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    if done.returncode != 0:
        pytest.fail(f"{script} --find failed:\n{done.stderr[-4000:]}", pytrace=False)
    path = done.stdout.strip().splitlines()[-1].removeprefix("HELM=")
    assert Path(path).is_file(), done.stdout
    return path


@pytest.fixture(scope="session")
def helm() -> str:
    return find_helm()
