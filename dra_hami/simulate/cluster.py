"""A trace as the allocator sees it: our real wire format for the nodes' GPUs, Pods and ResourceClaims.

* Each trace node publishes its pool with ``build_pool`` (the publisher's own code) from synthetic ``GpuInfo``:
  productName = the trace's model code (``V100M16``, ``G2``, ...), memory from the model table in ``trace.py``,
  100 cores, shares = ``SPLIT_COUNT`` (high enough never to bind: the trace's smallest share is 50 milli).
* The Node has the trace's cpu_milli / memory_mib as allocatable (no pod-count limit).
* A pod with ``num_gpu = 1`` asks for one device with memory = gpu_milli/1000 of the GPU's memory and
  cores = floor(gpu_milli / 10); memory is exact (GPU memory is a multiple of 1000 MiB), so packing follows the
  trace's milli accounting exactly. ``num_gpu = n > 1`` asks for n whole devices (all memory, 100 cores each).
  ``gpu_spec`` becomes a CEL selector on productName. CPU-only pods get no claim.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dra_hami import wire
from dra_hami.allocator import (
    Claim,
    ClusterState,
    Device,
    DeviceClass,
    Node,
    Pod,
    SelectorCache,
    parse_claim,
    parse_pod,
)
from dra_hami.allocator.model import parse_device_class, parse_slices
from dra_hami.allocator.nodes import parse_node
from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.discovery.model import GpuInfo
from dra_hami.publisher.slices import build_pool, device_class

from .trace import MILLI_PER_GPU, TraceNode, TracePod

DRIVER = wire.DEFAULT_DRIVER_NAME
SPLIT_COUNT = 100
MIB = 1 << 20
NAMESPACE = "sim"


def gpu_infos(node: TraceNode) -> list[GpuInfo]:
    return [
        GpuInfo(
            uuid=f"GPU-{node.name}-{i}",
            minor=i,
            index=i,
            name=node.model,
            memory_bytes=node.gpu_memory_mib * MIB,
            pci_bus_id=f"0000:{i + 1:02x}:00.0",
        )
        for i in range(node.gpus)
    ]


def node_slices(node: TraceNode, name: str) -> list[dict[str, Any]]:
    """The node's ResourceSlices exactly as our kubelet plugin would publish them."""
    config = PublisherConfig(node_name=name, split_count=SPLIT_COUNT)
    return build_pool(gpu_infos(node), config, generation=1)


def node_object(node: TraceNode, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {"allocatable": {"cpu": f"{node.cpu_milli}m", "memory": f"{node.memory_mib}Mi"}},
    }


# Every productName selector written, with its models: the simulation answers them without CEL (selectors.py).
SELECTORS: dict[str, tuple[str, ...]] = {}


def spec_selector(models: tuple[str, ...]) -> str:
    names = ", ".join("'" + m.replace("\\", "\\\\").replace("'", "\\'") + "'" for m in models)
    expression = f"device.attributes['{DRIVER}'].productName in [{names}]"
    SELECTORS[expression] = tuple(models)
    return expression


def gpu_request(pod: TracePod, gpu_memory_mib: int | None = None) -> dict[str, Any]:
    """The claim's one request. Fractions need the GPU's memory, so they are asked per model (see below)."""
    exactly: dict[str, Any] = {"deviceClassName": DRIVER}
    if pod.num_gpu == 1 and pod.gpu_milli < MILLI_PER_GPU:
        assert gpu_memory_mib is not None
        memory = pod.gpu_milli * gpu_memory_mib // MILLI_PER_GPU
        exactly["capacity"] = {"requests": {"memory": f"{memory}Mi", "cores": str(pod.gpu_milli // 10)}}
    else:
        exactly["capacity"] = {"requests": {"cores": "100"}}  # memory defaults to all of it
        if pod.num_gpu > 1:
            exactly["count"] = pod.num_gpu
    return {"name": "gpu", "exactly": exactly}


def claim_object(pod: TracePod, name: str, memory_by_model: dict[str, int]) -> dict[str, Any] | None:
    """The pod's ResourceClaim, or None for a CPU-only pod.

    A fraction of a GPU is a fraction of that GPU's memory, which differs by model: when the cluster mixes
    memory sizes the request lists one ``firstAvailable`` alternative per model (each with a productName
    selector), so the fraction is the same whichever model the allocator picks.
    """
    if pod.num_gpu == 0:
        return None
    models = sorted(m for m in memory_by_model if not pod.gpu_spec or m in pod.gpu_spec)
    if pod.gpu_spec and not models:
        models = list(pod.gpu_spec)  # matches no GPU of the cluster: the claim will be unplaceable
    fractional = pod.num_gpu == 1 and pod.gpu_milli < MILLI_PER_GPU
    sizes = sorted({memory_by_model.get(m, 0) for m in models})
    if not fractional or len(sizes) == 1:
        request = gpu_request(pod, sizes[0] if sizes else 1000)
        if pod.gpu_spec:
            request["exactly"]["selectors"] = [{"cel": {"expression": spec_selector(pod.gpu_spec)}}]
        requests = [request]
    else:
        subrequests = []
        for size in sizes:
            same = tuple(m for m in models if memory_by_model[m] == size)
            body = gpu_request(pod, size)["exactly"]
            body["selectors"] = [{"cel": {"expression": spec_selector(same)}}]
            subrequests.append({"name": f"m{size}", **body})
        requests = [{"name": "gpu", "firstAvailable": subrequests}]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}"},
        "spec": {"devices": {"requests": requests}},
    }


def pod_object(pod: TracePod, name: str) -> dict[str, Any]:
    requests = {"cpu": f"{pod.cpu_milli}m", "memory": f"{pod.memory_mib}Mi"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}"},
        "spec": {"containers": [{"name": "main", "image": "trace", "resources": {"requests": requests}}]},
        "status": {"phase": "Pending"},
    }


