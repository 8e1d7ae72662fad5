"""``dra-hami kubelet-plugin``: the node side's command (its options and the process around the plugin)."""

from __future__ import annotations

from pathlib import Path

import click

from dra_hami import wire
from dra_hami.cli_options import (
    PLUGIN_DIR_DEFAULT_HELP,
    PORT_ZERO_HELP,
    Quantity,
    check_bind_address,
    driver_name_option,
    fake_profile_option,
    kubeconfig_option,
    logging_options,
    node_name_option,
    plugin_dir,
    plugin_dir_option,
    vgpu_dir_option,
)


@click.command("kubelet-plugin")
@driver_name_option("DRA driver name; also the DeviceClass name and the CDI vendor k8s.<driver>.")
@node_name_option("This node's name (the pool name).")
@kubeconfig_option()
@fake_profile_option("Use fake GPUs instead of NVML: a built-in profile name (t4x2, h100x8, ...) or a YAML file.")
@plugin_dir_option(f"Directory of the DRA socket and the checkpoint. {PLUGIN_DIR_DEFAULT_HELP}")
@click.option(
    "--registry-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/kubelet/plugins_registry"),
    envvar="DRA_HAMI_REGISTRY_DIR",
    show_default=True,
    help="The kubelet's plugin registration directory (the <driver>-reg.sock socket goes there).",
)
@click.option(
    "--cdi-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/run/cdi"),
    envvar="DRA_HAMI_CDI_DIR",
    show_default=True,
    help="The container runtime's dynamic CDI spec directory.",
)
@vgpu_dir_option("Host directory for ld.so.preload and the per-claim shared-region directories (claims/<uid>).")
@click.option(
    "--libvgpu-path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="DRA_HAMI_LIBVGPU_PATH",
    help="Host path of libvgpu.so, mounted into every container. [default: <vgpu-dir>/libvgpu.so]",
)
@click.option(
    "--require-libvgpu/--no-require-libvgpu",
    default=True,
    show_default=True,
    help="Fail a prepare (with a clear error) when libvgpu.so is missing on the host.",
)
@click.option(
    "--device-injection",
    type=click.Choice(["nvidia-cdi", "device-nodes", "none"]),
    default="nvidia-cdi",
    envvar="DRA_HAMI_DEVICE_INJECTION",
    show_default=True,
    help="How GPUs reach the container: the NVIDIA Container Toolkit's CDI ids, plain /dev/nvidia* nodes, "
    "or nothing (fake GPUs).",
)
@click.option(
    "--nvidia-cdi-template",
    default="nvidia.com/gpu={uuid}",
    envvar="DRA_HAMI_NVIDIA_CDI_TEMPLATE",
    show_default=True,
    help="CDI id of a whole GPU in the toolkit's spec; {uuid}, {index} or {minor}.",
)
@click.option(
    "--split-count",
    type=click.IntRange(1, 1000),
    default=wire.DEFAULT_SPLIT_COUNT,
    envvar="DRA_HAMI_SPLIT_COUNT",
    show_default=True,
    help="Most claims one GPU may hold (the 'shares' capacity; HAMi's deviceSplitCount).",
)
@click.option(
    "--reserved-memory",
    type=Quantity(),
    default="0",
    envvar="DRA_HAMI_RESERVED_MEMORY",
    show_default=True,
    help="GPU memory per device kept out of the published capacity (e.g. 512Mi).",
)
@click.option(
    "--memory-scaling",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    envvar="DRA_HAMI_MEMORY_SCALING",
    show_default=True,
    help="Multiply published memory (HAMi's deviceMemoryScaling; above 1 oversubscribes).",
)
@click.option(
    "--publish-interval",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds between ResourceSlice reconciliations (deletions are repaired at once via a watch).",
)
@click.option(
    "--sweep-interval",
    type=click.FloatRange(min=0.1),
    default=300.0,
    show_default=True,
    help="Seconds between sweeps that unprepare claims deleted while the kubelet was not looking.",
)
@click.option(
    "--claim-dir-storage",
    type=click.Choice(["tmpfs", "directory"]),
    default="tmpfs",
    envvar="DRA_HAMI_CLAIM_DIR_STORAGE",
    show_default=True,
    help="Per-claim directories: 'tmpfs' mounts one nosuid,nodev,noexec tmpfs of --claim-dir-size per claim "
    "(needs CAP_SYS_ADMIN and mounts that reach the host); 'directory' makes plain directories on the host "
    "filesystem with no bound (tests and demos only: a tenant can fill the disk and plant setuid files).",
)
@click.option(
    "--claim-dir-size",
    type=Quantity(),
    default="8Mi",
    envvar="DRA_HAMI_CLAIM_DIR_SIZE",
    show_default=True,
    help="Size of each claim's tmpfs (the shared region is about 200Ki).",
)
@click.option(
    "--boot-id-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("/proc/sys/kernel/random/boot_id"),
    show_default=True,
    help="Source of the node boot id recorded in the checkpoint (reboot detection).",
)
@click.option(
    "--device-health/--no-device-health",
    default=True,
    envvar="DRA_HAMI_DEVICE_HEALTH",
    show_default=True,
    help="Watch GPU health (NVML XID events, lost GPUs): taint unhealthy devices in the ResourceSlice and serve "
    "the kubelet's DRAResourceHealth stream.",
)
@click.option(
    "--health-ignored-xids",
    default="13,31,43,45,68,109",
    envvar="DRA_HAMI_HEALTH_IGNORED_XIDS",
    show_default=True,
    help="XIDs that are application errors, not GPU faults (comma-separated; empty: none).",
)
@click.option(
    "--health-recovery-seconds",
    type=click.FloatRange(min=0),
    default=60.0,
    envvar="DRA_HAMI_HEALTH_RECOVERY_SECONDS",
    show_default=True,
    help="A GPU tainted for an XID is healthy again after this long without one, if NVML probes pass.",
)
@click.option(
    "--fake-health-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="DRA_HAMI_FAKE_HEALTH_FILE",
    help="Fake GPUs only: YAML file of injected faults ({hami-gpu-0: {xid: 79}}), re-read while running. "
    "[default: <plugin-dir>/fake-health.yaml]",
)
@click.option(
    "--health-bind-address",
    default="",
    envvar="DRA_HAMI_HEALTH_BIND_ADDRESS",
    callback=lambda ctx, param, value: value and check_bind_address(ctx, param, value),
    help="HOST:PORT of the probe endpoints: /livez (the process serves) and /readyz (registered with the kubelet "
    f"and this node's ResourceSlices published); {PORT_ZERO_HELP}. [default: none, no probe server]",
)
@logging_options
def kubelet_plugin(**kwargs) -> None:
    """Run the node side: publish this node's GPUs as ResourceSlices and prepare claims for the kubelet."""
    from dra_hami import logs
    from dra_hami.discovery import DiscoveryError
    from dra_hami.health.nvml import parse_xids
    from dra_hami.kube.client import KubeConfigError
    from dra_hami.plugin.main import PluginOptions, run
    from dra_hami.publisher.device import PoolError
    from dra_hami.publisher.policy import PolicyError

    logs.setup(kwargs.pop("log_level"), kwargs.pop("log_format"))
    driver = kwargs["driver_name"]
    kwargs["plugin_dir"] = plugin_dir(kwargs["plugin_dir"], driver)
    kwargs["libvgpu_path"] = kwargs["libvgpu_path"] or kwargs["vgpu_dir"] / "libvgpu.so"
    if kwargs["claim_dir_size"] < 256 << 10:
        raise click.BadParameter(
            f"{kwargs['claim_dir_size']} bytes is below 256Ki (the shared region alone is 200Ki)",
            param_hint="--claim-dir-size",
        )
    try:
        kwargs["health_ignored_xids"] = parse_xids(kwargs["health_ignored_xids"])
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--health-ignored-xids") from None
    try:
        run(PluginOptions(**kwargs))
    except (DiscoveryError, PoolError, PolicyError, KubeConfigError, OSError) as err:
        raise click.ClickException(str(err)) from None
