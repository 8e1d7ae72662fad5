"""CDI name rules and qualified device ids."""

import pytest

import cdi


@pytest.mark.parametrize("vendor", ["vendor.com", "k8s.gpu.hami.io", "a", "nvidia_x-y.com", "A1"])
def test_good_vendors(vendor: str) -> None:
    assert cdi.validate_vendor(vendor) == vendor


@pytest.mark.parametrize(
    ("vendor", "reason"),
    [
        ("", "must not be empty"),
        ("1vendor.com", "must start with a letter"),
        ("-vendor", "must start with a letter"),
        ("vendor.", "must end with a letter or digit"),
        ("ven:dor", "contains invalid character ':'"),
        ("ven/dor", "contains invalid character '/'"),
        ("vé.com", "contains invalid character 'é'"),
        ("v" * 254, "longer than 253"),
    ],
)
def test_bad_vendors(vendor: str, reason: str) -> None:
    with pytest.raises(cdi.CDIError, match=reason) as err:
        cdi.validate_vendor(vendor)
    assert err.value.field == "vendor"


@pytest.mark.parametrize("cls", ["gpu", "claim", "g", "my_class-1", "gpu.shared"])
def test_good_classes(cls: str) -> None:
    assert cdi.validate_class(cls) == cls


@pytest.mark.parametrize(
    ("cls", "reason"),
    [
        ("", "must not be empty"),
        ("0gpu", "must start with a letter"),
        ("gpu-", "must end with a letter or digit"),
        ("gp:u", "contains invalid character ':'"),
        ("c" * 64, "longer than 63"),
    ],
)
def test_bad_classes(cls: str, reason: str) -> None:
    with pytest.raises(cdi.CDIError, match=reason):
        cdi.validate_class(cls)


@pytest.mark.parametrize(
    "name", ["gpu0", "0", "1f2e-gpu0-3", "uuid:GPU-1234.a_b", "a" * 300, "9f0c8c52-8f1d-4e0b-a1c1-111111111111-gpu0"]
)
def test_good_device_names(name: str) -> None:
    assert cdi.validate_device_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "must not be empty"),
        ("-x", '"-x" must start with a letter or digit'),
        (".x", "must start with a letter or digit"),
        ("x:", "must end with a letter or digit"),
        ("a/b", "contains invalid character '/'"),
        ("a=b", "contains invalid character '='"),
        ("a b", "contains invalid character ' '"),
    ],
)
def test_bad_device_names(name: str, reason: str) -> None:
    with pytest.raises(cdi.CDIError, match=reason):
        cdi.validate_device_name(name)


def test_parse_kind() -> None:
    assert cdi.parse_kind("vendor.com/gpu") == ("vendor.com", "gpu")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("vendor.com", "must have the form vendor/class"),
        ("a/b/c", "must have the form vendor/class"),
        ("/gpu", "kind: vendor must not be empty"),
        ("vendor.com/", "kind: class must not be empty"),
        ("1v/gpu", 'kind: vendor "1v" must start with a letter'),
        ("v/g:pu", "kind: class \"g:pu\" contains invalid character ':'"),
    ],
)
def test_bad_kinds(kind: str, reason: str) -> None:
    with pytest.raises(cdi.CDIError, match=reason):
        cdi.parse_kind(kind)


def test_qualified_name() -> None:
    assert cdi.qualified_name("vendor.com/gpu", "gpu0") == "vendor.com/gpu=gpu0"


@pytest.mark.parametrize(
    ("kind", "device", "reason"),
    [("vendor.com", "gpu0", "kind: "), ("vendor.com/gpu", "-x", "device: "), ("v/g", "a=b", "device: ")],
)
def test_qualified_name_validates(kind: str, device: str, reason: str) -> None:
    with pytest.raises(cdi.CDIError, match=reason):
        cdi.qualified_name(kind, device)


def test_parse_qualified_name() -> None:
    parsed = cdi.parse_qualified_name("k8s.gpu.hami.io/claim=1234-gpu0:x")
    assert parsed == ("k8s.gpu.hami.io", "claim", "1234-gpu0:x")
    assert (parsed.vendor, parsed.cls, parsed.name, parsed.kind) == (
        "k8s.gpu.hami.io",
        "claim",
        "1234-gpu0:x",
        "k8s.gpu.hami.io/claim",
    )
    assert str(parsed) == "k8s.gpu.hami.io/claim=1234-gpu0:x"
    assert cdi.parse_qualified_name(cdi.qualified_name("v.com/g", "d")) == ("v.com", "g", "d")


@pytest.mark.parametrize(
    ("device_id", "reason"),
    [
        ("vendor.com/gpu", "must have the form vendor/class=name"),
        ("gpu=gpu0", "must have the form vendor/class=name"),
        ("a/b/c=gpu0", "must have the form vendor/class=name"),
        ("vendor.com/gpu=", "device id: name must not be empty"),
        ("vendor.com/gpu=a=b", "device id: name \"a=b\" contains invalid character '='"),
        ("vendor.com/gpu=-x", 'device id: name "-x" must start with a letter or digit'),
        ("1vendor/gpu=x", 'device id: vendor "1vendor" must start with a letter'),
        ("vendor/-gpu=x", 'device id: class "-gpu" must start with a letter'),
    ],
)
def test_bad_qualified_names(device_id: str, reason: str) -> None:
    with pytest.raises(cdi.CDIError, match=reason):
        cdi.parse_qualified_name(device_id)
