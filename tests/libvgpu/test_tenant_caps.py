# ruff: noqa: F811  (pytest fixtures imported from helpers_libvgpu are used as parameters)
"""Issue 18: caps a tenant cannot raise through its environment or files.

Each attack is run as seen (a workload that sets variables or rewrites files of its claim) and
shown refused.  The claim's limits file is mounted the way the container runtime mounts it for
the CDI spec: a read-only bind mount of the plugin's file at /usr/local/vgpu/limits/<claim uid>,
made here in a private user + mount namespace (unshare -Urm) over a tmpfs on /usr/local.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers_libvgpu import GI, MI, Probe, Result, probe, uuid_of, variant, vgpu_build  # noqa: F401

LIMITS_DIR = "/usr/local/vgpu/limits"  # libvgpu's compile-time VGPU_LIMITS_DIR
UID = "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"
U64_MAX = (1 << 64) - 1


def limits_text(u0: str, region: Path, memory: int = GI, cores: int = 30) -> str:
    """What the kubelet plugin writes for a claim holding MEMORY and CORES of GPU u0."""
    return (
        "# dra-hami: the limits of claim default/c1\n"
        f"CUDA_DEVICE_MEMORY_SHARED_CACHE={region}\n"
        f"VGPU_DEVICE_LIMIT_0f1e2d3c_0={u0},{memory},{cores}\n"
        f"CUDA_DEVICE_MEMORY_LIMIT_0={memory // MI}m\nCUDA_DEVICE_SM_LIMIT_0={cores}\n"
    )


def run_mounted(
    p: Probe,
    tmp_path: Path,
    args: list[str],
    env: dict[str, str] | None = None,
    mounted: dict[str, str] | None = None,
    planted: dict[str, str] | None = None,
    inherit: bool = True,
) -> Result:
    """Runs the probe with MOUNTED files (name -> content) bind-mounted read-only under LIMITS_DIR and
    PLANTED files written there on a writable file system (what a tenant can do). INHERIT=False: the
    process has none of the container's variables (env -i, su -, ssh)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) not installed")
    script = ["set -e", "mount -t tmpfs vgpu-test /usr/local", f"mkdir -p {LIMITS_DIR}"]
    host = tmp_path / "host-limits"
    host.mkdir(exist_ok=True)
    for name, text in (mounted or {}).items():
        (host / name).write_text(text)
        (host / name).chmod(0o444)
        target = shlex.quote(f"{LIMITS_DIR}/{name}")
        script += [f"touch {target}", f"mount --bind {shlex.quote(str(host / name))} {target}"]
        script += [f"mount -o remount,bind,ro {target}"]
    for name, text in (planted or {}).items():
        script.append(f"printf %s {shlex.quote(text)} > {shlex.quote(f'{LIMITS_DIR}/{name}')}")
    script.append('exec "$@"')
    full = p.env(env)
    if not inherit:
        full = {k: v for k, v in full.items() if not k.startswith(("CUDA_", "VGPU_", "GPU_CORE"))}
        full.update(env or {})
    res = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", "\n".join(script), "sh", *p.argv(args)],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if res.returncode != 0 and "unshare" in res.stderr and not res.stdout:
        pytest.skip(f"no user+mount namespace here: {res.stderr.strip()}")
    assert res.returncode == 0, f"rc={res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "runtime error" not in res.stderr and "AddressSanitizer" not in res.stderr, res.stderr
    return Result(res.returncode, res.stdout, res.stderr)


def claim_env(u0: str, region: Path) -> dict[str, str]:
    """The variables the claim's CDI spec gives the container."""
    return {"CUDA_DEVICE_MEMORY_SHARED_CACHE": str(region), "VGPU_DEVICE_LIMIT_0f1e2d3c_0": f"{u0},{GI},30"}


def alloc(total: int = GI) -> list[str]:
    """Probe steps: report the device's size, take TOTAL bytes, then one more."""
    return ["init", "ctx", "0", "meminfo", "alloc", str(total), "alloc", "1"]


ALLOC = alloc()


def assert_capped(r: Result, total: int = GI) -> None:
    assert int(r.one("meminfo")["total"]) == total
    assert [x["rc"] for x in r.lines("alloc")][:2] == ["0", "2"]  # all of it, then nothing more


# ---- variables the tenant adds to its own environment (no limits file: HAMi-style use) ------------


def test_extra_uuid_entry_is_not_added(probe, tmp_path):
    """Seen: VGPU_DEVICE_LIMIT_zz=<uuid>,<bytes>,0 gave <bytes> more."""
    u0 = uuid_of(probe, 0)
    env = {**claim_env(u0, probe.cache), "VGPU_DEVICE_LIMIT_zz": f"{u0},{8 * GI},0"}
    assert_capped(probe.run(ALLOC, env))


