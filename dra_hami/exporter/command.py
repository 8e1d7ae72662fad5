"""``dra-hami exporter``: the node's metrics endpoint (flags per the shared CLI contract)."""

from __future__ import annotations

import click

from dra_hami.cli_options import (
    PLUGIN_DIR_DEFAULT_HELP,
    driver_name_option,
    fake_profile_option,
    kubeconfig_option,
    logging_options,
    metrics_bind_address_option,
    node_name_option,
    plugin_dir,
    plugin_dir_option,
    vgpu_dir_option,
)


@click.command("exporter")
@driver_name_option("DRA driver name (locates the plugin's directory).")
@node_name_option("This node's name (the nodeid/node labels).")
@kubeconfig_option("Kubeconfig file; in-cluster configuration when omitted. Used to tell which pod uses a claim.")
@fake_profile_option(
    "Fake GPUs instead of NVML (same profiles as the kubelet plugin); card usage is then the claims' sum."
)
@vgpu_dir_option("The kubelet plugin's --vgpu-dir: the claim regions are claims/<uid>/vgpu.cache under it.")
@plugin_dir_option(
    f"The kubelet plugin's --plugin-dir, read for its checkpoint (prepared claims). {PLUGIN_DIR_DEFAULT_HELP}"
)
@metrics_bind_address_option("0.0.0.0:9401", "HOST:PORT of /metrics and /healthz")
@click.option(
    "--guard-action",
    type=click.Choice(["off", "event", "kill"]),
    default="event",
    envvar="DRA_HAMI_GUARD_ACTION",
    show_default=True,
    help="Node guard: compare each claim's GPU memory as the driver counts it (NVML, per process) with its "
    "limit. 'event': metric, log and Kubernetes Event when a claim is over; 'kill': also SIGKILL its largest "
    "process once it has been over for --guard-grace-seconds (needs hostPID and CAP_KILL); 'off': libvgpu only.",
)
@click.option(
    "--guard-grace-seconds",
    type=click.FloatRange(min=0),
    default=30.0,
    envvar="DRA_HAMI_GUARD_GRACE_SECONDS",
    show_default=True,
    help="How long a claim may stay over its limit before the guard kills (action 'kill').",
)
@click.option(
    "--guard-interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    envvar="DRA_HAMI_GUARD_INTERVAL",
    show_default=True,
    help="Seconds between the guard's looks at the driver: its detection latency.",
)
@click.option(
    "--hami-metrics",
    type=click.Choice(["both", "current", "legacy", "none"]),
    default="both",
    envvar="DRA_HAMI_HAMI_METRICS",
    show_default=True,
    help="HAMi-compatible series beside ours: 'current' = HAMi v2.10's hami_* names, 'legacy' = the older names "
    "(GPUDeviceMemoryAllocated, vGPU_device_memory_usage_in_bytes, ...), 'both', or 'none'. See docs/metrics.md.",
)
@logging_options
def exporter(**kwargs) -> None:
    """Serve per-claim GPU memory and compute usage and per-GPU usage as Prometheus metrics."""
    from dra_hami import logs
    from dra_hami.discovery import DiscoveryError
    from dra_hami.exporter.main import ExporterOptions, run

    logs.setup(kwargs.pop("log_level"), kwargs.pop("log_format"))
    kwargs["plugin_dir"] = plugin_dir(kwargs["plugin_dir"], kwargs["driver_name"])
    try:
        run(ExporterOptions(**kwargs))
    except (DiscoveryError, OSError) as err:
        raise click.ClickException(str(err)) from err
