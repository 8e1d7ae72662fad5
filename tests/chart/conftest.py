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


def build_psa() -> Path:
    """tests/chart/psa built with go (the Kubernetes pod-security-admission library: the checks the API server's
    PodSecurity admission runs), cached by the harness's sources. Skips without go (fails under
    DRA_HAMI_REQUIRE_HELM=1, where the chart checks must run)."""
    import hashlib
    import shutil

    src = REPO_ROOT / "tests" / "chart" / "psa"
    digest = hashlib.sha256(b"".join((src / n).read_bytes() for n in ("go.mod", "go.sum", "main.go"))).hexdigest()
    cache = Path(os.environ.get("DRA_HAMI_CACHE") or Path.home() / ".cache" / "dra-hami")
    binary = cache / "psa" / digest[:12] / "psa"
    if binary.is_file():
        return binary
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)
    why = ""
    if go is None:
        why = "no go toolchain for tests/chart/psa (install Go 1.26)"
    else:
        # The e2e build's module and build caches hold every module this needs: no download when they exist.
        go_cache = cache / "e2e" / "go"
        env = {**os.environ, "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local",
               "GOMODCACHE": str(go_cache / "mod"), "GOCACHE": str(go_cache / "build")}  # fmt: skip
        binary.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([go, "build", "-o", str(binary), "."], cwd=src, env=env, capture_output=True,
                              text=True, timeout=900, check=False)  # fmt: skip
        if done.returncode == 0:
            return binary
        why = f"building tests/chart/psa failed:\n{done.stderr[-4000:]}"
    if os.environ.get("DRA_HAMI_REQUIRE_HELM") == "1":
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def psa() -> Path:
    return build_psa()
