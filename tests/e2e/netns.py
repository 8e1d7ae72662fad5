"""The e2e cluster's own network namespace: made by the harness, removed by it, with no route out.

Every cluster process (etcd, the control plane, containerd, the kubelet, kube-proxy, the plugins the tests start)
runs in it, and so do the test session's own connections while a test runs: the session's main thread joins the
namespace with setns(2) (threads and child processes it starts afterwards inherit it). Inside, the node has a
non-loopback address (the kubelet's node IP and the API server's advertise address, so the ``kubernetes`` Service
has a valid endpoint), and the pods' bridge lives there too. Nothing in it is routed anywhere else: traffic stays
between loopback, the node address, the service and pod ranges, all inside namespaces this run created.

The host namespace is remembered at import (collection time), so builds that need the package registries can still
run there (``run_in_host``) while a test holds the cluster's namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")  # where `ip netns add` mounts the namespace handles
_libc = ctypes.CDLL(None, use_errno=True)
_HOST_NS_FD = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


class NetnsError(RuntimeError):
    pass


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns(CLONE_NEWNET) failed: {os.strerror(err)}")


@contextlib.contextmanager
def restored() -> Iterator[None]:
    """Whatever namespace the calling thread is in now, it is in again afterwards."""
    prev = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield
    finally:
        try:
            _setns(prev)
        finally:
            os.close(prev)


def _to_host() -> None:  # a preexec_fn: the child is single-threaded between fork and exec
    _setns(_HOST_NS_FD)


def run_in_host(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run in the namespace the session started in (a build that fetches modules needs it)."""
    return subprocess.run(cmd, preexec_fn=_to_host, **kwargs)


def ip(*args: str, netns: str | None = None) -> str:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NetnsError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


class NetNs:
    """A named namespace (``ip netns add``); ``enter()`` moves the calling thread into it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = NETNS_DIR / name

    def create(self) -> NetNs:
        if self.path.exists():  # a leftover of a killed run with the same name: never reuse its state
            self.delete()
        ip("netns", "add", self.name)
        ip("link", "set", "lo", "up", netns=self.name)
        return self

    def exists(self) -> bool:
        return self.path.exists()

    def enter(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        with restored():
            self.enter()
            yield

    def sysctl(self, key: str, value: str) -> None:
        path = Path("/proc/sys") / key.replace(".", "/")
        with self.entered():
            path.write_text(value)  # /proc/sys/net is per network namespace: read in the thread's namespace

    def delete(self) -> None:
        with contextlib.suppress(NetnsError):
            ip("netns", "delete", self.name)
