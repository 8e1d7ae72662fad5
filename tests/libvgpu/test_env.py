# ruff: noqa: F811  (pytest fixtures imported from helpers_libvgpu are used as parameters)
"""Environment contract: strict sizes (fail closed), log levels (reference §14 B.6, B.7), and the claim
files that stand in for a missing environment."""

from __future__ import annotations

import pytest
from helpers_libvgpu import GI, MI, probe, variant, vgpu_build  # noqa: F401


@pytest.mark.parametrize(
    ("value", "total"),
    [
        ("4096m", 4 * GI),
        ("4096M", 4 * GI),
        ("4g", 4 * GI),
        ("4G", 4 * GI),
        ("4Gi", 4 * GI),
        ("4GiB", 4 * GI),
        ("4gb", 4 * GI),
        (str(3 * GI), 3 * GI),
        ("08G", 8 * GI),
        ("512k", 512 * 1024),
    ],
)
def test_good_sizes(probe, value, total):
    r = probe.run(["init", "ctx", "0", "meminfo"], {"CUDA_DEVICE_MEMORY_LIMIT": value})
    assert int(r.one("meminfo")["total"]) == total
    assert r.stderr == ""


@pytest.mark.parametrize("value", ["4gb?", "-1", "1.5g", "0x10G", "50%", "abc", "", "99999999999999999999999"])
def test_bad_sizes_fail_closed(probe, value):
    r = probe.run(["init", "ctx", "0", "meminfo", "alloc", "1"], {"CUDA_DEVICE_MEMORY_LIMIT": value})
    assert "CUDA_DEVICE_MEMORY_LIMIT" in r.stderr and "accepted forms" in r.stderr
    assert int(r.one("meminfo")["total"]) == 0
    assert r.one("alloc")["rc"] == "2"


def test_zero_means_no_limit(probe):
    r = probe.run(["init", "ctx", "0", "alloc", "2g"], {"CUDA_DEVICE_MEMORY_LIMIT": "0m"})
    assert r.one("alloc")["rc"] == "0"


def test_bad_uuid_entry_fails_closed(probe):
    r = probe.run(["init", "uuid", "0"], preload=False)
    u0 = r.one("uuid")["uuid"]
    r = probe.run(["init", "ctx", "0", "alloc", "1"], {"VGPU_DEVICE_LIMIT_q": f"{u0},4gb?,0"})
    assert "VGPU_DEVICE_LIMIT_q" in r.stderr
    assert r.one("alloc")["rc"] == "2"


def test_default_log_is_quiet_and_debug_is_prefixed(probe):
    quiet = probe.run(["init", "ctx", "0", "alloc", "1m", "alloc", "2g"], {"CUDA_DEVICE_MEMORY_LIMIT": "1g"})
    assert quiet.stderr == ""
    loud = probe.run(["init", "ctx", "0", "alloc", "1m"], {"CUDA_DEVICE_MEMORY_LIMIT": "1g", "LIBCUDA_LOG_LEVEL": "4"})
    lines = [x for x in loud.stderr.splitlines() if x]
    assert lines and all(x.startswith("[libvgpu]") for x in lines)
    assert loud.stdout.count("[libvgpu]") == 0


# ---- claim files (HAMi#1090): a session without the container's environment keeps the claim's limits


def claim_files(probe, tmp_path, files: dict[str, str | None]) -> dict[str, str]:
    """Claim dirs under tmp_path/claims with the given vgpu.env contents (None: unreadable), and the
    environment of a process that inherited none of the claim variables (su -, ssh, env -i)."""
    probe.base_env.pop("CUDA_DEVICE_MEMORY_SHARED_CACHE")
    root = tmp_path / "claims"
    for uid, text in files.items():
        (root / uid).mkdir(parents=True)
        if text is None:
            (root / uid / "vgpu.env").mkdir()  # read() fails: EISDIR
        else:
            (root / uid / "vgpu.env").write_text(text)
    return {"VGPU_CLAIMS_DIR": str(root)}


def test_claim_files_stand_in_for_a_missing_environment(probe, tmp_path):
    u0 = probe.run(["init", "uuid", "0"], preload=False).one("uuid")["uuid"]
    region = tmp_path / "claims" / "c1" / "vgpu.cache"
    env = claim_files(
        probe,
        tmp_path,
        {"c1": f"# written by the kubelet plugin\nCUDA_DEVICE_MEMORY_SHARED_CACHE={region}\r\n"
               f"VGPU_DEVICE_LIMIT_c1_0={u0},{GI},0\nnot a variable\n"},
    )  # fmt: skip
    r = probe.run(["init", "ctx", "0", "meminfo", "alloc", "1g", "alloc", "1", "ctx", "1", "alloc", "1"], env)
    assert int(r.one("meminfo")["total"]) == GI
    assert [x["rc"] for x in r.lines("alloc")] == ["0", "2", "2"]  # the claim's GPU is capped, the other refused
    assert region.exists()  # the claim's shared region, named by the file
    assert "line 4: expected NAME=VALUE" in r.stderr and "not a variable" in r.stderr


def test_the_process_environment_wins_over_claim_files(probe, tmp_path):
    env = claim_files(probe, tmp_path, {"c1": "CUDA_DEVICE_MEMORY_LIMIT=1g\n"})
    r = probe.run(["init", "ctx", "0", "meminfo"], {**env, "CUDA_DEVICE_MEMORY_LIMIT": "2g"})
    assert int(r.one("meminfo")["total"]) == 2 * GI
    assert r.stderr == ""


def test_claim_files_of_several_claims_are_merged(probe, tmp_path):
    files = {"a": "CUDA_DEVICE_MEMORY_LIMIT_0=1g\n", "b": "CUDA_DEVICE_MEMORY_LIMIT_1=512m\n"}
    env = claim_files(probe, tmp_path, files)
    r = probe.run(["init", "ctx", "0", "meminfo", "ctx", "1", "meminfo"], env)
    assert [int(x["total"]) for x in r.lines("meminfo")] == [GI, 512 * MI]


def test_unreadable_claim_file_fails_closed(probe, tmp_path):
    env = claim_files(probe, tmp_path, {"a": "CUDA_DEVICE_MEMORY_LIMIT=1g\n", "b": None})
    r = probe.run(["init", "ctx", "0", "alloc", "1"], env)
    assert r.one("alloc")["rc"] == "2"
    assert "cannot read" in r.stderr and "b/vgpu.env" in r.stderr


def test_no_claim_files_no_change(probe, tmp_path):
    env = claim_files(probe, tmp_path, {})
    (tmp_path / "claims" / "not-a-claim").mkdir(parents=True)  # a directory without vgpu.env
    r = probe.run(["init", "ctx", "0", "alloc", "20g", "meminfo"], env)
    assert r.one("alloc")["rc"] == "2"  # the fake's 16 GiB, no limit: the driver's own OOM
    assert int(r.one("meminfo")["total"]) == 16 * GI and r.stderr == ""
