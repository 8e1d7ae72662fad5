"""How the test suite itself runs for a newcomer: the plain `pytest` leaves out what needs root, Go or podman,
and the harness scripts never install system packages nor fetch a Go toolchain behind the user's back."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def collect(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return done.stdout


def selected_ids(output: str) -> list[str]:
    return [line for line in output.splitlines() if "::" in line]


def test_plain_pytest_leaves_out_the_e2e_and_podman_suites():
    out = collect("tests/e2e/test_cluster.py", "tests/integration/test_podman_cdi.py")
    assert selected_ids(out) == [], out[-2000:]
    assert "deselected" in out


def test_the_markers_still_select_them():
    e2e = selected_ids(collect("-m", "e2e", "tests/e2e/test_cluster.py"))
    podman = selected_ids(collect("-m", "podman", "tests/integration/test_podman_cdi.py"))
    assert e2e and all("tests/e2e/test_cluster.py::" in i for i in e2e)
    assert podman and all("test_podman_cdi.py::" in i for i in podman)


def test_no_test_harness_installs_system_packages():
    # Installing belongs to .ci/run (or a documented script the user runs), never to a fixture or build script.
    offenders = []
    for path in [*REPO.glob("tests/**/*.sh"), *REPO.glob("tests/**/*.py")]:
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if re.search(r"\b(apt-get|apt|dnf|yum)\s+(-\S+\s+)*install\s+-y", line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []


def test_e2e_build_refuses_a_go_too_old_for_the_pins_before_downloading(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_go = bin_dir / "go"
    log = tmp_path / "go-calls"
    # Answers `go env GOVERSION` with an old release and records every other call.
    fake_go.write_text(f'#!/bin/sh\n[ "$1 $2" = "env GOVERSION" ] && {{ echo go1.20.1; exit 0; }}\necho "$@" >>{log}\n')
    fake_go.chmod(fake_go.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "DRA_HAMI_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(["bash", str(REPO / "tests/e2e/build.sh")], env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode != 0
    assert "go1.20.1" in done.stderr and "need go >= 1." in done.stderr, done.stderr
    assert not log.exists(), log.read_text()
