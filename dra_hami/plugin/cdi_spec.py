"""Turn a checked claim allocation into its CDI spec and the devices the kubelet gets back (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from dra_hami import wire
from dra_hami.plugin.claim import ClaimAllocation, NodeDevice, Share

Injection = Literal["nvidia-cdi", "device-nodes", "none"]
CONTROL_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")


@dataclass(frozen=True)
class CdiSettings:
    driver_name: str
    vgpu_dir: Path  # host dir with claims/<uid>/ and ld.so.preload
    libvgpu_path: Path  # host path of libvgpu.so
    injection: Injection = "nvidia-cdi"
    # CDI id of a whole GPU as the NVIDIA Container Toolkit names it; {uuid}, {index} or {minor}.
    nvidia_cdi_template: str = "nvidia.com/gpu={uuid}"

    @property
    def preload_path(self) -> Path:
        return self.vgpu_dir / "ld.so.preload"

    def claim_dir(self, claim_uid: str) -> Path:
        return self.vgpu_dir / "claims" / claim_uid

    @property
    def limits_root(self) -> Path:
        """Host dir of the claims' limits files (root-owned; never mounted whole, never writable by a claim)."""
        return self.vgpu_dir / wire.LIMITS_DIR_NAME

    def limits_file(self, claim_uid: str) -> Path:
        return self.limits_root / claim_uid


@dataclass(frozen=True)
class PreparedDevice:
    """One entry of the NodePrepareResources answer (the kubelet's Device message)."""

    request_names: tuple[str, ...]
    pool_name: str
    device_name: str
    cdi_device_ids: tuple[str, ...]
    share_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "requestNames": list(self.request_names),
            "poolName": self.pool_name,
            "deviceName": self.device_name,
            "cdiDeviceIDs": list(self.cdi_device_ids),
            "shareID": self.share_id,
        }


CONTAINER_CLAIMS_DIR = PurePosixPath(wire.CONTAINER_VGPU_DIR) / "claims"
# Names the claim inside the container (handy for users) and lets a lost checkpoint be rebuilt.
CLAIM_ENV = "DRA_HAMI_CLAIM"


def build_spec(
    claim: ClaimAllocation, devices: dict[str, NodeDevice], pool: str, settings: CdiSettings
) -> tuple[dict[str, Any], list[PreparedDevice]]:
    """The claim's CDI spec (JSON form, cdiVersion left to the writer) and the kubelet's device list."""
    kind = wire.cdi_kind(settings.driver_name)
    gpus = sorted({s.device for s in claim.shares}, key=lambda name: devices[name].pci_bus_id)
    index_of = {name: i for i, name in enumerate(gpus)}
    per_gpu_env = {
        name: _gpu_limits(claim.uid, index_of[name], devices[name].uuid, [s for s in claim.shares if s.device == name])
        for name in gpus
    }
    shares = sorted(claim.shares, key=lambda s: (index_of[s.device], s.request, s.share_id or ""))

    spec_devices, prepared, used_names = [], [], set[str]()
    for share in shares:
        gpu = devices[share.device]
        name = _unique(wire.cdi_device_name(claim.uid, share.device, share.share_id), used_names)
        env = [f"{wire.ENV_DEVICE_ORDER}=PCI_BUS_ID", *per_gpu_env[share.device]]
        config = claim.configs.get(share.request)
        if config is not None:
            env += config.env()
        edits: dict[str, Any] = {"env": env}
        ids = [f"{kind}={name}"]
        if settings.injection == "device-nodes":
            edits["deviceNodes"] = [{"path": f"/dev/nvidia{gpu.minor}"}]
        elif settings.injection == "nvidia-cdi":
            ids.append(
                settings.nvidia_cdi_template.format(uuid=gpu.uuid, index=index_of[share.device], minor=gpu.minor)
            )
        spec_devices.append({"name": name, "containerEdits": edits})
        prepared.append(PreparedDevice((share.request,), pool, share.device, tuple(ids), share.share_id))

    edits = _claim_edits(claim.uid, settings)
    edits["env"].append(f"{CLAIM_ENV}={claim.namespace}/{claim.name}")
    spec = {"kind": kind, "devices": spec_devices, "containerEdits": edits}
    return spec, prepared


