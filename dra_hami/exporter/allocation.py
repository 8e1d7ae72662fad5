"""What is allocated on this node's GPUs, from the allocation results of the ResourceClaims prepared here.

Pure. The results were read by the one parser every component shares (``allocator.model.claim_results``) and
are counted by its one rule (``AllocatedDevice.amount``): a share takes its consumedCapacity, a result without
a shareID the whole device, adminAccess nothing. So the numbers are those the allocator and GpuQuota count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dra_hami import wire
from dra_hami.discovery.model import GpuInfo
from dra_hami.exporter.identity import ClaimUsers


@dataclass
class DeviceAllocation:
    shares: int = 0  # allocation results on the device (HAMi's "shared" count)
    memory: int = 0  # bytes
    cores: int = 0  # percent


@dataclass(frozen=True)
class ContainerKey:
    namespace: str
    pod: str
    container_index: str
    uuid: str


@dataclass
class ContainerAllocation:
    memory: int = 0
    cores: int = 0
    claims: set[str] = field(default_factory=set)  # more than one: ambiguous under HAMi's labels


@dataclass(frozen=True)
class NodeAllocation:
    devices: dict[str, DeviceAllocation]  # by GPU UUID; every GPU of the node, 0 when nothing is allocated
    containers: dict[ContainerKey, ContainerAllocation]


def node_allocation(claims: Iterable[tuple[str, str, ClaimUsers]], gpus: Iterable[GpuInfo]) -> NodeAllocation:
    """``claims``: (claim uid, namespace, users) of the claims prepared on the node."""
    by_name = {gpu.device_name: gpu for gpu in gpus}
    devices = {gpu.uuid: DeviceAllocation() for gpu in by_name.values()}
    containers: dict[ContainerKey, ContainerAllocation] = {}
    for uid, namespace, users in claims:
        for result in users.results:
            gpu = by_name.get(result.device.device)
            if gpu is None or result.admin_access:
                continue  # another node's or an unknown device; admin access takes nothing
            capacity = {wire.CAPACITY_MEMORY: gpu.memory_bytes, wire.CAPACITY_CORES: wire.CORES_TOTAL}
            memory = result.amount(wire.CAPACITY_MEMORY, capacity)
            cores = result.amount(wire.CAPACITY_CORES, capacity)
            row = devices[gpu.uuid]
            row.shares += 1
            row.memory += memory
            row.cores += cores
            for consumer in users.consumers:
                for index in consumer.indices:
                    entry = containers.setdefault(ContainerKey(namespace, consumer.pod, index, gpu.uuid),
                                                  ContainerAllocation())  # fmt: skip
                    entry.memory += memory  # two results of one claim on one GPU: that claim's total there
                    entry.cores += cores
                    entry.claims.add(uid)
    return NodeAllocation(devices, containers)
