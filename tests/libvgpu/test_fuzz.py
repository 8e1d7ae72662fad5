"""libFuzzer runs of the libvgpu parsers (libvgpu/tests/fuzz/fuzz_*.c): the strict size parser
against a reference (fuzz_size) and the environment contract, including the
VGPU_DEVICE_LIMIT_* list format and the indexed CUDA_DEVICE_*_LIMIT_<i> variables, against its
invariants (fuzz_env).  Each harness first replays its seed corpus (libvgpu/tests/fuzz/corpus/,
which holds the inputs of past findings), then fuzzes for VGPU_FUZZ_SECONDS (default 20) with
ASan + UBSan; any crash, leak, sanitizer report or invariant failure fails the test.

Needs clang with its libFuzzer runtime (Debian: apt-get install clang libclang-rt-dev); skipped
only when clang itself is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIBVGPU = REPO / "libvgpu"
FUZZ_BIN = LIBVGPU / "build" / "fuzz"
CORPUS = LIBVGPU / "tests" / "fuzz" / "corpus"
HARNESSES = ["size", "env"]
SECONDS = int(os.environ.get("VGPU_FUZZ_SECONDS", "20"))


@pytest.fixture(scope="module")
def fuzz_build() -> Path:
    cc = os.environ.get("FUZZ_CC", "clang")
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed (apt-get install clang libclang-rt-dev); the fuzz harnesses need it")
    res = subprocess.run(["make", "-C", str(LIBVGPU), "fuzz"], capture_output=True, text=True, timeout=600)
    log = res.stdout + res.stderr
    if res.returncode != 0:
        hint = ""
        if "libclang_rt.fuzzer" in log or ("fuzzer" in log and "cannot find" in log):
            hint = "\nclang's libFuzzer runtime is missing: apt-get install libclang-rt-dev (Debian/Ubuntu)"
        pytest.fail(f"make -C libvgpu fuzz failed (rc={res.returncode}){hint}:\n{log[-4000:]}")
    return FUZZ_BIN


@pytest.mark.parametrize("name", HARNESSES)
def test_fuzz(fuzz_build, name, tmp_path):
    exe = fuzz_build / f"fuzz_{name}"
    assert exe.is_file(), f"{exe} was not built"
    seeds = CORPUS / name
    assert seeds.is_dir() and any(seeds.iterdir()), f"no seed corpus in {seeds}"
    work = tmp_path / "corpus"
    work.mkdir()
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    argv = [
        str(exe),
        f"-max_total_time={SECONDS}",
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-max_len=4096",
        "-print_final_stats=1",
        "-close_fd_mask=2",  # the library's error log lines; libFuzzer and ASan keep a copy of stderr
        f"-artifact_prefix={artifacts}/",
        str(work),
        str(seeds),
    ]
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    res = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=SECONDS + 300, env=env)
    out = res.stdout + res.stderr
    crashes = sorted(p.name for p in artifacts.iterdir())
    stats = {}
    for line in out.splitlines():
        if line.startswith("stat::"):
            key, _, value = line.removeprefix("stat::").partition(":")
            stats[key.strip()] = value.strip()
    assert res.returncode == 0 and not crashes, (
        f"fuzz_{name} found a problem (rc={res.returncode}, artifacts {crashes}); reproduce with "
        f"{exe} <artifact>, then add the input to {seeds} and a regression case:\n{out[-6000:]}"
    )
    executed = int(stats.get("number_of_executed_units", "0"))
    assert executed > 0, out[-3000:]
    print(f"fuzz_{name}: {executed} executions in {SECONDS} s, {stats.get('new_units_added', '?')} new units, no crash")
