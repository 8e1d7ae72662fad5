"""A real single-node Kubernetes cluster in a network namespace of its own, for the e2e suite.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy (built from the module proxy
by tests/e2e/build.sh) and containerd 2.x with runc and the reference CNI plugins, all as child processes of the
test session, all state in one harness directory, all in one network namespace the harness creates and removes
(netns.py; the session's main thread joins it while a test runs). Pods get their own addresses from the bridge
plugin (POD_SUBNET), Services route through kube-proxy, and the ``kubernetes`` Service points at the node address
(NODE_IP) the API server advertises, so in-cluster configuration works. ``hostNetwork: true`` pods share the
namespace's loopback with the components. The kubelet serves on 127.0.0.1 only, so there is no
``kubectl logs``/``exec``: read container output with :meth:`Cluster.pod_log`, which parses the kubelet's pod-log
directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from e2e_images import BUSYBOX_IMAGE, PAUSE_ENTRYPOINT, PAUSE_IMAGE, ImageSpec, ImageStore, busybox_rootfs
from e2e_pki import CertSpec, KeyPair, Pki, write_kubeconfig
from netns import NETNS_DIR, NetNs, ip, run_in_host

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parents[1]
NODE_NAME = "e2e-node"
DRIVER = "hami-core-gpu.project-hami.io"
SERVICE_CIDR = "10.0.0.0/24"
# Addresses inside the cluster's own network namespace (nothing outside it sees or routes them).
NODE_IP = "10.200.0.2"  # the kubelet's node IP and the API server's advertise address
NODE_PREFIX = 24
POD_SUBNET = "10.244.0.0/24"  # the bridge plugin's host-local range; 10.244.0.1 is the bridge (the pods' gateway)
CLUSTER_CIDR = "10.244.0.0/16"
# One kubelet per host: two would fight over the /kubepods cgroups (each removes pod cgroups it does not know).
HOST_LOCK = Path("/tmp/dra-hami-e2e.lock")

# DRA gates of 1.36 that dra-hami relies on. All are beta/GA and on by default in 1.36; naming them makes a
# version whose defaults differ fail loudly (an unknown or locked gate makes the components refuse to start).
FEATURE_GATES = {
    "DRAConsumableCapacity": True,
    "DRADeviceBindingConditions": True,
    "DRAResourceClaimDeviceStatus": True,
    "DRAPartitionableDevices": True,
    "DRAExtendedResource": True,
    "ResourceHealthStatus": True,
}


class HarnessError(RuntimeError):
    """The e2e harness could not do its job (build, start-up, a wait): never a reason to skip."""


# ----------------------------------------------------------------------------------------------- build


def build_binaries(timeout: float = 3600, *, stream: bool = False) -> Path:
    """Run build.sh (a no-op when the cache is warm) and return the bin directory.

    ``stream``: build.sh's progress goes straight to this process's stderr as it happens (a cold build takes
    minutes and must not look like a hang); else it is captured and shown afterwards.
    """
    started = time.monotonic()
    proc = run_in_host(  # the module proxy is outside the cluster's namespace
        ["bash", str(E2E_DIR / "build.sh")],
        stdout=subprocess.PIPE,
        stderr=None if stream else subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )
    stderr = "(shown above)" if stream else proc.stderr
    if proc.returncode != 0:
        raise HarnessError(
            f"tests/e2e/build.sh failed with exit code {proc.returncode} after {time.monotonic() - started:.0f} s:\n"
            f"{_tail_text(stderr, 60)}\n{_tail_text(proc.stdout, 20)}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BIN_DIR=")]
    if not lines:
        raise HarnessError(f"build.sh printed no BIN_DIR line:\n{proc.stdout}\n{stderr}")
    if not stream:
        sys.stderr.write(stderr)
    return Path(lines[-1].split("=", 1)[1])


# ----------------------------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail_text(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def tail(path: Path, lines: int = 40, width: int = 600) -> str:
    """The last ``lines`` lines of ``path``, each cut to ``width`` characters (kubelet lines can be huge)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            text = _tail_text(f.read().decode(errors="replace"), lines)
            return "\n".join(line if len(line) <= width else line[:width] + " [...]" for line in text.splitlines())
    except FileNotFoundError:
        return f"({path} does not exist)"


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.5,
    details: Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned).

    A HarnessError from ``predicate`` (a component died, a pod failed) ends the wait at once; any other
    exception counts as "not yet" and is reported if the wait times out.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except HarnessError:
            raise
        except Exception as err:  # the thing we wait for is not there yet
            last_error = err
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout:.0f} s waiting for {what}"
            if last_error is not None:
                msg += f" (last error: {last_error!r})"
            if details is not None:
                try:
                    msg += "\n" + details()
                except Exception as err:
                    msg += f"\n(could not collect details: {err!r})"
            raise HarnessError(msg)
        time.sleep(interval)


class ApiError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        self.status, self.body = status, body
        try:
            message = json.loads(body).get("message", body)
        except (ValueError, AttributeError):
            message = body
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


