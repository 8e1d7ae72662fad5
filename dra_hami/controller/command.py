"""`dra-hami controller`: the allocation controller of policy mode (docs/design/architecture.md)."""

from __future__ import annotations

import signal
import socket
import threading

import click

from dra_hami.allocator import GPU_POLICIES, PolicyChoice
from dra_hami.cli_options import driver_name_option, kubeconfig_option, logging_options, metrics_bind_address_option


@click.command("controller")
@driver_name_option("DRA driver name; the scheduling gate is <driver>/allocation.")
@kubeconfig_option()
@click.option(
    "--node-policy",
    type=click.Choice(["binpack", "spread"]),
    default="binpack",
    show_default=True,
    help="Cluster default node-level policy (pod annotation hami.io/node-scheduler-policy overrides).",
)
@click.option(
    "--gpu-policy",
    type=click.Choice(list(GPU_POLICIES)),
    default="binpack",
    show_default=True,
    help="Cluster default GPU-level policy (pod annotation hami.io/gpu-scheduler-policy overrides).",
)
@click.option("--leader-elect/--no-leader-elect", default=True, show_default=True, help="Lead through a Lease.")
@click.option(
    "--lease-namespace",
    envvar="DRA_HAMI_POD_NAMESPACE",
    default="kube-system",
    show_default=True,
    help="The Lease's namespace.",
)
@click.option("--lease-name", default="dra-hami-controller", show_default=True, help="The Lease's name.")
@click.option(
    "--identity", envvar="DRA_HAMI_POD_NAME", default=socket.gethostname, help="Holder identity. [default: hostname]"
)
@metrics_bind_address_option("0.0.0.0:9402", "HOST:PORT of /metrics and /healthz")
@click.option(
    "--orphan-grace",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Seconds an allocation of ours must stay without a pod before it is removed.",
)
@click.option(
    "--writes-in-flight",
    type=click.IntRange(min=0),
    default=16,
    show_default=True,
    help="Pods whose API writes (claim allocation, gate removal) may be in flight at once while the next pods "
    "are decided; 0 awaits each write.",
)
@logging_options
def controller(
    driver_name: str,
    kubeconfig: str | None,
    node_policy: str,
    gpu_policy: str,
    leader_elect: bool,
    lease_namespace: str,
    lease_name: str,
    identity: str,
    metrics_bind_address: str,
    orphan_grace: float,
    writes_in_flight: int,
    log_level: str,
    log_format: str,
) -> None:
    """Place gated pods' ResourceClaims by policy (binpack, spread, ...), then lift the scheduling gate."""
    from dra_hami import logs
    from dra_hami.controller.core import Settings
    from dra_hami.controller.runtime import Controller, Options

    logs.setup(log_level, log_format)
    settings = Settings(driver=driver_name, default_policy=PolicyChoice(node_policy, gpu_policy))
    options = Options(
        settings=settings,
        kubeconfig=kubeconfig,
        identity=identity,
        leader_elect=leader_elect,
        lease_namespace=lease_namespace,
        lease_name=lease_name,
        metrics_address=metrics_bind_address,
        orphan_grace=orphan_grace,
        writes_in_flight=writes_in_flight,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from kubernetes.config import ConfigException

    from dra_hami.kube.client import KubeConfigError

    try:
        controller = Controller(options)
    except KubeConfigError as err:
        raise click.ClickException(str(err)) from None
    except ConfigException as err:
        raise click.ClickException(f"--kubeconfig: {err} (pass a kubeconfig file or run in a pod)") from err
    try:
        controller.run(stop)
    except OSError as err:
        raise click.ClickException(str(err)) from err
