"""The wire contract shared by every component: names Kubernetes, the runtime and libvgpu agree on.

Compatible with HAMi's DRA driver on purpose (see docs/design/wire-contract.md). Only the driver name is
configurable; everything else derives from it.
"""

from __future__ import annotations

import re

DEFAULT_DRIVER_NAME = "hami-core-gpu.project-hami.io"
DEVICE_TYPE = "hami-gpu"
DEVICE_NAME_PREFIX = "hami-gpu-"

# Consumable capacity keys (unqualified: they live in the driver's domain).
CAPACITY_MEMORY = "memory"
CAPACITY_CORES = "cores"
CAPACITY_SHARES = "shares"
CAPACITY_KEYS = (CAPACITY_MEMORY, CAPACITY_CORES, CAPACITY_SHARES)

MEMORY_STEP = 1 << 20  # 1Mi: memory is requested in whole MiB, like HAMi's nvidia.com/gpumem
CORES_TOTAL = 100
DEFAULT_SPLIT_COUNT = 10  # HAMi's deviceSplitCount

# Standard attributes (fully qualified by Kubernetes).
ATTR_PCIE_ROOT = "resource.kubernetes.io/pcieRoot"
ATTR_PCI_BUS_ID = "resource.kubernetes.io/pciBusID"

# Opaque claim configuration.
CONFIG_API_VERSION = "gpu.hami.io/v1alpha1"
CONFIG_KIND = "VGpuConfig"

# Environment the CDI spec hands to libvgpu (HAMi-core's names, plus our UUID-keyed limits).
ENV_MEMORY_LIMIT_INDEXED = "CUDA_DEVICE_MEMORY_LIMIT_{index}"  # value "<MiB>m"
ENV_SM_LIMIT_INDEXED = "CUDA_DEVICE_SM_LIMIT_{index}"  # value "<cores>"
ENV_SHARED_CACHE = "CUDA_DEVICE_MEMORY_SHARED_CACHE"
ENV_DEVICE_ORDER = "CUDA_DEVICE_ORDER"
# One variable per GPU of a claim: "<gpu uuid>,<memory bytes>,<cores>", the claim's total on that GPU.
# libvgpu prefers these over the indexed variables, so a limit can never follow the wrong device, and takes
# the LOWEST of several entries of one UUID (never their sum: an entry a process adds cannot raise it).
# The suffix is "<first 8 hex digits of the claim UID>_<GPU index in the claim>" so two claims never
# collide. (Specs of older plugins have one entry per share, suffix "_<share index>", to be summed.)
ENV_DEVICE_LIMIT_PREFIX = "VGPU_DEVICE_LIMIT_"
ENV_CORE_POLICY = "GPU_CORE_UTILIZATION_POLICY"
ENV_TASK_PRIORITY = "CUDA_TASK_PRIORITY"
ENV_LOG_LEVEL = "LIBCUDA_LOG_LEVEL"
ENV_OOM_POLICY = "VGPU_OOM_POLICY"

# Variables libvgpu reads besides the ones above (HAMi-core's names and our test/tuning knobs).
ENV_DISABLE_CONTROL = "CUDA_DISABLE_CONTROL"  # honoured only by a test build of libvgpu
ENV_MEMORY_LIMIT = "CUDA_DEVICE_MEMORY_LIMIT"
ENV_SM_LIMIT = "CUDA_DEVICE_SM_LIMIT"

# Every variable a workload could set to steer libvgpu, in ONE place: the webhook refuses pods that set
# any of them (a container gets them only from its claims' CDI specs), and tests/libvgpu checks that
# every name libvgpu's sources read is covered. libvgpu itself lets them only LOWER a claim's limits.
CONTROL_ENV_NAMES = frozenset(
    {
        ENV_SHARED_CACHE,
        ENV_CORE_POLICY,
        ENV_TASK_PRIORITY,
        ENV_LOG_LEVEL,
        ENV_OOM_POLICY,
        ENV_DISABLE_CONTROL,
        ENV_MEMORY_LIMIT,
        ENV_SM_LIMIT,
    }
)
# CUDA_DEVICE_MEMORY_LIMIT_<i>, CUDA_DEVICE_SM_LIMIT_<i>, and every VGPU_* (VGPU_DEVICE_LIMIT_*,
# VGPU_OOM_POLICY, VGPU_CLAIMS_DIR, VGPU_LIMITER_WINDOW_MS, VGPU_TEST_*).
CONTROL_ENV_PREFIXES = (f"{ENV_MEMORY_LIMIT}_", f"{ENV_SM_LIMIT}_", "VGPU_")


