"""CDI spec versions: which ``cdiVersion`` values exist and the lowest one a spec's fields need.

Runtimes refuse a spec that declares a version lower than its fields need, and older runtimes refuse
versions newer than they know (podman 4.3 stops at 0.5.0), so we always write the lowest that fits.
"""

from collections.abc import Iterator

from .models import ContainerEdits, Spec

VALID_VERSIONS: tuple[str, ...] = (
    "0.1.0",
    "0.2.0",
    "0.3.0",
    "0.4.0",
    "0.5.0",
    "0.6.0",
    "0.7.0",
    "0.8.0",
    "1.0.0",
    "1.1.0",
)
CURRENT_VERSION = "1.1.0"
# The runtimes' loaders treat 0.3.0 as the base: 0.1.0/0.2.0 are known but too low for any spec.
EARLIEST_VERSION = "0.3.0"


def version_key(version: str) -> tuple[int, int, int]:
    """Sortable form of a valid version (raises ValueError for a malformed one)."""
    major, minor, patch = (int(part) for part in version.split("."))
    return major, minor, patch


def is_valid_version(version: object) -> bool:
    return isinstance(version, str) and version in VALID_VERSIONS


def _edits_requirements(edits: ContainerEdits, path: str) -> Iterator[tuple[str, str]]:
    for i, mount in enumerate(edits.mounts):
        if mount.type:
            yield "0.4.0", f"{path}.mounts[{i}].type"
    for i, node in enumerate(edits.device_nodes):
        if node.host_path:
            yield "0.5.0", f"{path}.deviceNodes[{i}].hostPath"
    if edits.intel_rdt is not None:
        yield "0.7.0", f"{path}.intelRdt"
        if edits.intel_rdt.schemata:
            yield "1.1.0", f"{path}.intelRdt.schemata"
        if edits.intel_rdt.enable_monitoring:
            yield "1.1.0", f"{path}.intelRdt.enableMonitoring"
    if edits.additional_gids:
        yield "0.7.0", f"{path}.additionalGids"
    if edits.net_devices:
        yield "1.1.0", f"{path}.netDevices"


def version_requirements(spec: Spec) -> Iterator[tuple[str, str]]:
    """Yield ``(version, json path)`` for every field that needs more than the base version."""
    if spec.annotations:
        yield "0.6.0", "annotations"
    if "." in spec.kind.partition("/")[2]:
        yield "0.6.0", "kind"
    if spec.container_edits is not None:
        yield from _edits_requirements(spec.container_edits, "containerEdits")
    for i, device in enumerate(spec.devices):
        if device.name[:1].isdigit():
            yield "0.5.0", f"devices[{i}].name"
        if device.annotations:
            yield "0.6.0", f"devices[{i}].annotations"
        yield from _edits_requirements(device.container_edits, f"devices[{i}].containerEdits")


def required_version(spec: Spec) -> tuple[str, str | None]:
    """The lowest version covering the spec and the first field that forces it (None for the base)."""
    best, reason = EARLIEST_VERSION, None
    for version, path in version_requirements(spec):
        if version_key(version) > version_key(best):
            best, reason = version, path
    return best, reason


def minimum_version(spec: Spec) -> str:
    """The lowest ``cdiVersion`` that covers every field the spec uses."""
    return required_version(spec)[0]