# Kinds the tests create from manifests or the chart renders: kind -> (API path prefix, plural, namespaced).
_KINDS = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Pod": ("/api/v1", "pods", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Secret": ("/api/v1", "secrets", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Service": ("/api/v1", "services", True),
    "Node": ("/api/v1", "nodes", False),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "DeviceClass": ("/apis/resource.k8s.io/v1", "deviceclasses", False),
    "ResourceClaim": ("/apis/resource.k8s.io/v1", "resourceclaims", True),
    "ResourceClaimTemplate": ("/apis/resource.k8s.io/v1", "resourceclaimtemplates", True),
    "ResourceSlice": ("/apis/resource.k8s.io/v1", "resourceslices", False),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "MutatingWebhookConfiguration": ("/apis/admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", False),
    "ValidatingWebhookConfiguration": (
        "/apis/admissionregistration.k8s.io/v1",
        "validatingwebhookconfigurations",
        False,
    ),
    "ValidatingAdmissionPolicy": ("/apis/admissionregistration.k8s.io/v1", "validatingadmissionpolicies", False),
    "ValidatingAdmissionPolicyBinding": (
        "/apis/admissionregistration.k8s.io/v1",
        "validatingadmissionpolicybindings",
        False,
    ),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
}


class Kube:
    """Plain JSON over HTTPS with a client certificate: nothing is dropped, nothing is typed."""

    def __init__(self, server: str, ca: Path, client: KeyPair) -> None:
        self.server = server
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.ctx.load_cert_chain(str(client.cert), str(client.key))
        self.headers: dict[str, str] = {}  # extra request headers (a bearer token: e2e_tokens.TokenKube)

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method, headers=self.headers)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as resp:
                raw = resp.read().decode()
        except urllib.error.HTTPError as err:
            raise ApiError(err.code, method, path, err.read().decode(errors="replace")) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def get(self, path: str, **query: str) -> Any:
        return self.request("GET", path + (("?" + urllib.parse.urlencode(query)) if query else ""))

    def get_or_none(self, path: str) -> Any:
        try:
            return self.get(path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def delete(self, path: str, grace_seconds: int | None = None, **query: str) -> Any:
        body = None if grace_seconds is None else {"gracePeriodSeconds": grace_seconds}
        try:
            return self.request("DELETE", path + (("?" + urllib.parse.urlencode(query)) if query else ""), body)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def patch(self, path: str, patch: Any, kind: str = "merge") -> Any:
        types = {
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
            "strategic": "application/strategic-merge-patch+json",
        }
        return self.request("PATCH", path, patch, types[kind])

    @staticmethod
    def path_of(obj: dict[str, Any], name: str | None = None, namespace: str | None = None) -> str:
        kind = obj["kind"]
        if kind not in _KINDS:
            raise ValueError(f"Kube.path_of: add {kind} to _KINDS")
        prefix, plural, namespaced = _KINDS[kind]
        ns = namespace or obj.get("metadata", {}).get("namespace") or "default"
        base = f"{prefix}/namespaces/{ns}/{plural}" if namespaced else f"{prefix}/{plural}"
        return base if name is None else f"{base}/{name}"

    def create(self, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        return self.request("POST", self.path_of(obj, namespace=namespace), obj)

    def apply(self, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """Create, or replace what is there (tests own the objects they apply)."""
        try:
            return self.create(obj, namespace)
        except ApiError as err:
            if err.status != 409:
                raise
        path = self.path_of(obj, obj["metadata"]["name"], namespace)
        current = self.get(path)
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}}
        return self.request("PUT", path, obj)

    def delete_obj(self, obj: dict[str, Any], namespace: str | None = None, grace_seconds: int | None = None) -> Any:
        return self.delete(self.path_of(obj, obj["metadata"]["name"], namespace), grace_seconds)


def load_manifests(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# ----------------------------------------------------------------------------------------------- processes


@dataclass
class Component:
    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen | None = None
    stop_timeout: float = 15.0
    stopped: bool = False  # stopped on purpose by a test: its exit is not a harness failure

    def start(self) -> Component:
        self.stopped = False
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} starting: {' '.join(self.args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,  # its own process group: stopping it never touches anything else
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and not self.stopped and self.proc.poll() is not None:
            raise HarnessError(
                f"{self.name} exited with code {self.proc.returncode}; last lines of {self.log_path}:\n"
                f"{tail(self.log_path, 40)}"
            )

    def stop(self) -> None:
        self.stopped = True
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def grep(self, *needles: str) -> list[str]:
        """Lines of the whole log that contain every one of ``needles``."""
        try:
            with self.log_path.open(errors="replace") as f:
                return [line.rstrip("\n") for line in f if all(n in line for n in needles)]
        except FileNotFoundError:
            return []


# ----------------------------------------------------------------------------------------------- the cluster


@dataclass
class Ports:
    etcd_client: int = field(default_factory=free_port)
    etcd_peer: int = field(default_factory=free_port)
    apiserver: int = field(default_factory=free_port)
    controller_manager: int = field(default_factory=free_port)
    scheduler: int = field(default_factory=free_port)
    kubelet: int = field(default_factory=free_port)
    kubelet_healthz: int = field(default_factory=free_port)
    kube_proxy_healthz: int = field(default_factory=free_port)
    kube_proxy_metrics: int = field(default_factory=free_port)


class Cluster:
    """Start with :meth:`start`, stop with :meth:`stop`; ``dir`` holds all state, ``dir/logs`` all logs."""

    def __init__(
        self,
        bin_dir: Path,
        base_dir: Path | None = None,
        snapshotter: str | None = None,
        scheduler_args: tuple[str, ...] = (),
    ) -> None:
        self.bin = bin_dir
        self.scheduler_args = scheduler_args  # extra kube-scheduler flags (the controller bench raises its QPS)
        # Unix socket paths must stay under 108 bytes: keep the base short (plugin sockets live deep inside).
        self.dir = base_dir or Path(tempfile.mkdtemp(prefix="dra-hami-e2e-", dir="/tmp"))
        self.logs = self.dir / "logs"
        self.ports = Ports()
        self.snapshotter = snapshotter or os.environ.get("E2E_SNAPSHOTTER", "overlayfs")
        self.node_name = NODE_NAME
        self.components: dict[str, Component] = {}
        self.timings: dict[str, float] = {}
        self.kube: Kube
        self.images: ImageStore
        self._started = False
        self.netns = NetNs(self.dir.name)  # dra-hami-e2e-XXXX, like the harness dir

        self.pki_dir = self.dir / "pki"
        self.etcd_dir = self.dir / "etcd"
        self.containerd_root = self.dir / "containerd" / "root"
        self.containerd_state = self.dir / "containerd" / "state"
        self.containerd_sock = self.dir / "containerd" / "containerd.sock"
        self.runc_root = self.dir / "runc"
        self.cdi_dir = self.dir / "cdi"
        self.cni_conf_dir = self.dir / "cni" / "net.d"
        self.kubelet_root = self.dir / "kubelet"
        self.pod_logs_dir = self.dir / "pod-logs"
        self.plugins_registry = self.kubelet_root / "plugins_registry"
        self.plugins_dir = self.kubelet_root / "plugins"

    # -- paths and clients

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.pki_dir / "admin.kubeconfig"

    def binary(self, name: str) -> str:
        path = self.bin / name
        if not path.exists():
            raise HarnessError(f"{path} is missing: run tests/e2e/build.sh")
        return str(path)

    def api_client(self):
        """A ``kubernetes`` client ApiClient for the admin user (prefer patches over replacing typed objects)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.admin_kubeconfig))

    def ctr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [self.binary("ctr"), "--address", str(self.containerd_sock), "--namespace", "k8s.io", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    # -- start

    def _lock_host(self) -> None:
        timeout = float(os.environ.get("E2E_LOCK_TIMEOUT", "1800"))
        self._lock_file = HOST_LOCK.open("a+")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._lock_file.seek(0)
                    holder = self._lock_file.read().strip()
                    raise HarnessError(
                        f"another e2e cluster holds {HOST_LOCK} for more than {timeout:.0f} s ({holder}); "
                        "one kubelet per host"
                    ) from None
                time.sleep(1)
        self._lock_file.truncate(0)
        self._lock_file.write(f"pid {os.getpid()} dir {self.dir}\n")
        self._lock_file.flush()

    def _unlock_host(self) -> None:
        lock, self._lock_file = getattr(self, "_lock_file", None), None
        if lock is not None:
            lock.close()  # releases the flock

    def start(self) -> Cluster:
        t0 = time.monotonic()
        self._started = True
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self._timed("host lock", self._lock_host)
            self._timed("network namespace", self._make_netns)
            # The calling thread stays in the namespace: the fixtures after this one start processes there.
            self.netns.enter()
            self._timed("certificates", self._write_pki)
            self._timed("etcd", self._start_etcd)
            self._start_apiserver()
            self._timed("containerd", self._start_containerd)
            self._timed("images", self._import_base_images)
            self._timed("apiserver", self._wait_apiserver)
            self._timed("controllers", self._start_controllers)
            self._timed("kubelet", self._start_kubelet)
            self._timed("kube-proxy", self._start_kube_proxy)
            self._timed("default service account", self._wait_default_service_account)
        except BaseException as err:
            if isinstance(err, HarnessError):
                raise HarnessError(f"{err}\n\n{self.diagnostics()}") from None
            raise
        self.timings["total"] = time.monotonic() - t0
        return self

    def _make_netns(self) -> None:
        """The node: loopback, and NODE_IP on one end of a veth pair whose other end goes nowhere (this VM has no
        dummy interfaces). The service range is routed there too, so a connect() to a ClusterIP from a process of
        the namespace reaches the nat OUTPUT chain, where kube-proxy rewrites it. There is no default route."""
        # We hold the host lock, so any other cluster namespace is a leftover of a killed run.
        for stale in NETNS_DIR.glob("dra-hami-e2e-*"):
            if stale.name != self.netns.name:
                NetNs(stale.name).delete()
        self.netns.create()
        ns = self.netns.name
        ip("link", "add", "node0", "type", "veth", "peer", "name", "node0-end", netns=ns)
        ip("addr", "add", f"{NODE_IP}/{NODE_PREFIX}", "dev", "node0", netns=ns)
        ip("link", "set", "node0-end", "up", netns=ns)
        ip("link", "set", "node0", "up", netns=ns)
        ip("route", "add", SERVICE_CIDR, "dev", "node0", netns=ns)
        # Pods reach Services (DNAT back out of the bridge) and each other through this namespace.
        self.netns.sysctl("net.ipv4.ip_forward", "1")

    def _timed(self, what: str, fn: Callable[[], None]) -> None:
        t0 = time.monotonic()
        fn()
        self.timings[what] = time.monotonic() - t0

    def _write_pki(self) -> None:
        pki = Pki(self.pki_dir)
        self.pki = pki
        self.sa_keys = pki.service_account_keys()
        self.apiserver_cert = pki.issue(
            CertSpec(
                "apiserver",
                "kube-apiserver",
                dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
                ip_addresses=("127.0.0.1", "10.0.0.1", NODE_IP),
                server=True,
            )
        )
        self.apiserver_kubelet_client = pki.issue(
            CertSpec("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",), client=True)
        )
        self.kubelet_serving = pki.issue(
            CertSpec("kubelet-serving", self.node_name, dns_names=(self.node_name, "localhost"),
                     ip_addresses=("127.0.0.1",), server=True)
        )  # fmt: skip
        clients = {
            "admin": CertSpec("admin", "e2e-admin", ("system:masters",), client=True),
            "controller-manager": CertSpec("controller-manager", "system:kube-controller-manager", client=True),
            "scheduler": CertSpec("scheduler", "system:kube-scheduler", client=True),
            "kubelet": CertSpec("kubelet", f"system:node:{self.node_name}", ("system:nodes",), client=True),
            # The default ClusterRoleBinding system:node-proxier grants this user what kube-proxy reads.
            "kube-proxy": CertSpec("kube-proxy", "system:kube-proxy", client=True),
        }
        self.kubeconfigs: dict[str, Path] = {}
        for name, spec in clients.items():
            pair = pki.issue(spec)
            self.kubeconfigs[name] = write_kubeconfig(
                self.pki_dir / f"{name}.kubeconfig", self.server, pki.ca.cert, pair, spec.common_name
            )
            if name == "admin":
                self.kube = Kube(self.server, pki.ca.cert, pair)

    def _add(self, component: Component) -> Component:
        self.components[component.name] = component
        return component.start()

    @staticmethod
    def feature_gates() -> dict[str, bool]:
        """FEATURE_GATES plus E2E_FEATURE_GATES (``Name=true,Other=false``) from the environment."""
        gates = dict(FEATURE_GATES)
        for item in filter(None, os.environ.get("E2E_FEATURE_GATES", "").split(",")):
            key, _, value = item.partition("=")
            gates[key.strip()] = value.strip().lower() == "true"
        return gates

    def _gates(self) -> str:
        return ",".join(f"{k}={str(v).lower()}" for k, v in self.feature_gates().items())

    def _start_etcd(self) -> None:
        url_c = f"http://127.0.0.1:{self.ports.etcd_client}"
        url_p = f"http://127.0.0.1:{self.ports.etcd_peer}"
        etcd = self._add(
            Component(
                "etcd",
                [
                    self.binary("etcd"), "--name", "e2e", "--data-dir", str(self.etcd_dir),
                    "--listen-client-urls", url_c, "--advertise-client-urls", url_c,
                    "--listen-peer-urls", url_p, "--initial-advertise-peer-urls", url_p,
                    "--initial-cluster", f"e2e={url_p}", "--initial-cluster-state", "new",
                    "--quota-backend-bytes", str(2 * 1024**3), "--logger", "zap", "--log-level", "warn",
                ],
                self.logs / "etcd.log",
            )
        )  # fmt: skip

        def healthy() -> bool:
            etcd.check_alive()
            with urllib.request.urlopen(f"{url_c}/health", timeout=2) as resp:
                return json.loads(resp.read()).get("health") == "true"

        wait_for(healthy, 30, "etcd /health", details=etcd.tail)

    def _start_apiserver(self) -> None:
        self._add(
            Component(
                "kube-apiserver",
                [
                    self.binary("kube-apiserver"),
                    f"--etcd-servers=http://127.0.0.1:{self.ports.etcd_client}",
                    # In the cluster's namespace: loopback for the components and tests, NODE_IP for the pods
                    # (the `kubernetes` Service's endpoint), the bridge address; nothing else exists there.
                    "--bind-address=0.0.0.0", f"--advertise-address={NODE_IP}",
                    f"--secure-port={self.ports.apiserver}",
                    f"--cert-dir={self.pki_dir / 'apiserver-generated'}",
                    f"--tls-cert-file={self.apiserver_cert.cert}", f"--tls-private-key-file={self.apiserver_cert.key}",
                    f"--client-ca-file={self.pki.ca.cert}",
                    f"--kubelet-client-certificate={self.apiserver_kubelet_client.cert}",
                    f"--kubelet-client-key={self.apiserver_kubelet_client.key}",
                    f"--kubelet-certificate-authority={self.pki.ca.cert}",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    f"--service-account-key-file={self.sa_keys.cert}",
                    f"--service-account-signing-key-file={self.sa_keys.key}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--authorization-mode=Node,RBAC",
                    "--enable-admission-plugins=NodeRestriction",
                    "--allow-privileged=true",
                    "--profiling=false",
                    f"--feature-gates={self._gates()}",
                    "--v=1",
                ],
                self.logs / "kube-apiserver.log",
            )
        )  # fmt: skip

    def _wait_apiserver(self) -> None:
        apiserver = self.components["kube-apiserver"]

        def ready() -> bool:
            apiserver.check_alive()
            return self.kube.get("/readyz") == "ok"

        wait_for(ready, 120, "kube-apiserver /readyz", details=apiserver.tail)

    def _start_controllers(self) -> None:
        common = [
            "--bind-address=127.0.0.1",
            f"--feature-gates={self._gates()}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]
        kcm_kc = self.kubeconfigs["controller-manager"]
        kcm = self._add(
            Component(
                "kube-controller-manager",
                [
                    self.binary("kube-controller-manager"),
                    f"--kubeconfig={kcm_kc}", f"--authentication-kubeconfig={kcm_kc}",
                    f"--authorization-kubeconfig={kcm_kc}",
                    f"--secure-port={self.ports.controller_manager}",
                    f"--cert-dir={self.pki_dir / 'kcm-generated'}",
                    f"--service-account-private-key-file={self.sa_keys.key}",
                    f"--root-ca-file={self.pki.ca.cert}",
                    "--use-service-account-credentials=true",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--controllers=*",
                    "--kube-api-qps=100", "--kube-api-burst=200",
                    *common,
                ],
                self.logs / "kube-controller-manager.log",
            )
        )  # fmt: skip
        sched_kc = self.kubeconfigs["scheduler"]
        sched = self._add(
            Component(
                "kube-scheduler",
                [
                    self.binary("kube-scheduler"),
                    f"--kubeconfig={sched_kc}", f"--authentication-kubeconfig={sched_kc}",
                    f"--authorization-kubeconfig={sched_kc}",
                    f"--secure-port={self.ports.scheduler}",
                    f"--cert-dir={self.pki_dir / 'scheduler-generated'}",
                    *common,
                    *self.scheduler_args,
                ],
                self.logs / "kube-scheduler.log",
            )
        )  # fmt: skip
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE

        def healthy(component: Component, port: int) -> Callable[[], bool]:
            def check() -> bool:
                component.check_alive()
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=insecure, timeout=2) as r:
                    return r.read() == b"ok"

            return check

        wait_for(healthy(kcm, self.ports.controller_manager), 60, "kube-controller-manager /healthz", details=kcm.tail)
        wait_for(healthy(sched, self.ports.scheduler), 60, "kube-scheduler /healthz", details=sched.tail)

    def cni_config(self) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": "e2e-pods",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        # the address leases live with the run (default: host-wide /var/lib/cni/networks)
                        "dataDir": str(self.dir / "cni" / "ipam"),
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": False},
            ],
        }

    def _containerd_config(self) -> str:
        runtime = "io.containerd.cri.v1.runtime"
        return f"""version = 3
root = '{self.containerd_root}'
state = '{self.containerd_state}'
disabled_plugins = ['io.containerd.nri.v1.nri', 'io.containerd.snapshotter.v1.btrfs',
                    'io.containerd.snapshotter.v1.zfs', 'io.containerd.snapshotter.v1.devmapper',
                    'io.containerd.tracing.processor.v1.otlp', 'io.containerd.internal.v1.tracing']

[grpc]
  address = '{self.containerd_sock}'

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = '{self.dir / "containerd" / "opt"}'
  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = '{self.snapshotter}'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{PAUSE_IMAGE}'
  [plugins.'{runtime}']
    cdi_spec_dirs = ['{self.cdi_dir}']
    restrict_oom_score_adj = true
    # The pods' network namespaces are mounted under the harness dir (not the host-wide /var/run/netns), so the
    # harness's unmount of everything below its dir also removes any a killed run left behind.
    netns_mounts_under_state_dir = true
    [plugins.'{runtime}'.cni]
      bin_dirs = ['{self.bin / "cni"}']
      conf_dir = '{self.cni_conf_dir}'
    [plugins.'{runtime}'.containerd]
      default_runtime_name = 'runc'
      [plugins.'{runtime}'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'{runtime}'.containerd.runtimes.runc.options]
          BinaryName = '{self.bin / "runc"}'
          Root = '{self.runc_root}'
          SystemdCgroup = false
"""

    def _start_containerd(self) -> None:
        for d in (self.containerd_root, self.containerd_state, self.cdi_dir, self.cni_conf_dir, self.runc_root):
            d.mkdir(parents=True, exist_ok=True)
        # The pod network: the reference bridge plugin (bridge cni0 in the cluster's namespace, the pods' gateway,
        # with hairpin for a pod that reaches itself through a Service), host-local addresses from POD_SUBNET,
        # portmap for hostPort. No masquerading: nothing leaves the namespace, so there is nothing to hide behind.
        (self.cni_conf_dir / "10-e2e.conflist").write_text(json.dumps(self.cni_config(), indent=2))
        config = self.dir / "containerd.toml"
        config.write_text(self._containerd_config())
        # containerd-shim-runc-v2 from bin/; iptables (the portmap CNI plugin) from the system paths
        env = {"PATH": f"{self.bin}:{os.environ.get('PATH', '')}:/usr/sbin:/sbin:/usr/bin:/bin"}
        containerd = self._add(
            Component(
                "containerd",
                [self.binary("containerd"), "--config", str(config), "--log-level", "info"],
                self.logs / "containerd.log",
                env=env,
            )
        )

        def ready() -> bool:
            containerd.check_alive()
            return self.containerd_sock.exists() and self.ctr("version", timeout=5).returncode == 0

        wait_for(ready, 30, "containerd to answer `ctr version`", details=containerd.tail)

    def _import_base_images(self) -> None:
        self.images = ImageStore(
            Path(self.binary("ctr")), self.containerd_sock, self.snapshotter, self.dir / "images", self.bin / "busybox"
        )
        rootfs = busybox_rootfs(self.bin / "busybox", self.dir / "images" / "busybox-rootfs")
        self.images.add(ImageSpec(BUSYBOX_IMAGE, rootfs, cmd=["sh"]))
        self.images.add(ImageSpec(PAUSE_IMAGE, rootfs, entrypoint=PAUSE_ENTRYPOINT))

    def _kubelet_config(self) -> dict[str, Any]:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": self.ports.kubelet,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.ports.kubelet_healthz,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.pki.ca.cert)},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(self.kubelet_serving.cert),
            "tlsPrivateKeyFile": str(self.kubelet_serving.key),
            "containerRuntimeEndpoint": f"unix://{self.containerd_sock}",
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "failCgroupV1": False,  # this VM has cgroup v1; 1.35+ refuses it by default
            "podLogsDir": str(self.pod_logs_dir),
            "resolvConf": "/etc/resolv.conf",
            "clusterDomain": "cluster.local",
            "registerNode": True,
            "featureGates": self.feature_gates(),
            # A test machine is always "full": never evict, never garbage-collect the local-only images.
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "0%", "imagefs.available": "0%",
                             "nodefs.inodesFree": "0%", "imagefs.inodesFree": "0%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "syncFrequency": "10s",
            "fileCheckFrequency": "5s",
            "nodeStatusUpdateFrequency": "5s",
            "shutdownGracePeriod": "0s",
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "protectKernelDefaults": False,
            "makeIPTablesUtilChains": False,
            "localStorageCapacityIsolation": True,
        }  # fmt: skip

    def _start_kubelet(self) -> None:
        self.kubelet_root.mkdir(parents=True, exist_ok=True)
        self.pod_logs_dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "kubelet-config.yaml"
        config.write_text(yaml.safe_dump(self._kubelet_config(), sort_keys=False))
        kubelet = self._add(
            Component(
                "kubelet",
                [
                    self.binary("kubelet"),
                    f"--config={config}",
                    f"--kubeconfig={self.kubeconfigs['kubelet']}",
                    f"--root-dir={self.kubelet_root}",
                    f"--cert-dir={self.pki_dir / 'kubelet-generated'}",
                    f"--hostname-override={self.node_name}",
                    f"--node-ip={NODE_IP}",
                    "--v=3",  # "Registered DRA plugin" is logged at level 3
                    # each NodePrepare/UnprepareResources call, before and after (the peer comparison times them)
                    "--vmodule=dra_plugin=4",
                ],
                self.logs / "kubelet.log",
                env={"PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"},
            )
        )
        wait_for(lambda: (kubelet.check_alive(), self.node_ready())[1], 120, f"node {self.node_name} to be Ready",
                 details=lambda: f"{self.node_conditions()}\n{kubelet.tail(40)}")  # fmt: skip

    def kube_proxy_config(self) -> dict[str, Any]:
        return {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.kubeconfigs["kube-proxy"])},
            "hostnameOverride": self.node_name,
            "mode": "iptables",
            "clusterCIDR": CLUSTER_CIDR,
            "healthzBindAddress": f"127.0.0.1:{self.ports.kube_proxy_healthz}",
            "metricsBindAddress": f"127.0.0.1:{self.ports.kube_proxy_metrics}",
            # conntrack sizes are host-wide (read-only in a network namespace): leave them as they are.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            # NodePorts on 127.0.0.1 need route_localnet; nothing here uses them.
            "iptables": {"localhostNodePorts": False},
            "nodePortAddresses": [f"{NODE_IP}/32"],
            "featureGates": {},
        }

    def _start_kube_proxy(self) -> None:
        config = self.dir / "kube-proxy-config.yaml"
        config.write_text(yaml.safe_dump(self.kube_proxy_config(), sort_keys=False))
        proxy = self._add(
            Component(
                "kube-proxy",
                [self.binary("kube-proxy"), f"--config={config}", "--v=2"],
                self.logs / "kube-proxy.log",
                # iptables-restore and friends (Debian's, nf_tables backend) come from the system paths
                env={"PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin:/usr/bin:/bin"},
            )
        )

        def healthy() -> bool:
            proxy.check_alive()
            url = f"http://127.0.0.1:{self.ports.kube_proxy_healthz}/healthz"
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return resp.status == 200
            except urllib.error.HTTPError:  # 503 until its first sync of Services and EndpointSlices
                return False

        wait_for(healthy, 60, "kube-proxy /healthz (first sync of the service rules)", details=proxy.tail)

    def _wait_default_service_account(self) -> None:
        wait_for(
            lambda: self.kube.get_or_none("/api/v1/namespaces/default/serviceaccounts/default"),
            60,
            "the default service account",
            details=lambda: self.components["kube-controller-manager"].tail(30),
        )

    # -- state

    def node(self) -> dict[str, Any] | None:
        return self.kube.get_or_none(f"/api/v1/nodes/{self.node_name}")

    def node_conditions(self) -> str:
        node = self.node()
        if node is None:
            return f"node {self.node_name} is not registered"
        conds = node.get("status", {}).get("conditions", [])
        return "; ".join(f"{c['type']}={c['status']} ({c.get('reason', '')}: {c.get('message', '')})" for c in conds)

    def node_ready(self) -> bool:
        node = self.node()
        conds = (node or {}).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def check_alive(self) -> None:
        for component in self.components.values():
            component.check_alive()

    # -- pods

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        return self.kube.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{name}")

    def events_for(self, name: str, namespace: str = "default") -> str:
        events = self.kube.get(
            f"/api/v1/namespaces/{namespace}/events", fieldSelector=f"involvedObject.name={name}"
        ).get("items", [])
        events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return "\n".join(
            f"  {e.get('type')} {e.get('reason')} x{e.get('count', 1)}: {e.get('message', '').strip()}" for e in events
        )

    def describe_pod(self, name: str, namespace: str = "default") -> str:
        pod = self.pod(name, namespace)
        if pod is None:
            return f"pod {namespace}/{name} does not exist"
        status = pod.get("status", {})
        lines = [f"pod {namespace}/{name}: phase={status.get('phase')} node={pod['spec'].get('nodeName')}"]
        for c in status.get("conditions", []):
            lines.append(f"  condition {c['type']}={c['status']} {c.get('reason', '')} {c.get('message', '')}")
        for cs in status.get("containerStatuses", []) + status.get("initContainerStatuses", []):
            lines.append(f"  container {cs['name']}: {json.dumps(cs.get('state'))}")
        lines.append("events:\n" + (self.events_for(name, namespace) or "  (none)"))
        return "\n".join(lines)

    def wait_pod_phase(
        self, name: str, phases: Iterable[str], namespace: str = "default", timeout: float = 120
    ) -> dict[str, Any]:
        wanted = set(phases)

        def reached() -> dict[str, Any] | None:
            self.check_alive()
            pod = self.pod(name, namespace)
            phase = (pod or {}).get("status", {}).get("phase")
            if phase in ("Failed", "Succeeded") and phase not in wanted:
                raise HarnessError(
                    f"pod {namespace}/{name} ended in phase {phase}:\n{self.describe_pod(name, namespace)}"
                )
            return pod if phase in wanted else None

        return wait_for(
            reached,
            timeout,
            f"pod {namespace}/{name} to reach {sorted(wanted)}",
            details=lambda: self.describe_pod(name, namespace) + "\n\n" + self.diagnostics(20),
        )

    def pod_log_path(self, name: str, container: str, namespace: str = "default") -> Path | None:
        pod = self.pod(name, namespace)
        if pod is None:
            return None
        d = self.pod_logs_dir / f"{namespace}_{name}_{pod['metadata']['uid']}" / container
        logs = sorted(d.glob("*.log"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
        return logs[-1] if logs else None

    _CRI_LINE = re.compile(r"^\S+ (stdout|stderr) ([PF]) ?(.*)$")

    def pod_log(self, name: str, container: str | None = None, namespace: str = "default") -> str:
        """The container's output, from the CRI log file the kubelet's runtime writes (no API server round trip)."""
        if container is None:
            pod = self.pod(name, namespace) or {}
            container = pod.get("spec", {}).get("containers", [{}])[0].get("name", "")
        path = self.pod_log_path(name, container, namespace)
        if path is None:
            return ""
        out: list[str] = []
        for line in path.read_text(errors="replace").splitlines():
            m = self._CRI_LINE.match(line)
            if not m:
                continue
            out.append(m.group(3) + ("\n" if m.group(2) == "F" else ""))
        return "".join(out)

    def wait_pod_log(self, name: str, pattern: str, container: str | None = None, namespace: str = "default",
                     timeout: float = 60) -> str:  # fmt: skip
        regex = re.compile(pattern, re.MULTILINE)
        return wait_for(
            lambda: regex.search(self.pod_log(name, container, namespace)) and self.pod_log(name, container, namespace),
            timeout,
            f"/{pattern}/ in the log of pod {namespace}/{name}",
            details=lambda: (
                f"log so far:\n{self.pod_log(name, container, namespace)}\n{self.describe_pod(name, namespace)}"
            ),
        )

    def delete_pod(self, name: str, namespace: str = "default", wait: bool = True, timeout: float = 60) -> None:
        self.kube.delete(f"/api/v1/namespaces/{namespace}/pods/{name}", grace_seconds=0)
        if wait:
            wait_for(lambda: self.pod(name, namespace) is None, timeout, f"pod {namespace}/{name} to be gone",
                     details=lambda: self.describe_pod(name, namespace))  # fmt: skip

    # -- diagnostics

    def diagnostics(self, lines: int = 25) -> str:
        parts = [f"e2e harness dir: {self.dir}"]
        for name, comp in self.components.items():
            state = "running" if comp.alive() else f"exited ({comp.proc.returncode if comp.proc else '-'})"
            parts.append(f"----- {name} [{state}] {comp.log_path} (last {lines} lines)\n{comp.tail(lines)}")
        return "\n".join(parts)

    # -- stop

    def stop(self, keep: bool | None = None) -> None:
        """Stop everything this harness started and remove its state (logs stay unless ``keep`` is False)."""
        if not self._started:
            return
        self._started = False
        if keep is None:
            keep = os.environ.get("E2E_KEEP", "") not in ("", "0")
        try:
            # The components' addresses and the pods' interfaces are in the cluster's namespace.
            with self.netns.entered() if self.netns.exists() else contextlib.nullcontext():
                self._stop_all(keep)
        finally:
            self.netns.delete()  # the bridge, the node's veth and whatever a pod left there go with it

    def _stop_all(self, keep: bool) -> None:
        with contextlib.suppress(Exception):
            self._delete_all_pods()
        for name in ("kubelet", "kube-scheduler", "kube-controller-manager"):
            if name in self.components:
                self.components[name].stop()
        self._kill_containers()
        for name in ("containerd", "kube-apiserver", "etcd"):
            if name in self.components:
                self.components[name].stop()
        for comp in self.components.values():  # anything added by fixtures (the dra-hami plugin, ...)
            comp.stop()
        self._kill_shims()
        still_mounted = self._unmount_all()
        self._unlock_host()
        if still_mounted:  # never rm -rf through a mount
            sys.stderr.write(f"[e2e] not removing {self.dir}: still mounted there: {still_mounted}\n")
        elif not keep:  # keep only what explains a failure afterwards: logs, configs, certificates
            for entry in self.dir.iterdir():
                if entry.name in ("logs", "pki") or entry.name.endswith((".yaml", ".toml")):
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def _delete_all_pods(self) -> None:
        pods = self.kube.get("/api/v1/pods").get("items", [])
        for pod in pods:
            md = pod["metadata"]
            self.kube.delete(f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}", grace_seconds=0)
        if pods and self.components.get("kubelet") and self.components["kubelet"].alive():
            # give the kubelet a moment to stop containers and unprepare claims through the plugin
            with contextlib.suppress(HarnessError):
                wait_for(lambda: not self._running_tasks(), 30, "the kubelet to stop all containers")

    def _running_tasks(self) -> list[str]:
        proc = self.ctr("tasks", "ls", "-q", timeout=10)
        return proc.stdout.split() if proc.returncode == 0 else []

    def _kill_containers(self) -> None:
        runc_root = self.runc_root / "k8s.io"
        if not runc_root.is_dir():
            return
        runc = str(self.bin / "runc")
        ids = subprocess.run([runc, "--root", str(runc_root), "list", "-q"], capture_output=True, text=True,
                             check=False).stdout.split()  # fmt: skip
        for cid in ids:
            subprocess.run([runc, "--root", str(runc_root), "kill", cid, "KILL"], capture_output=True, check=False)
        for cid in ids:
            subprocess.run([runc, "--root", str(runc_root), "delete", "--force", cid], capture_output=True, check=False)

    def _kill_shims(self) -> None:
        """containerd's shims leave its process group on purpose; ours name our socket on their command line."""
        needle = str(self.containerd_sock).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and needle in cmdline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), signal.SIGKILL)

    def _mounts_below(self) -> list[str]:
        prefix = str(self.dir) + "/"
        mounts = []
        with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
            for line in f:
                mount_point = line.split()[4].replace("\\040", " ")
                if mount_point.startswith(prefix):
                    mounts.append(mount_point)
        return mounts

    def _unmount_all(self) -> list[str]:
        """Unmount what the kubelet and containerd left under the harness dir; returns what is still mounted."""
        for mount_point in sorted(self._mounts_below(), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)
        return self._mounts_below()


# ----------------------------------------------------------------------------------------------- dra-hami


_UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class HamiPlugin:
    """The dra-hami kubelet plugin as a subprocess, wired to the cluster's kubelet and containerd."""

    def __init__(self, cluster: Cluster, profile: str = "t4x2", libvgpu: Path | None = None,
                 extra_args: Iterable[str] = (), kubeconfig: Path | None = None) -> None:  # fmt: skip
        self.cluster = cluster
        self.boot_id_file: Path | None = None  # --boot-id-file when set (a simulated reboot changes its content)
        self.profile = profile
        self.vgpu_dir = cluster.dir / "vgpu"
        self.libvgpu = libvgpu or self.vgpu_dir / "libvgpu.so"
        self.extra_args = list(extra_args)
        self.kubeconfig = kubeconfig or cluster.admin_kubeconfig
        self.plugin_dir = cluster.plugins_dir / DRIVER
        self.registration_socket = cluster.plugins_registry / f"{DRIVER}-reg.sock"
        self.component: Component | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.cluster.logs / "dra-hami-kubelet-plugin.log"

    def args(self) -> list[str]:
        return [
            sys.executable, "-m", "dra_hami", "kubelet-plugin",
            "--node-name", self.cluster.node_name,
            "--kubeconfig", str(self.kubeconfig),
            "--fake-profile", self.profile,
            "--plugin-dir", str(self.plugin_dir),
            "--registry-dir", str(self.cluster.plugins_registry),
            "--cdi-dir", str(self.cluster.cdi_dir),
            "--vgpu-dir", str(self.vgpu_dir),
            "--libvgpu-path", str(self.libvgpu),
            "--device-injection", "none",
            "--publish-interval", "5",
            "--log-level", "debug",
            *(["--boot-id-file", str(self.boot_id_file)] if self.boot_id_file else []),
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> HamiPlugin:
        self.vgpu_dir.mkdir(parents=True, exist_ok=True)
        if not self.libvgpu.exists():
            # Stand-in: busybox is static, so the preloaded library is never loaded; the real one is a later step.
            self.libvgpu.write_bytes(b"")
        self.starts += 1
        self.component = Component(
            "dra-hami-kubelet-plugin",
            self.args(),
            self.log_path,
            env={"PYTHONPATH": f"{REPO_ROOT}:{os.environ.get('PYTHONPATH', '')}".rstrip(":"), "PYTHONUNBUFFERED": "1"},
        )
        self.cluster.components[self.component.name] = self.component
        self.component.start()
        return self

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop()

    def restart(self) -> HamiPlugin:
        self.stop()
        return self.start()

    def kill(self) -> None:
        """SIGKILL the plugin (a crash: no cleanup, the sockets and the checkpoint stay as they are)."""
        if self.component is not None and self.component.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.component.proc.pid, signal.SIGKILL)
            self.component.proc.wait(10)

    def cdi_spec_uids(self) -> set[str]:
        """Claim UIDs that have a CDI spec file in the cluster's CDI dir (the UID is in the file name)."""
        return {m.group(0) for p in self.cluster.cdi_dir.iterdir() if (m := _UID.search(p.name))}

    def claim_dirs(self) -> set[str]:
        """Claim UIDs that have a per-claim directory (shared region) under <vgpu-dir>/claims."""
        claims = self.vgpu_dir / "claims"
        return {p.name for p in claims.iterdir()} if claims.is_dir() else set()

    def slices(self) -> list[dict[str, Any]]:
        items = self.cluster.kube.get(
            "/apis/resource.k8s.io/v1/resourceslices",
            fieldSelector=f"spec.nodeName={self.cluster.node_name},spec.driver={DRIVER}",
        ).get("items", [])
        return items

    def kubelet_registered(self) -> bool:
        """The kubelet logged (at -v=3) that it registered our driver at our endpoint."""
        return bool(self.cluster.components["kubelet"].grep("Registered DRA plugin", f'driverName="{DRIVER}"'))

    def check_alive(self) -> None:
        if self.component is not None:
            self.component.check_alive()
