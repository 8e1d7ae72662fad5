"""Every semantic rule of validate_spec, good and bad, with the JSON path named in the error."""

from typing import Any

import pytest
from cdi_samples import KIND, spec_dict, with_device_edits

import cdi


def _error(data: dict[str, Any]) -> cdi.CDIError:
    with pytest.raises(cdi.CDIError) as err:
        cdi.spec_from_dict(data)
    return err.value


def _assert_error(data: dict[str, Any], field: str, reason: str) -> None:
    err = _error(data)
    assert err.field == field, str(err)
    assert reason in str(err)
    assert str(err).startswith(f"{field}: ")


def test_minimal_spec_is_valid() -> None:
    spec = cdi.spec_from_dict(spec_dict())
    assert cdi.validate_spec(spec) is spec


# --- cdiVersion ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.3.0", "0.5.0", "0.8.0", "1.0.0", "1.1.0"])
def test_known_versions(version: str) -> None:
    assert cdi.spec_from_dict(spec_dict(cdiVersion=version)).cdi_version == version


@pytest.mark.parametrize("version", ["0.9.0", "1.2.0", "v0.3.0", "", "0.3"])
def test_unknown_versions(version: str) -> None:
    _assert_error(spec_dict(cdiVersion=version), "cdiVersion", "is not a CDI version")


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_versions_below_base_are_too_low(version: str) -> None:
    _assert_error(spec_dict(cdiVersion=version), "cdiVersion", "needs at least 0.3.0")


# --- kind ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("gpu", "must have the form vendor/class"),
        ("-v.com/gpu", 'vendor "-v.com" must start with a letter'),
        ("v.com/gpu_", 'class "gpu_" must end with a letter or digit'),
    ],
)
def test_bad_kind(kind: str, reason: str) -> None:
    _assert_error(spec_dict(kind=kind), "kind", reason)


# --- devices -------------------------------------------------------------------------------------


def test_devices_required() -> None:
    _assert_error(spec_dict(devices=[]), "devices", "at least one device")
    data = spec_dict()
    del data["devices"]
    _assert_error(data, "devices", "at least one device")


def test_bad_device_name_names_the_device() -> None:
    devices = [{"name": "ok", "containerEdits": {"env": ["A=1"]}}, {"name": "-x", "containerEdits": {"env": ["A=1"]}}]
    err = _error(spec_dict(devices=devices))
    assert str(err) == 'devices[1].name: "-x" must start with a letter or digit'


def test_duplicate_device_names() -> None:
    device = {"name": "gpu0", "containerEdits": {"env": ["A=1"]}}
    _assert_error(spec_dict(devices=[device, device]), "devices[1].name", 'duplicate device name "gpu0"')


@pytest.mark.parametrize("edits", [{}, {"env": []}, {"mounts": [], "hooks": []}])
def test_device_needs_an_edit(edits: dict[str, Any]) -> None:
    _assert_error(with_device_edits(edits), "devices[0].containerEdits", "at least one edit")
    data = with_device_edits(edits)
    del data["devices"][0]["containerEdits"]
    _assert_error(data, "devices[0].containerEdits", "at least one edit")


@pytest.mark.parametrize(
    "edits",
    [
        {"env": ["A=1"]},
        {"deviceNodes": [{"path": "/dev/x"}]},
        {"mounts": [{"hostPath": "/a", "containerPath": "/b"}]},
        {"hooks": [{"hookName": "poststop", "path": "/bin/true"}]},
        {"intelRdt": {}},
        {"additionalGids": [0]},
        {"netDevices": [{"hostInterfaceName": "eth1", "name": "eth0"}]},
    ],
)
def test_any_single_edit_is_enough(edits: dict[str, Any]) -> None:
    cdi.spec_from_dict(with_device_edits(edits))


def test_spec_level_edits_may_be_empty() -> None:
    cdi.spec_from_dict(spec_dict(containerEdits={}))


def test_spec_level_edits_are_validated() -> None:
    _assert_error(spec_dict(containerEdits={"env": ["=x"]}), "containerEdits.env[0]", "KEY=VALUE")


