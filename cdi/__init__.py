"""A small standalone library for Container Device Interface (CDI) specs.

Models shaped like specs-go, validation of names, fields and versions as the runtimes' loaders do
it, the lowest cdiVersion for a spec, and atomic spec files in a CDI directory.
"""

from .build import build_spec, with_minimum_version
from .codec import parse_spec, spec_from_dict, spec_to_dict, spec_to_json
from .errors import CDIError
from .models import ContainerEdits, Device, DeviceNode, Hook, IntelRdt, Mount, NetDevice, Spec
from .names import (
    QualifiedName,
    parse_kind,
    parse_qualified_name,
    qualified_name,
    validate_class,
    validate_device_name,
    validate_vendor,
)
from .storage import (
    SpecListing,
    atomic_write,
    list_specs,
    read_spec,
    remove_spec,
    spec_file_name,
    spec_path,
    write_spec,
)
from .validation import HOOK_NAMES, validate_container_edits, validate_spec
from .versions import (
    CURRENT_VERSION,
    EARLIEST_VERSION,
    VALID_VERSIONS,
    minimum_version,
    required_version,
    version_requirements,
)

__all__ = [
    "CURRENT_VERSION",
    "EARLIEST_VERSION",
    "HOOK_NAMES",
    "VALID_VERSIONS",
    "CDIError",
    "ContainerEdits",
    "Device",
    "DeviceNode",
    "Hook",
    "IntelRdt",
    "Mount",
    "NetDevice",
    "QualifiedName",
    "Spec",
    "SpecListing",
    "atomic_write",
    "build_spec",
    "list_specs",
    "minimum_version",
    "parse_kind",
    "parse_qualified_name",
    "parse_spec",
    "qualified_name",
    "read_spec",
    "remove_spec",
    "required_version",
    "spec_file_name",
    "spec_from_dict",
    "spec_path",
    "spec_to_dict",
    "spec_to_json",
    "validate_class",
    "validate_container_edits",
    "validate_device_name",
    "validate_spec",
    "validate_vendor",
    "version_requirements",
    "with_minimum_version",
    "write_spec",
]