def is_control_env(name: str) -> bool:
    """Whether an environment variable NAME steers libvgpu (a pod must not set it itself)."""
    return name in CONTROL_ENV_NAMES or name.startswith(CONTROL_ENV_PREFIXES)


SHARED_CACHE_FILE = "vgpu.cache"
# The claim's variables, one NAME=VALUE per line, in a root-owned file <vgpu dir>/limits/<claim uid> on the
# host, bind-mounted read-only at CONTAINER_LIMITS_DIR/<claim uid>: libvgpu (which knows that directory at
# compile time, libvgpu/src/limits_file.h) takes the claim's limits from it alone; variables a process sets
# may only lower them, and sessions without the container's environment (su -, ssh, env -i) keep them.
LIMITS_DIR_NAME = "limits"
CONTAINER_LIMITS_DIR = "/usr/local/vgpu/limits"
# Claims prepared by plugins before the limits files had the same lines as <claim dir>/vgpu.env, in the
# claim's (tenant-writable) directory; libvgpu still reads it for them, only when no limits file exists.
CLAIM_ENV_FILE = "vgpu.env"
CONTAINER_VGPU_DIR = "/usr/local/vgpu"
CONTAINER_LIBVGPU_PATH = "/usr/local/vgpu/libvgpu.so"
CONTAINER_PRELOAD_PATH = "/etc/ld.so.preload"


def device_name(minor: int) -> str:
    return f"{DEVICE_NAME_PREFIX}{minor}"


def cdi_kind(driver_name: str) -> str:
    """CDI kind of our per-claim specs: vendor ``k8s.<driver>``, class ``claim``."""
    return f"k8s.{driver_name}/claim"


def cdi_device_name(claim_uid: str, device: str, share_id: str | None) -> str:
    return f"{claim_uid}-{device}-{share_id}" if share_id else f"{claim_uid}-{device}"


def device_limit_env(claim_uid: str, gpu_index: int, gpu_uuid: str, memory: int, cores: int) -> str:
    """The ``VGPU_DEVICE_LIMIT_*`` entry (``KEY=uuid,bytes,cores``) of a claim's GPU."""
    suffix = f"{claim_uid.replace('-', '')[:8]}_{gpu_index}"
    return f"{ENV_DEVICE_LIMIT_PREFIX}{suffix}={gpu_uuid},{memory},{cores}"


def parse_device_limit(entry: str) -> tuple[str, int, int] | None:
    """(uuid, bytes, cores) of a ``VGPU_DEVICE_LIMIT_*`` env entry; None for any other or malformed entry."""
    key, _, value = entry.partition("=")
    if not key.startswith(ENV_DEVICE_LIMIT_PREFIX):
        return None
    parts = value.split(",")
    if len(parts) != 3:
        return None
    try:
        return parts[0], int(parts[1]), int(parts[2])
    except ValueError:
        return None


def device_class_selector(driver_name: str) -> str:
    return f"device.driver == '{driver_name}' && device.attributes['{driver_name}'].type == '{DEVICE_TYPE}'"


def scheduling_gate(driver_name: str) -> str:
    return f"{driver_name}/allocation"


# The pciBusID attribute is published in the sysfs form; NVML and fake profiles may write others.
_BUS_ID = re.compile(r"^(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$")


def normalise_pci_bus_id(bus_id: str) -> str:
    """``00000000:3B:00.0`` (NVML) or ``3b:00.0`` -> ``0000:3b:00.0`` (the sysfs form)."""
    match = _BUS_ID.match(bus_id.strip())
    if not match:
        raise ValueError(f"{bus_id!r} is not a PCI bus id (domain:bus:device.function)")
    domain, bus, device, function = match.groups()
    return f"{int(domain or '0', 16):04x}:{int(bus, 16):02x}:{int(device, 16):02x}.{function}"
