"""Build and run helpers for the libvgpu workload programs and the fake CUDA driver.

``make -C libvgpu`` builds, per variant (release / asan / ubsan), ``libvgpu.so``, the fake
``libcuda.so.1`` / ``libnvidia-ml.so.1`` under ``fake/`` and the workload programs of
``libvgpu/tests/programs`` under ``programs/``. :class:`Runner` runs one of those programs
against the fake (``LD_LIBRARY_PATH``), optionally with ``libvgpu.so`` preloaded, and parses its
``key=value`` output. conftest.py exposes all this as fixtures (``libvgpu_builds``,
``libvgpu_build``, ``run_program``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIBVGPU = REPO / "libvgpu"
VARIANTS = ("release", "asan", "ubsan")
BUILD_DIRS = {
    "release": LIBVGPU / "build",
    "asan": LIBVGPU / "build" / "asan",
    "ubsan": LIBVGPU / "build" / "ubsan",
}
MAKE_TARGETS = {"release": "all", "asan": "asan", "ubsan": "ubsan"}
SANITIZER_RUNTIME = {"asan": "libasan.so", "ubsan": "libubsan.so"}

KI = 1 << 10
MI = 1 << 20
GI = 1 << 30

# environment of the host that must not leak into a program under test
_SCRUB_PREFIXES = ("CUDA_", "FAKE_CUDA_", "LIBCUDA_", "GPU_CORE_", "VGPU_", "NVIDIA_")
_SCRUB_NAMES = ("LD_PRELOAD", "LD_LIBRARY_PATH", "ASAN_OPTIONS", "UBSAN_OPTIONS")


def parse_kv(text: str) -> dict[str, str]:
    """``key=value`` lines (key without blanks) into a dict; a repeated key keeps its last value."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and " " not in key and "," not in key:
            out[key] = value
    return out


@dataclass
class ProgramResult:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    kv: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> str:
        if key not in self.kv:
            raise KeyError(f"{key!r} not in the output of {' '.join(self.argv)}:\n{self.stdout}\n{self.stderr}")
        return self.kv[key]

    def __contains__(self, key: str) -> bool:
        return key in self.kv

    def int(self, key: str) -> int:
        return int(self[key])

    def float(self, key: str) -> float:
        return float(self[key])

    def describe(self) -> str:
        return f"$ {' '.join(self.argv)}\nrc={self.rc}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"

    def check(self, rc: int = 0) -> ProgramResult:
        assert self.rc == rc, self.describe()
        assert not sanitizer_report(self.stderr), self.describe()
        return self


def sanitizer_report(stderr: str) -> bool:
    return "ERROR: AddressSanitizer" in stderr or "runtime error:" in stderr or "ERROR: LeakSanitizer" in stderr


def sanitizer_runtime(variant: str) -> str | None:
    """Absolute path of the sanitizer runtime to preload before an instrumented libvgpu.so."""
    name = SANITIZER_RUNTIME.get(variant)
    if name is None:
        return None
    cc = os.environ.get("CC", "gcc")
    try:
        out = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    path = out.stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


@dataclass
class BuildInfo:
    """What ``make`` produced for one variant (``make -k``: parts may be missing)."""

    variant: str
    root: Path
    returncode: int
    log: str

    @property
    def fake_dir(self) -> Path:
        return self.root / "fake"

    @property
    def programs_dir(self) -> Path:
        return self.root / "programs"

    @property
    def libvgpu(self) -> Path | None:
        lib = self.root / "libvgpu.so"
        return lib if lib.is_file() else None

    @property
    def fake_ok(self) -> bool:
        return (self.fake_dir / "libcuda.so.1").is_file() and (self.fake_dir / "libnvidia-ml.so.1").is_file()

    def program(self, name: str) -> Path:
        path = self.programs_dir / name
        if not path.is_file():
            pytest.fail(f"program {name} was not built ({self.variant}):\n{self.log[-4000:]}")
        return path

    def log_tail(self, n: int = 3000) -> str:
        return self.log[-n:]


def run_make(variant: str = "release", jobs: int = 2, timeout: float = 900) -> BuildInfo:
    """``make -C libvgpu -jN -k <target>``; never raises (a failure is reported in BuildInfo)."""
    cmd = ["make", "-C", str(LIBVGPU), f"-j{jobs}", "-k", MAKE_TARGETS[variant]]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        rc, log = res.returncode, res.stdout + res.stderr
    except (OSError, subprocess.SubprocessError) as e:
        rc, log = -1, f"{' '.join(cmd)}: {e}"
    return BuildInfo(variant=variant, root=BUILD_DIRS[variant], returncode=rc, log=log)


