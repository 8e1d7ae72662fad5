"""The single ``dra-hami`` command: one subcommand per long-running component and per tool."""

from __future__ import annotations

from pathlib import Path

import click

from dra_hami.cli_options import driver_name_option, kubeconfig_option


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="dra-hami")
def main() -> None:
    """dra-hami: share NVIDIA GPUs between pods with hard memory slices and compute caps, natively on DRA."""


@main.command()
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write resourceslices.yaml, claims.yaml and cdi/*.json into this directory (a new or empty one, or "
    "one an earlier demo wrote; see --force).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Write into a non-empty --output directory the demo did not make: only the demo's files are written, "
    "nothing there is deleted.",
)
@click.option("--fake-profile", default="t4x2", show_default=True, help="Fake GPU profile of the demo node.")
@click.option("--profile", "old_profile", hidden=True, help="Deprecated spelling of --fake-profile.")
@click.option(
    "--examples",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Directory of example manifests. [default: the examples shipped with dra-hami]",
)
@click.option(
    "--policy",
    type=click.Choice(["first-fit", "binpack", "spread", "topology", "fragmentation"]),
    default="first-fit",
    show_default=True,
    help="Default placement policy of the allocator (first-fit is what kube-scheduler does); a pod's "
    "hami.io/*-scheduler-policy annotations override it, as in HAMi.",
)
def demo(
    output: Path | None, force: bool, fake_profile: str, old_profile: str | None, examples: Path | None, policy: str
) -> None:
    """Show the whole node path on fake GPUs: slices, allocation, kubelet prepare over gRPC, CDI specs."""
    from dra_hami.demo.manifests import ManifestError
    from dra_hami.demo.output import OutputError
    from dra_hami.demo.run import run_demo
    from dra_hami.discovery import DiscoveryError

    if old_profile is not None:
        click.echo("warning: --profile is deprecated; use --fake-profile (as kubelet-plugin does)", err=True)
        fake_profile = old_profile
    try:
        run_demo(output=output, profile=fake_profile, examples=examples, policy=policy, force=force)
    except (DiscoveryError, ManifestError, OutputError, ValueError) as err:
        raise click.ClickException(str(err)) from err


class _BadInput(click.ClickException):
    """Bad trace files or arguments: a clear message and exit code 2, never a traceback."""

    exit_code = 2


@main.command(
    epilog="""\b
Protocol (the FGD / ATC'23 artifact's, see dra_hami/simulate/protocol.py):
  * Cluster: every node of --nodes; each GPU is a device of our wire contract (build_pool) with the
    trace's model as productName, the model's memory (P100/V100M16 16000Mi, T4 15000Mi, V100M32/G2
    32000Mi, A10 24000Mi, G3 80000Mi, or the gpu_memory_mib column) and 100 cores.
  * Pods: per seed, sorted by name and shuffled with random.Random(seed); then pods resampled from the
    trace (with replacement) are appended until the GPU request reaches 130% of capacity. Pods arrive
    one at a time and never leave; a pod that fits nowhere is skipped.
  * A pod's gpu_milli is the same fraction of one GPU's memory and cores; num_gpu > 1 takes whole GPUs;
    gpu_spec (V100M16|V100M32) is a CEL selector on productName; cpu_milli / memory_mib are checked
    against the node's allocatable; CPU-only pods have no claim.
  * Metric: GPU allocation = allocated GPU-milli / capacity, against arrived = requested GPU-milli of
    the pods offered so far / capacity; reported at 100% and 130% arrived (mean and sd over seeds, the
    mean of the samples whose arrived % rounds to that value), with the allocator's decision time per
    pod (CPU time of allocate_pod, p50/p99 ms). Arrival-only means free capacity only shrinks, so a pod
    whose shape already fit nowhere is skipped without asking the allocator again (same outcome).

\b
Policies: binpack = binpack/binpack, spread = spread/spread, first-fit = first-fit/first-fit,
topology = binpack/topology, fragmentation = binpack/fragmentation (node policy / GPU policy);
all = every one; or any NODE/GPU pair, e.g. spread/binpack; or a comma-separated list.

\b
Files: Alibaba openb CSVs (cluster-trace-gpu-v2023) or YAML with a nodes: and/or pods: list of the
same fields (see dra_hami/simulate/trace.py).
""",
)
@click.option(
    "--nodes",
    "nodes_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Node list: openb_node_list_gpu_node.csv or a YAML file with a nodes: list.",
)
@click.option(
    "--pods",
    "pods_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pod list: openb_pod_list_*.csv or a YAML file with a pods: list.",
)
@click.option(
    "--policy",
    default="all",
    show_default=True,
    help="binpack, spread, first-fit, topology, fragmentation, all, NODE/GPU, or a comma list.",
)
@click.option("--seeds", default="42..51", show_default=True, help="LOW..HIGH (inclusive) and/or a comma list.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Result on stdout.",
)
@click.option(
    "--plot",
    "plot_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write allocation vs arrived workload per policy: .svg (always) or .png (needs the [plot] extra).",
)
@click.option(
    "--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="Processes replaying seeds in parallel."
)
@click.option("-q", "--quiet", is_flag=True, help="No per-seed progress lines on stderr.")
def simulate(nodes_file, pods_file, policy, seeds, output_format, plot_file, workers, quiet) -> None:
    """Replay a GPU-sharing trace through the allocator and measure packing per policy."""
    import json
    import time

    from dra_hami import simulate as sim
    from dra_hami.simulate.report import matplotlib_available

    try:
        policies = sim.policy_names(policy)
        seed_list = sim.parse_seeds(seeds)
    except sim.ProtocolError as err:
        raise click.BadParameter(str(err), param_hint="--policy" if "polic" in str(err) else "--seeds") from None
    if plot_file is not None:
        suffix = plot_file.suffix.lower()
        if suffix not in (".svg", ".png"):
            raise click.BadParameter(f"{plot_file}: must end in .svg or .png", param_hint="--plot")
        if suffix == ".png" and not matplotlib_available():
            raise click.BadParameter(
                "PNG needs matplotlib, which is not installed: pip install 'dra-hami[plot]', or use .svg",
                param_hint="--plot",
            )
        _check_writable(plot_file)  # before the replay, which can take minutes
    try:
        nodes = sim.load_nodes(nodes_file)
        pods = sim.load_pods(pods_file)
        simulation = sim.Simulation(nodes, pods)
    except (sim.TraceError, sim.ProtocolError, ValueError) as err:
        raise _BadInput(str(err)) from None

    def progress(name: str, result) -> None:
        if not quiet:
            click.echo(
                f"{name} seed {result.seed}: {result.allocation_at(100):.2f}% at 100%, "
                f"{result.allocation_at(130):.2f}% at 130%, {result.skipped} skipped, {result.wall_s:.1f}s",
                err=True,
            )

    started = time.perf_counter()
    summaries = sim.run(simulation, policies, seed_list, workers=workers, progress=progress)
    trace = {
        "nodes": str(nodes_file),
        "pods": str(pods_file),
        "node_count": len(nodes),
        "gpus": simulation.capacity_milli // 1000,
        "trace_pods": len(pods),
        "wall_s": round(time.perf_counter() - started, 2),
    }
    # The results first: a plot that fails to write (the disk filled up during the replay) loses nothing.
    if output_format == "json":
        click.echo(json.dumps(sim.to_json(summaries, trace), indent=2))
    else:
        click.echo(sim.to_table(summaries))
    if plot_file is not None:
        try:
            sim.plot(summaries, plot_file, title=f"{Path(pods_file).name} on {Path(nodes_file).name}")
        except OSError as err:
            why = err.strerror or str(err)
            raise click.ClickException(f"--plot {plot_file}: not written ({why}); the results are above") from None


def _check_writable(path: Path) -> None:
    """--plot must name a file we can create: an existing, writable directory and not a directory itself."""
    import os

    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise click.BadParameter(f"{path} is a directory; name a .svg or .png file", param_hint="--plot")
    if not parent.is_dir():
        raise click.BadParameter(f"{path}: directory {parent} does not exist", param_hint="--plot")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise click.BadParameter(f"{path}: not writable", param_hint="--plot")


@main.command()
@click.option(
    "-f",
    "--filename",
    "filename",
    required=True,
    help="Manifest with HAMi pods (nvidia.com/gpu, gpumem, gpumem-percentage, gpucores); - reads standard input.",
)
@click.option(
    "--slices",
    "slices_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The cluster's GPUs as ResourceSlice YAML (kubectl get resourceslices -o yaml). [default: --fake-profile]",
)
@click.option(
    "--fake-profile",
    default="t4x2",
    show_default=True,
    help="Without --slices: the GPUs of this fake profile (built-in name or YAML file) stand in for the cluster's.",
)
@driver_name_option("DRA driver name (the DeviceClass the claims ask for).")
def translate(filename: str, slices_file: Path | None, fake_profile: str, driver_name: str) -> None:
    """Print what the webhook would admit for a HAMi manifest: claim templates and rewritten pods. No cluster.

    Each Pod is translated as the webhook translates pods in a namespace labelled
    dra-hami.project-hami.io/legacy-translation=enabled (or with --legacy-translation); a pod the webhook would
    refuse prints the webhook's message on stderr and the exit code is 1. gpumem-percentage depends on the
    GPUs' memory sizes: pass --slices for your cluster's.
    """
    import sys

    from dra_hami import translate_preview as tp
    from dra_hami.discovery import DiscoveryError

    try:
        text, source = tp.read_source(filename, sys.stdin.read() if filename == "-" else None)
        docs = tp.load_documents(text, source)
        if slices_file is not None:
            gpus = tp.gpus_of_slices(tp.load_documents(slices_file.read_text(), str(slices_file)), driver_name)
            origin = f"ResourceSlices of {slices_file}"
        else:
            gpus = tp.gpus_of_profile(fake_profile, driver_name)
            origin = f"fake profile {fake_profile!r} (pass --slices for your cluster's)"
    except (tp.InputError, DiscoveryError, OSError) as err:
        raise _BadInput(str(err)) from None
    result = tp.preview(docs, gpus, driver_name, source, tp.rfc3339_now())
    sizes = ", ".join(sorted({f"{g.product_name} {g.memory >> 20}Mi" for g in gpus})) or "none"
    click.echo(f"# GPUs the translation sees: {len(gpus)} from the {origin}: {sizes}")
    for block in tp.render(result):
        click.echo(block)
    for line in result.skipped:
        click.echo(f"skipped {line}", err=True)
    for pod in result.pods:
        for warning in pod.warnings:
            click.echo(f"warning: {pod.where}: {warning}", err=True)
    errors = [pod for pod in result.pods if pod.error]
    for pod in errors:
        click.echo(f"error: {pod.where}: {pod.error}", err=True)
    if not result.pods:
        click.echo(f"error: {source}: no Pod in the input", err=True)
    if errors or not result.pods:
        raise SystemExit(1)


@main.command("install-libvgpu")
@click.option(
    "--dest",
    "dest_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DRA_HAMI_VGPU_DIR",
    help="Host directory the kubelet plugin's --vgpu-dir names; libvgpu.so goes there.",
)
@click.option(
    "--source",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A libvgpu.so to install instead of the one shipped in this package.",
)
def install_libvgpu(dest_dir: Path, source: Path | None) -> None:
    """Copy libvgpu.so to the node (only when its sha256 differs; replaced atomically, never half-written)."""
    from dra_hami.libvgpu_install import PACKAGED, InstallError, install

    try:
        changed = install(dest_dir, source or PACKAGED)
    except (InstallError, OSError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"{dest_dir / 'libvgpu.so'}: {'installed' if changed else 'already up to date'}")


@main.command("uninstall-check")
@driver_name_option("DRA driver name whose claims are checked.")
@kubeconfig_option()
@click.option(
    "--action",
    type=click.Choice(["refuse", "warn"]),
    default="refuse",
    show_default=True,
    help="While a claim of the driver is reserved: exit 1 (refuse; a Helm pre-delete hook then stops the "
    "uninstall) or only print the claims (warn).",
)
def uninstall_check(driver_name: str, kubeconfig: str | None, action: str) -> None:
    """List ResourceClaims of the driver still reserved by pods; fail while there are any (--action refuse)."""
    from dra_hami.kube.client import ApiError, KubeConfigError, RawKubeApi
    from dra_hami.uninstall_check import RESOURCE_CLAIMS, report, reserved_claims

    try:
        claims, _ = RawKubeApi.from_config(kubeconfig).list_objects(RESOURCE_CLAIMS)
    except (ApiError, KubeConfigError) as err:
        raise click.ClickException(f"listing ResourceClaims: {err}") from err
    found = reserved_claims(claims, driver_name)
    click.echo(report(found, driver_name, refuse=action == "refuse"), err=bool(found))
    if found and action == "refuse":
        raise SystemExit(1)


# The long-running components' commands live with their packages.
from dra_hami.controller.command import controller  # noqa: E402
from dra_hami.exporter.command import exporter  # noqa: E402
from dra_hami.plugin.command import kubelet_plugin  # noqa: E402
from dra_hami.webhook.command import webhook  # noqa: E402

for _command in (kubelet_plugin, controller, exporter, webhook):
    main.add_command(_command)


def _show_envvars(group: click.Group) -> None:
    """Every option that reads an environment variable (all named DRA_HAMI_*) says so in --help."""
    for command in group.commands.values():
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                param.show_envvar = True
        if isinstance(command, click.Group):
            _show_envvars(command)


_show_envvars(main)