@dataclass(frozen=True, slots=True)
class PodShape:
    """A parsed Pod and Claim for one trace row shape; ``instance`` renames them for each arrival (cheap)."""

    pod: Pod
    claim: Claim | None

    def instance(self, index: int) -> tuple[Pod, list[Claim]]:
        name = f"p{index}"
        pod = dataclasses.replace(self.pod, name=name, uid=f"uid-{name}")
        if self.claim is None:
            return pod, []
        return pod, [dataclasses.replace(self.claim, name=name, uid=f"uid-c-{name}")]


def shape_key(pod: TracePod) -> tuple:
    return (pod.cpu_milli, pod.memory_mib, pod.num_gpu, pod.gpu_milli, pod.gpu_spec)


def pod_shapes(pods: list[TracePod], memory_by_model: dict[str, int]) -> dict[tuple, PodShape]:
    shapes: dict[tuple, PodShape] = {}
    for pod in pods:
        key = shape_key(pod)
        if key not in shapes:
            claim = claim_object(pod, "shape", memory_by_model)
            shapes[key] = PodShape(parse_pod(pod_object(pod, "shape")), parse_claim(claim) if claim else None)
    return shapes


def memory_by_model(nodes: list[TraceNode]) -> dict[str, int]:
    """GPU model -> memory in MiB. One model must have one memory size (the fraction mapping needs it)."""
    sizes: dict[str, int] = {}
    for node in nodes:
        if node.gpus and sizes.setdefault(node.model, node.gpu_memory_mib) != node.gpu_memory_mib:
            raise ValueError(
                f"GPU model {node.model!r} has two memory sizes ({sizes[node.model]} and "
                f"{node.gpu_memory_mib} MiB): give each size its own model name"
            )
    return sizes


def node_names(nodes: list[TraceNode], prefixes: list[int] | None) -> list[str]:
    """Node names as the cluster sees them; with ``prefixes`` each gets ``%04d-`` like the artifact (random ties)."""
    if prefixes is None:
        return [n.name for n in nodes]
    return [f"{p:04d}-{n.name}" for p, n in zip(prefixes, nodes, strict=True)]


@dataclass(frozen=True, slots=True)
class ParsedCluster:
    """The cluster's parsed, immutable objects: a fresh ClusterState over them is an empty cluster."""

    devices: tuple[Device, ...]
    classes: tuple[DeviceClass, ...]
    nodes: tuple[Node, ...]

    def state(self, selectors: SelectorCache | None = None) -> ClusterState:
        return ClusterState(self.devices, self.classes, (), self.nodes, selectors=selectors)


def parse_cluster(nodes: list[TraceNode], names: list[str]) -> ParsedCluster:
    """Publish every node's slices with the publisher's code and parse them as the allocator would."""
    slices: list[dict[str, Any]] = []
    node_objects = []
    for node, name in zip(nodes, names, strict=True):
        slices.extend(node_slices(node, name))
        node_objects.append(node_object(node, name))
    return ParsedCluster(
        tuple(parse_slices(slices)),
        (parse_device_class(device_class(DRIVER)),),
        tuple(parse_node(n) for n in node_objects),
    )
