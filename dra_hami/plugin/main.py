"""Wiring of the kubelet plugin process: discovery, slice publisher, prepare state, gRPC, sweeps."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dra_hami import cdi_store
from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.discovery import load_discovery
from dra_hami.health import monitor as health_monitor
from dra_hami.health.nvml import DEFAULT_IGNORED_XIDS
from dra_hami.health.service import HealthService
from dra_hami.kube.client import ApiError, KubeApi, RawKubeApi
from dra_hami.kube.reflector import Backoff
from dra_hami.plugin import sockets
from dra_hami.plugin.cdi_spec import CdiSettings, Injection
from dra_hami.plugin.checkpoint import Checkpoint, read_boot_id
from dra_hami.plugin.claim_dirs import DEFAULT_SIZE, ClaimDirs, Storage
from dra_hami.plugin.inventory import Inventory
from dra_hami.plugin.probes import Readiness
from dra_hami.plugin.probes import serve as serve_probes
from dra_hami.plugin.server import PluginServer
from dra_hami.plugin.state import PluginState
from dra_hami.publisher.publisher import SlicePublisher
from dra_hami.publisher.slices import build_pool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginOptions:
    driver_name: str
    node_name: str
    kubeconfig: str | None
    fake_profile: str | None
    plugin_dir: Path
    registry_dir: Path
    cdi_dir: Path
    vgpu_dir: Path
    libvgpu_path: Path
    device_injection: Injection
    nvidia_cdi_template: str
    split_count: int
    reserved_memory: int
    memory_scaling: float
    publish_interval: float
    sweep_interval: float
    boot_id_file: Path
    require_libvgpu: bool
    device_health: bool = True
    fake_health_file: Path | None = None  # fake GPUs only; default <plugin-dir>/fake-health.yaml
    health_ignored_xids: frozenset[int] = DEFAULT_IGNORED_XIDS
    health_recovery_seconds: float = 60.0
    claim_dir_storage: Storage = "tmpfs"
    claim_dir_size: int = DEFAULT_SIZE
    health_bind_address: str = ""  # HOST:PORT of /livez and /readyz; empty: no probe server

    @property
    def dra_socket(self) -> Path:
        return sockets.dra_socket(self.plugin_dir)

    @property
    def registration_socket(self) -> Path:
        return sockets.registration_socket(self.registry_dir, self.driver_name)


def run(options: PluginOptions, stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()
    readiness = Readiness()
    api = RawKubeApi.from_config(options.kubeconfig)
    discovery = load_discovery(options.fake_profile)
    publisher_config = PublisherConfig(
        driver_name=options.driver_name,
        node_name=options.node_name,
        split_count=options.split_count,
        reserved_memory=options.reserved_memory,
        memory_scaling=options.memory_scaling,
    )
    health = None
    publish_from = discovery
    if options.device_health:
        health = health_monitor.build(
            options.driver_name,
            discovery,
            fake=bool(options.fake_profile),
            fake_health_file=options.fake_health_file or options.plugin_dir / "fake-health.yaml",
            ignored_xids=options.health_ignored_xids,
            recovery_seconds=options.health_recovery_seconds,
        )
        publish_from = health_monitor.LastKnownDiscovery(discovery, health.tracker)
    inventory = Inventory(
        options.plugin_dir / "inventory.json",
        fallback=lambda: build_pool(publish_from.discover(), publisher_config, generation=0),
    )

    def published(pool: list[dict[str, Any]]) -> None:
        inventory.published(pool)
        readiness.published()

    publisher = SlicePublisher(
        api,
        publish_from,
        publisher_config,
        taints=health.taints if health else None,
        on_published=published,
    )
    if health is not None:
        health.tracker.on_change(publisher.poke)  # taints follow health changes at once

    settings = CdiSettings(
        driver_name=options.driver_name,
        vgpu_dir=options.vgpu_dir,
        libvgpu_path=options.libvgpu_path,
        injection=options.device_injection,
        nvidia_cdi_template=options.nvidia_cdi_template,
    )
    state = PluginState(
        api=api,
        pool=options.node_name,
        devices=inventory.devices,
        settings=settings,
        specs=cdi_store.ClaimSpecStore(options.cdi_dir, options.driver_name),
        checkpoint=Checkpoint(options.plugin_dir / "checkpoint.json"),
        boot_id=read_boot_id(options.boot_id_file),
        require_libvgpu=options.require_libvgpu,
        claim_dirs=ClaimDirs(options.vgpu_dir / "claims", options.claim_dir_storage, options.claim_dir_size),
    )
    state.heal()  # a CDI dir wiped while the plugin was down: running pods' restarts need their specs
    server = PluginServer(
        state,
        options.driver_name,
        options.dra_socket,
        options.registration_socket,
        health=HealthService(health.tracker, options.node_name) if health is not None else None,
    )
    readiness.watch(server.status)
    probes = serve_probes(readiness, options.health_bind_address) if options.health_bind_address else None
    server.start()

    def on_signal(signum, _frame):
        log.info("signal %d: shutting down", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    threads = [
        threading.Thread(target=_publish, args=(api, publisher, options, stop), name="publisher", daemon=True),
        threading.Thread(target=_sweep_loop, args=(state, stop, options.sweep_interval), name="sweep", daemon=True),
    ]
    if health is not None:
        threads.append(threading.Thread(target=health.run, args=(stop,), name="device-health", daemon=True))
    for thread in threads:
        thread.start()
    stop.wait()
    if health is not None:
        health.tracker.close()  # ends the kubelet's health stream now instead of at its next heartbeat
    server.stop()
    if probes is not None:
        probes.shutdown()
    state.close()


def _publish(api: KubeApi, publisher: SlicePublisher, options: PluginOptions, stop: threading.Event) -> None:
    """Read the Node (its UID owns our slices) once the API server answers, then publish until stopped.

    Runs beside the gRPC server: a node whose API server is down still registers and serves the claims
    it can (issue: the plugin used to exit at start when the Node could not be read)."""
    uid = _node_uid(api, options.node_name, stop)
    if uid:
        publisher.set_node_uid(uid)
    publisher.run(stop, options.publish_interval)


def _node_uid(api: KubeApi, node_name: str, stop: threading.Event) -> str | None:
    """The Node's UID, so our slices are garbage-collected with it; publishing works without it.

    Waits (with backoff) while the API server is unreachable: nothing can be published meanwhile anyway."""
    backoff = Backoff(initial=1.0, cap=30.0)
    while not stop.is_set():
        try:
            return api.get_node(node_name)["metadata"]["uid"]
        except ApiError as err:
            if not err.unreachable:
                log.warning("cannot read Node %s (%s): slices get no owner reference", node_name, err)
                return None
            wait = backoff.next()
            log.warning("cannot read Node %s (%s); serving the node from its checkpoint, retrying in %.0fs",
                        node_name, err, wait)  # fmt: skip
            stop.wait(wait)
    return None


def _sweep_loop(state: PluginState, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        try:
            state.sweep()
        except Exception:  # the sweep is housekeeping: log and try again next round
            log.exception("sweep failed")
