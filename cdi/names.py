"""CDI name rules: vendor, class, device name, kind (``vendor/class``) and qualified device ids.

The rules follow the CDI spec's names section. Every check raises ``CDIError`` naming the field.
"""

import string
from typing import NamedTuple

from .errors import CDIError

_LETTERS = frozenset(string.ascii_letters)
_ALNUM = _LETTERS | frozenset(string.digits)
_VENDOR_MIDDLE = _ALNUM | frozenset("_.-")
_CLASS_MIDDLE = _ALNUM | frozenset("_.-")  # '.' only since CDI 0.6.0 (see versions.py)
_DEVICE_MIDDLE = _ALNUM | frozenset("_.:-")
# The CDI specification: the vendor is a DNS subdomain (<= 253 characters), the class a DNS label (<= 63).
VENDOR_MAX_LEN = 253
CLASS_MAX_LEN = 63


class QualifiedName(NamedTuple):
    vendor: str
    cls: str
    name: str

    @property
    def kind(self) -> str:
        return f"{self.vendor}/{self.cls}"

    def __str__(self) -> str:
        return f"{self.vendor}/{self.cls}={self.name}"


def _check(
    value: str, field: str, what: str, *, letter_first: bool, middle: frozenset[str], max_len: int | None
) -> str:
    """Check one name; ``what`` says which part of a compound value (kind, device id) is wrong."""
    label = f'{what} "{value}"' if what else f'"{value}"'
    if not isinstance(value, str):
        raise CDIError(f"{what or 'value'} must be a string", field)
    if not value:
        raise CDIError(f"{what or 'value'} must not be empty", field)
    if max_len is not None and len(value) > max_len:
        raise CDIError(f"{label} is longer than {max_len} characters", field)
    if letter_first and value[0] not in _LETTERS:
        raise CDIError(f"{label} must start with a letter", field)
    if value[0] not in _ALNUM:
        raise CDIError(f"{label} must start with a letter or digit", field)
    if value[-1] not in _ALNUM:
        raise CDIError(f"{label} must end with a letter or digit", field)
    for char in value[1:-1]:
        if char not in middle:
            raise CDIError(f"{label} contains invalid character {char!r}", field)
    return value


def validate_vendor(vendor: str, field: str = "vendor", what: str = "") -> str:
    return _check(vendor, field, what, letter_first=True, middle=_VENDOR_MIDDLE, max_len=VENDOR_MAX_LEN)


def validate_class(cls: str, field: str = "class", what: str = "") -> str:
    return _check(cls, field, what, letter_first=True, middle=_CLASS_MIDDLE, max_len=CLASS_MAX_LEN)


def validate_device_name(name: str, field: str = "name", what: str = "") -> str:
    return _check(name, field, what, letter_first=False, middle=_DEVICE_MIDDLE, max_len=None)


def parse_kind(kind: str, field: str = "kind") -> tuple[str, str]:
    """Split and validate ``vendor/class``; returns ``(vendor, class)``."""
    if not isinstance(kind, str) or kind.count("/") != 1:
        raise CDIError(f'"{kind}" must have the form vendor/class', field)
    vendor, cls = kind.split("/")
    validate_vendor(vendor, field, "vendor")
    validate_class(cls, field, "class")
    return vendor, cls


def qualified_name(kind: str, device: str) -> str:
    """The fully-qualified CDI device id ``vendor/class=name`` that runtimes resolve."""
    vendor, cls = parse_kind(kind)
    validate_device_name(device, "device")
    return str(QualifiedName(vendor, cls, device))


def parse_qualified_name(device_id: str) -> QualifiedName:
    """Split and validate ``vendor/class=name``."""
    field = "device id"
    if not isinstance(device_id, str) or "=" not in device_id:
        raise CDIError(f'"{device_id}" must have the form vendor/class=name', field)
    kind, name = device_id.split("=", 1)
    if kind.count("/") != 1:
        raise CDIError(f'"{device_id}" must have the form vendor/class=name', field)
    vendor, cls = kind.split("/")
    validate_vendor(vendor, field, "vendor")
    validate_class(cls, field, "class")
    validate_device_name(name, field, "name")
    return QualifiedName(vendor, cls, name)