def test_uint64_max_entry_lifts_neither_cap(probe, tmp_path):
    """Seen: an entry of UINT64_MAX bytes removed the memory cap and the core limit."""
    u0 = uuid_of(probe, 0)
    env = {**claim_env(u0, probe.cache), "VGPU_DEVICE_LIMIT_zz": f"{u0},{U64_MAX},100", "LIBCUDA_LOG_LEVEL": "3"}
    r = probe.run(ALLOC, env)
    assert_capped(r)
    assert "memory limit 1073741824, sm cap 30" in r.stderr


# ---- with the claim's read-only limits file -----------------------------------------------------


def test_limits_file_alone_holds_a_session_without_the_environment(probe, tmp_path):
    """env -i / su - / ssh: the limits come from the file (and so does the region)."""
    u0 = uuid_of(probe, 0)
    region = tmp_path / "claim" / "vgpu.cache"
    region.parent.mkdir()
    r = run_mounted(probe, tmp_path, [*ALLOC, "ctx", "1", "alloc", "1"], mounted={UID: limits_text(u0, region)},
                    inherit=False)  # fmt: skip
    assert int(r.one("meminfo")["total"]) == GI
    assert [x["rc"] for x in r.lines("alloc")] == ["0", "2", "2"]  # the other GPU is not the claim's
    assert region.exists()


def test_variables_cannot_raise_the_file_limits(probe, tmp_path):
    """Seen: the same variables raised the cap, lifted the core limit, disabled throttling, chose
    another region (fresh accounting) or switched everything off."""
    u0 = uuid_of(probe, 0)
    region = tmp_path / "claim" / "vgpu.cache"
    region.parent.mkdir()
    mine = tmp_path / "mine.cache"
    env = {
        **claim_env(u0, region),
        "VGPU_DEVICE_LIMIT_0f1e2d3c_0": f"{u0},{64 * GI},100",
        "VGPU_DEVICE_LIMIT_zz": f"{u0},{U64_MAX},0",
        "CUDA_DEVICE_MEMORY_LIMIT": "0",
        "CUDA_DEVICE_MEMORY_LIMIT_0": "64g",
        "CUDA_DEVICE_SM_LIMIT": "0",
        "GPU_CORE_UTILIZATION_POLICY": "disable",
        "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(mine),
        "CUDA_DISABLE_CONTROL": "1",
        "LIBCUDA_LOG_LEVEL": "3",
    }
    r = run_mounted(probe, tmp_path, ALLOC, env, mounted={UID: limits_text(u0, region)})
    assert_capped(r)
    assert "memory limit 1073741824, sm cap 30" in r.stderr
    assert region.exists() and not mine.exists()


def test_variables_may_lower_the_file_limits(probe, tmp_path):
    u0 = uuid_of(probe, 0)
    region = tmp_path / "claim" / "vgpu.cache"
    region.parent.mkdir()
    mounted = {UID: limits_text(u0, region)}
    env = {**claim_env(u0, region), "VGPU_DEVICE_LIMIT_zz": f"{u0},512m,10", "LIBCUDA_LOG_LEVEL": "3"}
    r = run_mounted(probe, tmp_path, alloc(512 * MI), env, mounted=mounted)
    assert_capped(r, 512 * MI)
    assert "memory limit 536870912, sm cap 10" in r.stderr
    # HAMi's names, in a process without the claim's UUID entries
    env = {"CUDA_DEVICE_MEMORY_LIMIT": "256m", "CUDA_DEVICE_SM_LIMIT": "20", "LIBCUDA_LOG_LEVEL": "3"}
    r = run_mounted(probe, tmp_path, alloc(256 * MI), env, mounted=mounted, inherit=False)
    assert_capped(r, 256 * MI)
    assert "memory limit 268435456, sm cap 20" in r.stderr


def test_rewritten_claim_files_are_ignored(probe, tmp_path):
    """Seen: the claim directory is writable, so a process rewrote vgpu.env; and env -i with its
    own VGPU_CLAIMS_DIR pointed libvgpu at a directory of its choosing."""
    u0 = uuid_of(probe, 0)
    region = tmp_path / "claim" / "vgpu.cache"
    region.parent.mkdir()
    (region.parent / "vgpu.env").write_text(f"VGPU_DEVICE_LIMIT_0f1e2d3c_0={u0},{64 * GI},0\n")
    mine = tmp_path / "mine" / "c1"
    mine.mkdir(parents=True)
    (mine / "vgpu.env").write_text(f"CUDA_DEVICE_MEMORY_LIMIT=64g\nVGPU_DEVICE_LIMIT_a={u0},{64 * GI},0\n")
    env = {"VGPU_CLAIMS_DIR": str(mine.parent)}
    r = run_mounted(probe, tmp_path, ALLOC, env, mounted={UID: limits_text(u0, region)}, inherit=False)
    assert_capped(r)


