"""A stand-in for the kubelet's side of the node: run the real plugin process and talk gRPC to it.

Used by `dra-hami demo` and by the integration tests; the plugin runs exactly as on a node (its own
process, unix sockets, the real Kubernetes client) against the in-memory API server.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from dra_hami import wire
from dra_hami.demo.apiserver import FakeApiServer
from dra_hami.kubeletapi import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)
from dra_hami.plugin import sockets

DRIVER = wire.DEFAULT_DRIVER_NAME


@dataclass
class PluginProcess:
    root: Path
    api: FakeApiServer
    node_name: str = "node-a"
    profile: str = "t4x2"
    libvgpu: Path | None = None  # a built libvgpu.so to mount into containers
    driver_name: str = DRIVER
    cdi_root: Path | None = None  # the runtime's CDI dir; default: a private one under root
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    _dra: grpc.Channel | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Unix socket paths are limited to 107 bytes: keep sockets under a short directory (TMPDIR when it is
        # short, else /tmp). cleanup() removes it.
        parent = tempfile.gettempdir()
        self.socket_root = Path(tempfile.mkdtemp(prefix="dh-", dir=parent if len(parent) <= 40 else "/tmp"))

    @property
    def plugin_dir(self) -> Path:
        return self.socket_root / "plugins" / self.driver_name

    @property
    def registry_dir(self) -> Path:
        return self.socket_root / "registry"

    @property
    def cdi_dir(self) -> Path:
        return self.cdi_root or self.root / "cdi"

    @property
    def vgpu_dir(self) -> Path:
        return self.root / "vgpu"

    @property
    def boot_id_file(self) -> Path:
        return self.root / "boot_id"

    @property
    def dra_socket(self) -> Path:
        return sockets.dra_socket(self.plugin_dir)

    @property
    def registration_socket(self) -> Path:
        return sockets.registration_socket(self.registry_dir, self.driver_name)

    @property
    def log_path(self) -> Path:
        return self.root / "plugin.log"

    def start(self) -> PluginProcess:
        if not self.boot_id_file.exists():
            self.boot_id_file.write_text(str(uuid.uuid4()))
        self.vgpu_dir.mkdir(parents=True, exist_ok=True)
        # Without a built libvgpu the specs still name its path; nothing here starts a container.
        libvgpu_args = ["--libvgpu-path", str(self.libvgpu)] if self.libvgpu else ["--no-require-libvgpu"]
        kubeconfig = self.api.write_kubeconfig(self.root / "kubeconfig")
        for stale in (self.dra_socket, self.registration_socket):
            stale.unlink(missing_ok=True)
        args = [
            sys.executable, "-m", "dra_hami", "kubelet-plugin",
            "--driver-name", self.driver_name, "--node-name", self.node_name, "--kubeconfig", str(kubeconfig),
            "--fake-profile", self.profile,
            "--plugin-dir", str(self.plugin_dir), "--registry-dir", str(self.registry_dir),
            "--cdi-dir", str(self.cdi_dir), "--vgpu-dir", str(self.vgpu_dir),
            "--device-injection", "none", "--boot-id-file", str(self.boot_id_file),
            # No container ever runs on this demo node: plain directories, no tmpfs mounts to leave behind.
            "--claim-dir-storage", "directory",
            "--publish-interval", "1", "--sweep-interval", "3600", "--log-level", "debug",
            *libvgpu_args, *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log_path.open("ab"))
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"plugin exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            if self.registration_socket.exists():
                try:
                    self.get_info(timeout=1)
                    return
                except grpc.RpcError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"plugin not ready after {timeout}s:\n{self.log_path.read_text()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self._dra is not None:
            self._dra.close()
            self._dra = None
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=15)

    def stop(self) -> None:
        """Stop the plugin (SIGTERM); the state under root survives for a restart."""
        self.kill(signal.SIGTERM)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.socket_root, ignore_errors=True)

    # -- gRPC clients ---------------------------------------------------------------------------------

    def _channel(self, socket: Path) -> grpc.Channel:
        return grpc.insecure_channel(f"unix://{socket}")

    def _dra_channel(self) -> grpc.Channel:
        """One connection for all DRA calls, kept open as the kubelet keeps its own."""
        if self._dra is None:
            self._dra = self._channel(self.dra_socket)
        return self._dra

    def get_info(self, timeout: float = 5) -> pluginregistration_pb2.PluginInfo:
        with self._channel(self.registration_socket) as channel:
            stub = pluginregistration_pb2_grpc.RegistrationStub(channel)
            return stub.GetInfo(pluginregistration_pb2.InfoRequest(), timeout=timeout)

    def notify_registered(self, registered: bool = True, error: str = "") -> None:
        with self._channel(self.registration_socket) as channel:
            stub = pluginregistration_pb2_grpc.RegistrationStub(channel)
            stub.NotifyRegistrationStatus(
                pluginregistration_pb2.RegistrationStatus(plugin_registered=registered, error=error), timeout=5
            )

    def prepare(self, claims: list[dict[str, Any]], version: str = "v1", timeout: float = 45):
        pb2, grpc_mod = (dra_v1_pb2, dra_v1_pb2_grpc) if version == "v1" else (dra_v1beta1_pb2, dra_v1beta1_pb2_grpc)
        request = pb2.NodePrepareResourcesRequest(claims=[_claim_message(pb2, c) for c in claims])
        return grpc_mod.DRAPluginStub(self._dra_channel()).NodePrepareResources(request, timeout=timeout)

    def unprepare(self, claims: list[dict[str, Any]], timeout: float = 45):
        request = dra_v1_pb2.NodeUnprepareResourcesRequest(claims=[_claim_message(dra_v1_pb2, c) for c in claims])
        return dra_v1_pb2_grpc.DRAPluginStub(self._dra_channel()).NodeUnprepareResources(request, timeout=timeout)


def _claim_message(pb2, claim: dict[str, Any]):
    meta = claim["metadata"]
    return pb2.Claim(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
