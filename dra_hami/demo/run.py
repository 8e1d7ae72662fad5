"""`dra-hami demo`: the node path end to end on fake GPUs, with no cluster and no GPU."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click
import yaml

from dra_hami import wire
from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.demo import libvgpu_run
from dra_hami.demo import manifests as manifest_io
from dra_hami.demo.allocation import allocate_examples, landing_table
from dra_hami.demo.apiserver import FakeApiServer
from dra_hami.demo.kubelet import PluginProcess
from dra_hami.demo.output import check_output, write_output
from dra_hami.discovery import GpuInfo, load_discovery
from dra_hami.kube import objects as k8s
from dra_hami.publisher.slices import build_pool, device_class

NODE = "demo-node"
DEMO_CLAIM = "inference-gpu"  # the 4 GiB slice of examples/single-slice.yaml
# An installed package carries a copy of the repository's examples/ (setup.py's build_py puts it there);
# a source checkout (editable install) uses examples/ itself.
PACKAGED_EXAMPLES = Path(__file__).resolve().parent / "examples"
REPO_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def default_examples() -> Path:
    return PACKAGED_EXAMPLES if PACKAGED_EXAMPLES.is_dir() else REPO_EXAMPLES


def run_demo(
    output: Path | None, profile: str, examples: Path | None, policy: str = "first-fit", force: bool = False
) -> None:
    examples = examples or default_examples()
    if not examples.is_dir():
        raise click.ClickException(f"no examples directory at {examples}; pass --examples DIR")
    if output is not None:
        check_output(output, force)  # before any work: a refused --output must not cost a whole run
    gpus = load_discovery(profile).discover()
    config = PublisherConfig(node_name=NODE)
    slices = build_pool(gpus, config, generation=1)
    manifests = manifest_io.load(examples)
    classes = manifests.device_classes or [device_class(config.driver_name)]
    translated = manifest_io.translate_legacy_pods(manifests, slices, config.driver_name, _now())

    _title(f"Node {NODE}: fake GPU profile {profile!r}, {len(gpus)} GPU(s)")
    for gpu in gpus:
        click.echo(f"  {wire.device_name(gpu.minor)}  {gpu.name}  {gpu.memory_bytes >> 20} MiB  {gpu.uuid}")
    _title("The ResourceSlice this node publishes")
    click.echo(yaml.safe_dump_all(slices, sort_keys=False).rstrip())

    if translated:
        _title("HAMi pods, translated as the admission webhook would (what `dra-hami translate -f FILE` prints)")
        for line in translated:
            click.echo(f"  {line}")

    _title(
        f"Allocating the pods of {examples} (default policy {policy}; a pod's hami.io/node-scheduler-policy and "
        f"gpu-scheduler-policy annotations override it; consumable capacity as the scheduler computes it)"
    )
    allocated = allocate_examples(manifests, slices, classes, NODE, policy)
    for line in allocated.report:
        click.echo(f"  {line}")
    _title("Where each claim landed (POLICY: the GPU policy that placed it)")
    for line in landing_table(allocated.landings):
        click.echo(f"  {line}")

    # Everything temporary (the plugin's state, its /tmp/dh-* socket directory) goes away on every exit path:
    # success, an error, Ctrl-C.
    with tempfile.TemporaryDirectory(prefix="dra-hami-demo-") as tmp:
        root = Path(tmp)
        api = FakeApiServer().start()
        try:
            for claim in allocated.claims:
                api.put("resourceclaims", claim)
            build = libvgpu_run.ensure_built(click.echo)
            libvgpu = build / "libvgpu.so" if build else None
            plugin = PluginProcess(root, api, node_name=NODE, profile=profile, libvgpu=libvgpu)
            try:
                plugin.start()
                _show_node(plugin, allocated.claims, libvgpu, gpus)
                if output:
                    written = write_output(output, slices, allocated.claims, plugin.cdi_dir)
                    specs = sum(1 for name in written if name.startswith("cdi/"))
                    _title(f"Wrote {output}/resourceslices.yaml, claims.yaml and cdi/ ({specs} spec(s))")
            finally:
                plugin.cleanup()
        finally:
            api.stop()


def _now() -> str:
    from dra_hami.translate_preview import rfc3339_now

    return rfc3339_now()


def _show_node(plugin: PluginProcess, claims: list[dict[str, Any]], libvgpu: Path | None, gpus: list[GpuInfo]) -> None:
    _title(f"kubelet plugin process {plugin.proc.pid if plugin.proc else '?'}: registration")
    info = plugin.get_info()
    click.echo(f"  GetInfo -> type={info.type} name={info.name}")
    click.echo(f"             endpoint={info.endpoint}")
    click.echo(f"             supported_versions={list(info.supported_versions)}")
    plugin.notify_registered(True)
    if libvgpu is None:
        click.echo("  (libvgpu could not be built here: `make -C libvgpu` needs make and a C compiler; the specs")
        click.echo("   name its host path anyway, and the libvgpu run at the end is left out)")

    _title("NodePrepareResources (v1) for every allocated claim, over gRPC")
    prepared = [c for c in claims if k8s.allocation(c)]
    response = plugin.prepare(prepared)
    for claim in prepared:
        meta = claim["metadata"]
        entry = response.claims[meta["uid"]]
        click.echo(f"  claim {meta['namespace']}/{meta['name']} ({meta['uid']})")
        if entry.error:
            click.echo(f"    error: {entry.error}")
            continue
        for device in entry.devices:
            click.echo(f"    device {device.pool_name}/{device.device_name} share {device.share_id or '-'}")
            for cdi_id in device.cdi_device_ids:
                click.echo(f"      cdi {cdi_id}")

    _title(f"CDI specs written to {plugin.cdi_dir} (applied by the container runtime)")
    for path in sorted(plugin.cdi_dir.glob("*.json")):
        click.echo(f"-- {path.name}")
        spec = json.loads(path.read_text())
        click.echo(yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=200).rstrip())

    if libvgpu is not None:
        _show_libvgpu(libvgpu.parent, plugin, prepared, response, gpus)


def _show_libvgpu(
    build: Path, plugin: PluginProcess, claims: list[dict[str, Any]], response, gpus: list[GpuInfo]
) -> None:
    """Run a CUDA program as a container of one prepared claim would run it, and show the cap hold."""
    claim = next((c for c in claims if c["metadata"]["name"] == DEMO_CLAIM), claims[0] if claims else None)
    if claim is None:
        return
    entry = response.claims[claim["metadata"]["uid"]]
    if entry.error or not entry.devices:
        return
    device = entry.devices[0]
    cdi_name = device.cdi_device_ids[0].split("=", 1)[1]
    spec = json.loads(next(plugin.cdi_dir.glob(f"*{claim['metadata']['uid']}.json")).read_text())
    env = libvgpu_run.container_env(spec, cdi_name, plugin.vgpu_dir)
    gpu = next(g for g in gpus if g.device_name == device.device_name)
    cap = int(env[wire.ENV_MEMORY_LIMIT_INDEXED.format(index=0)].removesuffix("m")) << 20
    run = libvgpu_run.run_alloc(build, env, gpu, cap)
    mib = 1 << 20
    _title(
        f"libvgpu in a container of claim {claim['metadata']['namespace']}/{claim['metadata']['name']}: "
        f"fake {gpu.name} ({gpu.memory_bytes // mib} MiB), slice {cap // mib} MiB"
    )
    click.echo(f"  cuDeviceTotalMem                 -> {run.total_mem // mib} MiB (the slice, not the card)")
    click.echo(f"  cuMemAlloc({run.first_size // mib} MiB)             -> {run.first_result}")
    click.echo(f"  cuMemGetInfo                     -> free {run.info_free // mib} MiB of {run.info_total // mib} MiB")
    click.echo(f"  cuMemAlloc({run.first_size // mib} MiB) again       -> {run.second_result}")


def _title(text: str) -> None:
    click.echo()
    click.secho(f"== {text}", bold=True)
