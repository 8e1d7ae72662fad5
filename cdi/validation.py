"""Semantic validation of a CDI spec, following the runtimes' reference loader.

Each failure raises ``CDIError`` whose field is the JSON path of the bad value, e.g.
``devices[1].name: "-x" must start with a letter or digit``.
"""

import re

from .errors import CDIError
from .models import ContainerEdits, DeviceNode, Hook, IntelRdt, Mount, NetDevice, Spec
from .names import parse_kind, validate_device_name
from .versions import VALID_VERSIONS, is_valid_version, required_version, version_key

HOOK_NAMES = ("createRuntime", "createContainer", "startContainer", "poststart", "poststop")
DEVICE_TYPES = ("b", "c", "u", "p")
PERMISSION_BITS = "rwm"
# Kubernetes annotation rules, which the CDI loader applies to spec and device annotations.
_ANNOTATION_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
ANNOTATIONS_MAX_BYTES = 256 * 1024
# Linux network interface names: IFNAMSIZ - 1.
IFNAME_MAX_LEN = 15


def _require_absolute(path: str, field: str) -> None:
    if not path:
        raise CDIError("must not be empty", field)
    if not path.startswith("/"):
        raise CDIError(f'"{path}" must be an absolute path', field)


def _validate_env(env: list[str], field: str) -> None:
    for i, entry in enumerate(env):
        if entry.find("=") <= 0:
            raise CDIError(f'"{entry}" must have the form KEY=VALUE', f"{field}[{i}]")
        if "\x00" in entry:
            raise CDIError("must not contain a NUL character", f"{field}[{i}]")


def _validate_annotations(annotations: dict[str, str], field: str) -> None:
    size = 0
    for key, value in annotations.items():
        size += len(key.encode()) + len(value.encode())
        prefix, _, name = key.rpartition("/")
        if "/" in prefix or (key.count("/") == 1 and not prefix):
            raise CDIError(f'key "{key}" must be a name with an optional DNS prefix', field)
        if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
            raise CDIError(f'key "{key}" has an invalid prefix (must be a lowercase DNS subdomain)', field)
        if len(name) > 63 or not _ANNOTATION_NAME.fullmatch(name):
            raise CDIError(
                f'key "{key}" has an invalid name (alphanumerics, "-", "_", ".", 63 characters at most)',
                field,
            )
    if size > ANNOTATIONS_MAX_BYTES:
        raise CDIError(f"total size {size} bytes exceeds {ANNOTATIONS_MAX_BYTES}", field)


def _validate_device_node(node: DeviceNode, field: str) -> None:
    _require_absolute(node.path, f"{field}.path")
    if node.host_path:  # "" means unset, as with Go's omitempty
        _require_absolute(node.host_path, f"{field}.hostPath")
    if node.type and node.type not in DEVICE_TYPES:
        raise CDIError(f'"{node.type}" is not one of {", ".join(DEVICE_TYPES)}', f"{field}.type")
    for bit in node.permissions or "":
        if bit not in PERMISSION_BITS:
            message = f'"{node.permissions}" must be a combination of "r", "w" and "m"'
            raise CDIError(message, f"{field}.permissions")


def _is_bind(mount: Mount) -> bool:
    # Runtimes bind-mount when no type is given; only then must the source be a host path.
    return not mount.type or mount.type == "bind" or bool({"bind", "rbind"} & set(mount.options))


def _validate_mount(mount: Mount, field: str) -> None:
    if not mount.host_path:
        raise CDIError("must not be empty", f"{field}.hostPath")
    if _is_bind(mount):
        _require_absolute(mount.host_path, f"{field}.hostPath")
    _require_absolute(mount.container_path, f"{field}.containerPath")


def _validate_hook(hook: Hook, field: str) -> None:
    if hook.hook_name not in HOOK_NAMES:
        raise CDIError(f'"{hook.hook_name}" is not one of {", ".join(HOOK_NAMES)}', f"{field}.hookName")
    _require_absolute(hook.path, f"{field}.path")
    _validate_env(hook.env, f"{field}.env")
    if hook.timeout is not None and hook.timeout <= 0:
        raise CDIError(f"{hook.timeout} must be greater than 0", f"{field}.timeout")


def _validate_intel_rdt(rdt: IntelRdt, field: str) -> None:
    # The closID names a resctrl directory: the kernel refuses these.
    clos = rdt.clos_id
    if clos is not None and (clos in (".", "..") or "/" in clos or "\n" in clos or len(clos) >= 4096):
        raise CDIError(f'"{clos}" is not a valid resctrl group name', f"{field}.closID")


def _validate_net_devices(devices: list[NetDevice], field: str) -> None:
    seen: dict[str, set[str]] = {"hostInterfaceName": set(), "name": set()}
    for i, dev in enumerate(devices):
        for key, value in (("hostInterfaceName", dev.host_interface_name), ("name", dev.name)):
            where = f"{field}[{i}].{key}"
            if not value:
                raise CDIError("must not be empty", where)
            if len(value) > IFNAME_MAX_LEN or value in (".", "..") or any(c in value for c in "/: \t\n"):
                raise CDIError(f'"{value}" is not a valid network interface name', where)
            if value in seen[key]:
                raise CDIError(f'duplicate {key} "{value}"', where)
            seen[key].add(value)


def validate_container_edits(edits: ContainerEdits, field: str = "containerEdits") -> None:
    _validate_env(edits.env, f"{field}.env")
    for i, node in enumerate(edits.device_nodes):
        _validate_device_node(node, f"{field}.deviceNodes[{i}]")
    for i, mount in enumerate(edits.mounts):
        _validate_mount(mount, f"{field}.mounts[{i}]")
    for i, hook in enumerate(edits.hooks):
        _validate_hook(hook, f"{field}.hooks[{i}]")
    if edits.intel_rdt is not None:
        _validate_intel_rdt(edits.intel_rdt, f"{field}.intelRdt")
    _validate_net_devices(edits.net_devices, f"{field}.netDevices")


def _validate_version_known(spec: Spec) -> None:
    if not is_valid_version(spec.cdi_version):
        valid = ", ".join(VALID_VERSIONS)
        raise CDIError(f'"{spec.cdi_version}" is not a CDI version (valid: {valid})', "cdiVersion")


def _validate_version_covers_fields(spec: Spec) -> None:
    needed, reason = required_version(spec)
    if version_key(spec.cdi_version) < version_key(needed):
        because = f" (because of {reason})" if reason else ""
        message = f'"{spec.cdi_version}" is too low: the spec needs at least {needed}{because}'
        raise CDIError(message, "cdiVersion")


def validate_spec(spec: Spec) -> Spec:
    """Check every rule a runtime's loader applies; returns the spec for chaining."""
    _validate_version_known(spec)
    parse_kind(spec.kind)
    _validate_annotations(spec.annotations, "annotations")
    if spec.container_edits is not None:
        validate_container_edits(spec.container_edits)
    if not spec.devices:
        raise CDIError("must contain at least one device", "devices")
    names: set[str] = set()
    for i, device in enumerate(spec.devices):
        field = f"devices[{i}]"
        validate_device_name(device.name, f"{field}.name")
        if device.name in names:
            raise CDIError(f'duplicate device name "{device.name}"', f"{field}.name")
        names.add(device.name)
        _validate_annotations(device.annotations, f"{field}.annotations")
        if device.container_edits.is_empty():
            raise CDIError("must contain at least one edit", f"{field}.containerEdits")
        validate_container_edits(device.container_edits, f"{field}.containerEdits")
    # Last: this check reads every field, so the fields must be sane first.
    _validate_version_covers_fields(spec)
    return spec