# --- env -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["A=1", "A=", "A==b", "PATH=/x:/y", "a.b-c=d e"])
def test_good_env(entry: str) -> None:
    cdi.spec_from_dict(with_device_edits({"env": ["X=0", entry]}))


@pytest.mark.parametrize("entry", ["A", "=1", "", "A\x00B=1"])
def test_bad_env(entry: str) -> None:
    _assert_error(with_device_edits({"env": ["X=0", entry]}), "devices[0].containerEdits.env[1]", "")


# --- deviceNodes ---------------------------------------------------------------------------------

NODE = "devices[0].containerEdits.deviceNodes[0]"


def _node(**fields: Any) -> dict[str, Any]:
    return with_device_edits({"deviceNodes": [{"path": "/dev/nvidia0", **fields}]})


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"hostPath": "/dev/nvidia1"},
        {"type": "c"},
        {"type": "b"},
        {"type": "u"},
        {"type": "p"},
        {"type": ""},
        {"permissions": "rwm"},
        {"permissions": "r"},
        {"permissions": "mw"},
        {"permissions": ""},
    ],
)
def test_good_device_nodes(fields: dict[str, Any]) -> None:
    cdi.spec_from_dict(_node(**fields))


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"path": ""}, f"{NODE}.path", "must not be empty"),
        ({"path": "dev/nvidia0"}, f"{NODE}.path", "must be an absolute path"),
        ({"hostPath": "nvidia0"}, f"{NODE}.hostPath", "must be an absolute path"),
        ({"type": "x"}, f"{NODE}.type", '"x" is not one of b, c, u, p'),
        ({"permissions": "rwx"}, f"{NODE}.permissions", 'must be a combination of "r", "w" and "m"'),
        ({"permissions": "RW"}, f"{NODE}.permissions", "combination"),
    ],
)
def test_bad_device_nodes(fields: dict[str, Any], field: str, reason: str) -> None:
    _assert_error(_node(**fields), field, reason)


# --- mounts --------------------------------------------------------------------------------------

MOUNT = "devices[0].containerEdits.mounts[0]"


def _mount(**fields: Any) -> dict[str, Any]:
    return with_device_edits({"mounts": [{"hostPath": "/host", "containerPath": "/ctr", **fields}]})


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"options": ["ro", "bind"]},
        {"type": "bind"},
        {"type": "tmpfs", "hostPath": "tmpfs", "options": ["size=1m"]},
    ],
)
def test_good_mounts(fields: dict[str, Any]) -> None:
    cdi.spec_from_dict(_mount(**fields))


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"hostPath": ""}, f"{MOUNT}.hostPath", "must not be empty"),
        ({"hostPath": "host"}, f"{MOUNT}.hostPath", "must be an absolute path"),
        ({"type": "bind", "hostPath": "host"}, f"{MOUNT}.hostPath", "must be an absolute path"),
        ({"type": "none", "hostPath": "host", "options": ["rbind"]}, f"{MOUNT}.hostPath", "absolute"),
        ({"containerPath": ""}, f"{MOUNT}.containerPath", "must not be empty"),
        ({"containerPath": "etc/ld.so.preload"}, f"{MOUNT}.containerPath", "must be an absolute path"),
    ],
)
def test_bad_mounts(fields: dict[str, Any], field: str, reason: str) -> None:
    _assert_error(_mount(**fields), field, reason)


# --- hooks ---------------------------------------------------------------------------------------

HOOK = "devices[0].containerEdits.hooks[0]"


def _hook(**fields: Any) -> dict[str, Any]:
    return with_device_edits({"hooks": [{"hookName": "createContainer", "path": "/usr/bin/hook", **fields}]})