def limits_file(spec: dict[str, Any]) -> str:
    """The claim's limits file: every variable its CDI spec sets in a container, one NAME=VALUE per line.

    libvgpu reads it (mounted read-only) as the claim's limits, whatever the process's environment says
    (which may only lower them), so sessions without the container's environment (su -, ssh, env -i) keep
    them too (HAMi#1090)."""
    namespace, name = claim_identity(spec)
    edits = [device.get("containerEdits") or {} for device in spec.get("devices") or []]
    edits.append(spec.get("containerEdits") or {})
    entries = [entry for edit in edits for entry in edit.get("env") or []]
    header = f"# dra-hami: the limits of claim {namespace}/{name}, written by the kubelet plugin (read-only)\n"
    return header + "".join(f"{entry}\n" for entry in dict.fromkeys(entries))


def recorded_host_paths(spec: dict[str, Any], claim_uid: str) -> tuple[Path | None, Path | None]:
    """(claim dir, limits file) on the host as the claim's spec mounts them: where the claim was prepared,
    which is not the current --vgpu-dir when that moved since (the clean-up must find the old place)."""
    wanted = {str(CONTAINER_CLAIMS_DIR / claim_uid): 0, f"{wire.CONTAINER_LIMITS_DIR}/{claim_uid}": 1}
    found: list[Path | None] = [None, None]
    for mount in (spec.get("containerEdits") or {}).get("mounts") or []:
        index = wanted.get(mount.get("containerPath", ""))
        if index is not None and mount.get("hostPath"):
            found[index] = Path(mount["hostPath"])
    return found[0], found[1]


def claim_identity(spec: dict[str, Any]) -> tuple[str, str]:
    """(namespace, name) of the claim a spec was written for, or ('', '') if it does not say."""
    for entry in (spec.get("containerEdits") or {}).get("env") or []:
        key, _, value = entry.partition("=")
        if key == CLAIM_ENV and "/" in value:
            namespace, name = value.split("/", 1)
            return namespace, name
    return "", ""


def _gpu_limits(claim_uid: str, index: int, uuid: str, shares: list[Share]) -> list[str]:
    """The claim's limits on one GPU, summed over its shares of it: HAMi-core's per-index variables and
    ONE ``VGPU_DEVICE_LIMIT_*`` entry (libvgpu takes the lowest of several entries of a GPU, never their
    sum, so every share device of the GPU carries this same entry)."""
    if any(s.memory is None for s in shares):
        return []  # admin access: the whole device, unlimited
    memory = sum(s.memory or 0 for s in shares)
    cores = min(wire.CORES_TOTAL, sum(s.cores for s in shares))
    return [
        wire.ENV_MEMORY_LIMIT_INDEXED.format(index=index) + f"={memory // wire.MEMORY_STEP}m",
        wire.ENV_SM_LIMIT_INDEXED.format(index=index) + f"={cores}",
        wire.device_limit_env(claim_uid, index, uuid, memory, cores),
    ]


def _claim_edits(claim_uid: str, settings: CdiSettings) -> dict[str, Any]:
    container_dir = CONTAINER_CLAIMS_DIR / claim_uid
    edits: dict[str, Any] = {
        "env": [f"{wire.ENV_SHARED_CACHE}={container_dir / wire.SHARED_CACHE_FILE}"],
        "mounts": [
            # noexec as on the node (the claim's tmpfs): nothing the tenant writes there runs, in any runtime
            _bind(str(settings.claim_dir(claim_uid)), str(container_dir), "rw", "noexec"),
            # the claim's limits: a read-only mount of a root-owned file outside the claim's directory
            _bind(str(settings.limits_file(claim_uid)), f"{wire.CONTAINER_LIMITS_DIR}/{claim_uid}", "ro"),
            _bind(str(settings.libvgpu_path), wire.CONTAINER_LIBVGPU_PATH, "ro"),
            _bind(str(settings.preload_path), wire.CONTAINER_PRELOAD_PATH, "ro"),
        ],
    }
    if settings.injection == "device-nodes":
        edits["deviceNodes"] = [{"path": path} for path in CONTROL_DEVICE_NODES]
    return edits


def _bind(host: str, container: str, mode: str, *extra: str) -> dict[str, Any]:
    return {"hostPath": host, "containerPath": container, "options": [mode, "nosuid", "nodev", *extra, "bind"]}


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate in used:
        candidate, n = f"{name}-{n}", n + 1
    used.add(candidate)
    return candidate