class Builds:
    """Session cache: builds each variant at most once, on first request."""

    def __init__(self, jobs: int = 2):
        self.jobs = jobs
        self._done: dict[str, BuildInfo] = {}
        self._lock = threading.Lock()

    def get(self, variant: str = "release") -> BuildInfo:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
        with self._lock:
            if variant not in self._done:
                self._done[variant] = run_make(variant, self.jobs)
            return self._done[variant]

    def require_fake(self, variant: str = "release") -> BuildInfo:
        b = self.get(variant)
        if not b.fake_ok:
            if "fetch-headers" in b.log or "cuda.h" in b.log:
                pytest.skip(f"CUDA/NVML headers unavailable, fake driver not built:\n{b.log_tail(1500)}")
            pytest.fail(f"fake driver failed to build ({variant}):\n{b.log_tail()}")
        return b


class Runner:
    """Runs workload programs; see :meth:`__call__`. One per test (own fake device state)."""

    def __init__(self, builds: Builds, state_dir: Path):
        self.builds = builds
        self.state_dir = state_dir
        self.state_file = state_dir / "fake-gpu.state"
        self._procs: list[subprocess.Popen] = []

    def env(
        self,
        env: dict[str, str | None] | None = None,
        preload: bool = True,
        variant: str = "release",
    ) -> dict[str, str]:
        build = self.builds.require_fake(variant)
        out = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES) and k not in _SCRUB_NAMES}
        out["LD_LIBRARY_PATH"] = str(build.fake_dir)
        # one simulated GPU per test, shared by every process the test starts
        out["FAKE_CUDA_STATE"] = str(self.state_file)
        if variant == "asan":
            out["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0:halt_on_error=1"
        if variant == "ubsan":
            out["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
        if preload:
            lib = build.libvgpu
            if lib is None:
                pytest.skip(
                    f"libvgpu.so not built ({variant}; libvgpu/src missing or failing):\n{build.log_tail(1500)}"
                )
            pre = [str(lib)]
            rt = sanitizer_runtime(variant)
            if rt:
                pre.insert(0, rt)  # the runtime must come first in the library list
            out["LD_PRELOAD"] = ":".join(pre)
        for k, v in (env or {}).items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = str(v)
        return out

    def argv(self, name: str, args: list[str] | tuple[str, ...], variant: str) -> list[str]:
        return [str(self.builds.require_fake(variant).program(name)), *map(str, args)]

    def __call__(
        self,
        name: str,
        args: list[str] | tuple[str, ...] = (),
        env: dict[str, str | None] | None = None,
        preload: bool = True,
        variant: str = "release",
        timeout: float = 120,
        check: bool = False,
        input: str | None = None,
    ) -> ProgramResult:
        """Run program ``name`` (libvgpu/tests/programs/<name>.c) and parse its key=value output.

        ``env`` adds to (``None`` removes from) a scrubbed copy of os.environ that points
        LD_LIBRARY_PATH at the fake driver and FAKE_CUDA_STATE at this test's state file.
        ``preload`` puts libvgpu.so in LD_PRELOAD (skipping the test when it is not built).
        ``check`` asserts exit status 0 and no sanitizer report.
        """
        argv = self.argv(name, args, variant)
        res = subprocess.run(
            argv,
            env=self.env(env, preload, variant),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input if input is not None else "",
        )
        result = ProgramResult(argv, res.returncode, res.stdout, res.stderr, parse_kv(res.stdout))
        return result.check() if check else result

    def spawn(
        self,
        name: str,
        args: list[str] | tuple[str, ...] = (),
        env: dict[str, str | None] | None = None,
        preload: bool = True,
        variant: str = "release",
    ) -> subprocess.Popen:
        """Start a program in the background (stdin/stdout/stderr pipes); with ``--hold=-1`` it
        keeps its memory until :func:`release` closes its stdin. Killed at test teardown."""
        p = subprocess.Popen(
            self.argv(name, args, variant),
            env=self.env(env, preload, variant),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._procs.append(p)
        return p

    def cleanup(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for s in (p.stdin, p.stdout, p.stderr):
                if s:
                    s.close()


def wait_ready(proc: subprocess.Popen, key: str = "ready", timeout: float = 30) -> dict[str, str]:
    """Read a spawned program's stdout until a ``key=`` line; returns the lines read so far."""
    lines: list[str] = []
    timer = threading.Timer(timeout, lambda: proc.send_signal(signal.SIGKILL))
    timer.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(f"{key}="):
                return parse_kv("".join(lines))
    finally:
        timer.cancel()
    err = proc.stderr.read() if proc.stderr else ""
    raise AssertionError(f"no {key}= line (rc={proc.poll()}):\n{''.join(lines)}\n{err}")


def release(proc: subprocess.Popen, timeout: float = 30) -> ProgramResult:
    """Close a held program's stdin and collect the rest of its output."""
    out, err = proc.communicate(timeout=timeout)
    return ProgramResult(list(map(str, proc.args)), proc.returncode, out, err, parse_kv(out))
