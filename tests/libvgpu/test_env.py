# ruff: noqa: F811  (pytest fixtures imported from helpers_libvgpu are used as parameters)
"""Environment contract: strict sizes (fail closed), log levels (reference §14 B.6, B.7)."""

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
