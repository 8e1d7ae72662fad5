"""Helpers for the libvgpu interception tests (tests/libvgpu/test_*.py).

The tests drive ``libvgpu/tests/unit/vgpu_probe.c`` (a scriptable, cudart-like driver client)
against the fake ``libcuda.so.1`` / ``libnvidia-ml.so.1`` of ``libvgpu/build/fake`` (or the
directory named by ``VGPU_FAKE_DIR``), with ``libvgpu.so`` built from ``libvgpu/src`` in three
variants: plain, ASan and UBSan.  Everything is compiled once per session into a temporary
directory, so the tests depend only on the sources, the headers and the fake driver.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIBVGPU = REPO / "libvgpu"
SRC = LIBVGPU / "src"
UNIT = LIBVGPU / "tests" / "unit"
VARIANTS = ("plain", "asan", "ubsan")

CFLAGS = ["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-fno-omit-frame-pointer"]
SANITIZE = {
    "plain": [],
    "asan": ["-fsanitize=address"],
    "ubsan": ["-fsanitize=undefined", "-fno-sanitize-recover=all"],
}
RUNTIME = {"plain": None, "asan": "libasan.so", "ubsan": "libubsan.so"}

MI = 1 << 20
GI = 1 << 30


def cuda_include() -> Path | None:
    env = os.environ.get("VGPU_CUDA_INCLUDE")
    if env and (Path(env) / "cuda.h").is_file():
        return Path(env)
    cache = Path(os.environ.get("DRA_HAMI_CACHE", Path.home() / ".cache" / "dra-hami"))
    for inc in sorted(cache.glob("cuda-headers-*/include"), reverse=True):
        if (inc / "cuda.h").is_file() and (inc / "nvml.h").is_file():
            return inc
    script = LIBVGPU / "scripts" / "fetch-headers.sh"
    if script.is_file() and shutil.which("bash"):
        try:
            out = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300, check=True)
            inc = Path(out.stdout.strip().splitlines()[-1])
            if (inc / "cuda.h").is_file():
                return inc
        except (subprocess.SubprocessError, IndexError):
            return None
    return None


def fake_dir() -> Path | None:
    d = Path(os.environ.get("VGPU_FAKE_DIR", LIBVGPU / "build" / "fake"))
    if (d / "libcuda.so.1").is_file() and (d / "libnvidia-ml.so.1").is_file():
        return d
    return None


def sanitizer_runtime(variant: str) -> str | None:
    name = RUNTIME[variant]
    if name is None:
        return None
    out = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True)
    path = out.stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


def compile_c(
    out: Path, sources: list[Path], inc: Path, variant: str, shared: bool = False, defines: tuple[str, ...] = ()
) -> Path:
    cmd = ["gcc", *CFLAGS, *SANITIZE[variant], *(f"-D{d}" for d in defines), f"-I{SRC}", f"-I{inc}"]
    if shared:
        cmd += ["-shared", "-fPIC", "-fvisibility=hidden", f"-Wl,--version-script={SRC / 'exports.map'}"]
    cmd += ["-o", str(out), *map(str, sources), "-ldl", "-lpthread"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"compile failed: {' '.join(cmd)}\n{res.stderr}")
    return out


@dataclass
class Build:
    """Compiled artifacts for one session."""

    root: Path
    inc: Path
    fake: Path | None
    libs: dict[str, Path] = field(default_factory=dict)
    probe: Path | None = None

    def lib(self, variant: str, hooks: bool = False) -> Path:
        """libvgpu.so; HOOKS: the test build (VGPU_TEST_HOOKS: CUDA_DISABLE_CONTROL and
        VGPU_TEST_STALL_IN_LOCK are honoured), which is never shipped."""
        key = f"{variant}-hooks" if hooks else variant
        if key not in self.libs:
            srcs = sorted(SRC.glob("*.c"))
            defines = ("VGPU_TEST_HOOKS",) if hooks else ()
            self.libs[key] = compile_c(self.root / f"libvgpu-{key}.so", srcs, self.inc, variant, True, defines)
        return self.libs[key]

    def probe_bin(self) -> Path:
        if self.probe is None:
            self.probe = compile_c(self.root / "vgpu_probe", [UNIT / "vgpu_probe.c"], self.inc, "plain")
        return self.probe


@pytest.fixture(scope="session")
def vgpu_build(tmp_path_factory) -> Build:
    inc = cuda_include()
    if inc is None:
        pytest.skip("CUDA/NVML headers not available (libvgpu/scripts/fetch-headers.sh)")
    return Build(root=tmp_path_factory.mktemp("vgpu-build"), inc=inc, fake=fake_dir())


@pytest.fixture(params=VARIANTS)
def variant(request, vgpu_build) -> str:
    if request.param != "plain" and sanitizer_runtime(request.param) is None:
        pytest.skip(f"{request.param} runtime not installed")
    return request.param


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    def lines(self, cmd: str) -> list[dict[str, str]]:
        """Parsed ``cmd k=v ...`` lines of the probe output, in order."""
        out = []
        for line in self.stdout.splitlines():
            parts = line.split()
            if parts and parts[0] == cmd:
                out.append(dict(p.split("=", 1) for p in parts[1:] if "=" in p))
        return out

    def one(self, cmd: str, i: int = -1) -> dict[str, str]:
        got = self.lines(cmd)
        assert got, f"no '{cmd}' line in output:\n{self.stdout}\n{self.stderr}"
        return got[i]


class Probe:
    """Runs vgpu_probe with libvgpu preloaded against the fake driver."""

    def __init__(self, build: Build, variant: str, tmp_path: Path, hooks: bool = False):
        if build.fake is None:
            pytest.skip("fake driver not built (make -C libvgpu: build/fake/libcuda.so.1)")
        self.build = build
        self.variant = variant
        self.hooks = hooks
        self.cache = tmp_path / "vgpu.cache"
        self.base_env = {
            "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(self.cache),
            "FAKE_CUDA_DEVICE_COUNT": "2",
            "FAKE_CUDA_MEMORY": str(16 * GI),
            "FAKE_CUDA_STATE": str(tmp_path / "fake.state"),
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        }

    def env(self, extra: dict[str, str] | None = None, preload: bool = True) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA_", "VGPU_", "LIBCUDA_", "GPU_CORE"))}
        env.update(self.base_env)
        env["LD_LIBRARY_PATH"] = str(self.build.fake)
        if preload:
            pre = [str(self.build.lib(self.variant, self.hooks))]
            rt = sanitizer_runtime(self.variant)
            if rt:
                pre.insert(0, rt)
            env["LD_PRELOAD"] = ":".join(pre)
            if self.variant == "asan":
                # the fake driver and the probe leave device memory to process exit on purpose
                env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0"
            if self.variant == "ubsan":
                env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
        env.update(extra or {})
        return env

    def argv(self, args: list[str], via: str = "dlsym") -> list[str]:
        return [str(self.build.probe_bin()), f"--via={via}", *args]

    def run(
        self,
        args: list[str],
        extra: dict[str, str] | None = None,
        via: str = "dlsym",
        preload: bool = True,
        timeout: float = 60,
        check: bool = True,
    ) -> Result:
        res = subprocess.run(
            self.argv(args, via), env=self.env(extra, preload), capture_output=True, text=True, timeout=timeout
        )
        r = Result(res.returncode, res.stdout, res.stderr)
        if check:
            assert res.returncode == 0, f"probe failed rc={res.returncode}\n{res.stdout}\n{res.stderr}"
            assert "runtime error" not in res.stderr and "AddressSanitizer" not in res.stderr, res.stderr
        return r

    def start(self, args: list[str], extra: dict[str, str] | None = None, via: str = "dlsym") -> subprocess.Popen:
        return subprocess.Popen(
            self.argv(args, via),
            env=self.env(extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def wait_for_line(stream, pattern: str, timeout: float = 20) -> str:
    """Reads STREAM (unbuffered, through its fd) until a line matches PATTERN (regex); fails
    after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    fd = stream.fileno()
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        for line in buf.decode(errors="replace").splitlines():
            if rx.search(line):
                return line
    raise AssertionError(f"pattern {pattern!r} not seen within {timeout}s; got: {buf.decode(errors='replace')}")


@pytest.fixture
def probe(vgpu_build, variant, tmp_path) -> Probe:
    return Probe(vgpu_build, variant, tmp_path)


@pytest.fixture
def probe_plain(vgpu_build, tmp_path) -> Probe:
    return Probe(vgpu_build, "plain", tmp_path)


@pytest.fixture
def probe_hooks(vgpu_build, variant, tmp_path) -> Probe:
    """A probe running the test build of libvgpu (VGPU_TEST_HOOKS)."""
    return Probe(vgpu_build, variant, tmp_path, hooks=True)


def uuid_of(p: Probe, dev: int) -> str:
    return p.run(["init", "uuid", str(dev)], preload=False).one("uuid")["uuid"]