def test_planted_limits_files_are_ignored(probe, tmp_path):
    """A file the tenant writes into the limits directory (its root file system is writable) is not
    a read-only mount: ignored, even one raising a GPU's limit or naming one the claim lacks."""
    u0, u1 = uuid_of(probe, 0), uuid_of(probe, 1)
    region = tmp_path / "claim" / "vgpu.cache"
    region.parent.mkdir()
    planted = {"0-first": f"VGPU_DEVICE_LIMIT_x={u0},{64 * GI},0\nVGPU_DEVICE_LIMIT_y={u1},{64 * GI},0\n"}
    r = run_mounted(probe, tmp_path, [*ALLOC, "ctx", "1", "alloc", "1"], {"LIBCUDA_LOG_LEVEL": "2"},
                    mounted={UID: limits_text(u0, region)}, planted=planted, inherit=False)  # fmt: skip
    assert int(r.one("meminfo")["total"]) == GI
    assert [x["rc"] for x in r.lines("alloc")] == ["0", "2", "2"]
    assert "0-first is on a writable file system" in r.stderr


def test_oversized_limits_file_fails_closed(probe, tmp_path):
    u0 = uuid_of(probe, 0)
    region = tmp_path / "claim" / "vgpu.cache"
    region.parent.mkdir()
    text = limits_text(u0, region) + "#" * (64 * 1024) + "\n"
    r = run_mounted(probe, tmp_path, ["init", "ctx", "0", "alloc", "1"], mounted={UID: text}, inherit=False)
    assert r.one("alloc")["rc"] == "2"
    assert "cannot read the limits file" in r.stderr


def test_two_claims_give_the_lower_limit(probe, tmp_path):
    """Accounting is per claim (one region per process): a GPU in two claims of one container is held
    to the smaller claim, never to their sum."""
    u0 = uuid_of(probe, 0)
    region = tmp_path / "claim" / "vgpu.cache"
    region.parent.mkdir()
    other = "1a2b3c4d-0000-0000-0000-000000000000"
    mounted = {UID: limits_text(u0, region), other: limits_text(u0, tmp_path / "other.cache", 512 * MI, 20)}
    r = run_mounted(probe, tmp_path, alloc(512 * MI), mounted=mounted, inherit=False)
    assert_capped(r, 512 * MI)
    assert region.exists()  # the first file's region (name order)


def test_region_symlink_is_not_followed(probe, tmp_path):
    """The region lives in the tenant-writable claim directory: a symlink there in its place is not
    followed (no open, truncate or chmod of the file it names)."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    victim.chmod(0o600)
    probe.cache.symlink_to(victim)
    r = probe.run(["init", "ctx", "0", "alloc", "1m"], {"CUDA_DEVICE_MEMORY_LIMIT": "1g"})
    assert r.one("alloc")["rc"] == "0"  # per-process accounting instead
    assert victim.read_text() == "precious" and (victim.stat().st_mode & 0o777) == 0o600
    assert "shared region" in r.stderr


# ---- setuid processes (AT_SECURE) ---------------------------------------------------------------------


def test_setuid_process_ignores_path_variables(libvgpu_build, tmp_path):
    """Seen: a setuid-root program that uses CUDA opened, truncated and chmodded 0666 whatever file its
    caller named in CUDA_DEVICE_MEMORY_SHARED_CACHE (an unused file of another layout is "rebuilt").
    Run for real: libvgpu from /etc/ld.so.preload (as in a container; an overlay over /etc in a private
    mount namespace), `alloc` setuid root, started by uid 65534."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("unshare", "setpriv")):
        pytest.skip("needs root, unshare and setpriv")
    lib, alloc_prog = libvgpu_build.libvgpu, libvgpu_build.program("alloc")
    if lib is None or not alloc_prog.is_file():
        pytest.skip("libvgpu release build missing")
    work = Path(tempfile.mkdtemp(prefix="vgpu-suid-", dir="/tmp"))  # traversable by uid 65534
    try:
        work.chmod(0o755)
        victim = work / "victim"
        victim.write_text("precious")
        victim.chmod(0o600)
        program = work / "alloc"
        shutil.copy(alloc_prog, program)
        program.chmod(0o4755)  # setuid root
        (work / "up").mkdir()
        (work / "wk").mkdir()
        (work / "up" / "ld.so.preload").write_text(f"{lib}\n")
        script = "\n".join(
            [
                "set -e",
                f"mount -t overlay vgpu-etc -o lowerdir=/etc,upperdir={work}/up,workdir={work}/wk /etc",
                'exec setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"',
            ]
        )
        env = {
            "PATH": "/usr/bin:/bin",
            "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(victim),
            "VGPU_CLAIMS_DIR": str(work),
            "CUDA_DEVICE_MEMORY_LIMIT": "1g",
            "FAKE_CUDA_MEMORY": "16g",
            "LIBCUDA_LOG_LEVEL": "2",
        }
        res = subprocess.run(
            ["unshare", "-m", "sh", "-c", script, "sh", str(program), "--size=536870912", "--count=1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "result=CUDA_SUCCESS" in res.stdout and "total_mem=1073741824" in res.stdout, res.stdout + res.stderr
        assert victim.read_text() == "precious" and stat.S_IMODE(victim.stat().st_mode) == 0o600
        assert "secure-execution process" in res.stderr, res.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)