@pytest.mark.parametrize("name", cdi.HOOK_NAMES)
def test_every_hook_name(name: str) -> None:
    cdi.spec_from_dict(_hook(hookName=name, args=["hook"], env=["A=1"], timeout=1))


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"hookName": "prestartish"}, f"{HOOK}.hookName", '"prestartish" is not one of createRuntime'),
        ({"hookName": ""}, f"{HOOK}.hookName", "is not one of"),
        ({"path": "hook"}, f"{HOOK}.path", "must be an absolute path"),
        ({"path": ""}, f"{HOOK}.path", "must not be empty"),
        ({"env": ["NOEQUALS"]}, f"{HOOK}.env[0]", "KEY=VALUE"),
        ({"timeout": 0}, f"{HOOK}.timeout", "must be greater than 0"),
        ({"timeout": -3}, f"{HOOK}.timeout", "must be greater than 0"),
    ],
)
def test_bad_hooks(fields: dict[str, Any], field: str, reason: str) -> None:
    _assert_error(_hook(**fields), field, reason)


# --- intelRdt, netDevices ------------------------------------------------------------------------


@pytest.mark.parametrize("clos", ["grp", "a.b", "x" * 4095])
def test_good_clos_ids(clos: str) -> None:
    cdi.spec_from_dict(with_device_edits({"intelRdt": {"closID": clos}}))


@pytest.mark.parametrize("clos", [".", "..", "a/b", "a\nb", "x" * 4096])
def test_bad_clos_ids(clos: str) -> None:
    edits = {"intelRdt": {"closID": clos}}
    _assert_error(with_device_edits(edits), "devices[0].containerEdits.intelRdt.closID", "resctrl")


NET = "devices[0].containerEdits.netDevices"


@pytest.mark.parametrize(
    ("devices", "field", "reason"),
    [
        ([{"hostInterfaceName": "", "name": "eth0"}], f"{NET}[0].hostInterfaceName", "must not be empty"),
        ([{"hostInterfaceName": "eth1", "name": "a/b"}], f"{NET}[0].name", "not a valid network interface"),
        ([{"hostInterfaceName": "x" * 16, "name": "e"}], f"{NET}[0].hostInterfaceName", "not a valid network"),
        (
            [{"hostInterfaceName": "eth1", "name": "e0"}, {"hostInterfaceName": "eth1", "name": "e1"}],
            f"{NET}[1].hostInterfaceName",
            'duplicate hostInterfaceName "eth1"',
        ),
        (
            [{"hostInterfaceName": "eth1", "name": "e0"}, {"hostInterfaceName": "eth2", "name": "e0"}],
            f"{NET}[1].name",
            'duplicate name "e0"',
        ),
    ],
)
def test_bad_net_devices(devices: list[dict[str, str]], field: str, reason: str) -> None:
    _assert_error(with_device_edits({"netDevices": devices}), field, reason)


# --- annotations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["a", "hami.io/claim", "x.y-z/A_b.c-9", "k" * 63])
def test_good_annotation_keys(key: str) -> None:
    cdi.spec_from_dict(spec_dict(cdiVersion="0.6.0", annotations={key: "v"}))


@pytest.mark.parametrize("key", ["", "/a", "a/", "a/b/c", "UPPER.io/x", "-a", "a b", "k" * 64, "p" * 254 + "/a"])
def test_bad_annotation_keys(key: str) -> None:
    _assert_error(spec_dict(cdiVersion="0.6.0", annotations={key: "v"}), "annotations", f'key "{key}"')


def test_device_annotations_are_checked() -> None:
    devices = [{"name": "g", "annotations": {"bad key": "v"}, "containerEdits": {"env": ["A=1"]}}]
    _assert_error(spec_dict(cdiVersion="0.6.0", devices=devices), "devices[0].annotations", 'key "bad key"')


def test_annotations_total_size() -> None:
    big = {"a": "x" * (256 * 1024)}
    _assert_error(spec_dict(cdiVersion="0.6.0", annotations=big), "annotations", "exceeds")


def test_validate_spec_on_a_model() -> None:
    spec = cdi.Spec(cdi_version="0.3.0", kind=KIND, devices=[cdi.Device(name="x")])
    with pytest.raises(cdi.CDIError, match=r"^devices\[0\].containerEdits: must contain at least one edit$"):
        cdi.validate_spec(spec)
