"""The pydantic models: camelCase JSON, snake_case attributes, minimal output, no unknown keys."""

import json

import pytest
from cdi_samples import KIND, spec_dict

import cdi

FULL = {
    "cdiVersion": "1.1.0",
    "kind": KIND,
    "annotations": {"hami.io/claim": "c1"},
    "devices": [
        {
            "name": "gpu0",
            "annotations": {"note": "x"},
            "containerEdits": {
                "env": ["A=1"],
                "deviceNodes": [
                    {
                        "path": "/dev/nvidia0",
                        "hostPath": "/dev/nvidia0",
                        "type": "c",
                        "major": 195,
                        "minor": 0,
                        "fileMode": 0o666,
                        "permissions": "rw",
                        "uid": 0,
                        "gid": 0,
                    }
                ],
                "mounts": [{"hostPath": "/a", "containerPath": "/b", "type": "bind", "options": ["ro"]}],
                "hooks": [
                    {
                        "hookName": "createContainer",
                        "path": "/bin/hook",
                        "args": ["hook", "x"],
                        "env": ["B=2"],
                        "timeout": 5,
                    }
                ],
                "intelRdt": {
                    "closID": "grp",
                    "l3CacheSchema": "L3:0=f",
                    "memBwSchema": "MB:0=50",
                    "schemata": ["L3:0=f"],
                    "enableMonitoring": True,
                },
                "additionalGids": [44],
                "netDevices": [{"hostInterfaceName": "eth1", "name": "net0"}],
            },
        }
    ],
    "containerEdits": {"env": ["C=3"]},
}


def test_round_trip_keeps_every_field_and_key_order() -> None:
    spec = cdi.spec_from_dict(FULL)
    assert cdi.spec_to_dict(spec) == FULL
    text = cdi.spec_to_json(spec)
    assert json.loads(text) == FULL
    assert list(json.loads(text)) == list(FULL)  # stable order: cdiVersion, kind, ...
    assert cdi.parse_spec(text) == spec
    assert cdi.spec_to_json(cdi.parse_spec(text)) == text


def test_attributes_are_snake_case() -> None:
    spec = cdi.spec_from_dict(FULL)
    edits = spec.devices[0].container_edits
    assert spec.cdi_version == "1.1.0"
    assert edits.device_nodes[0].host_path == "/dev/nvidia0"
    assert edits.device_nodes[0].file_mode == 0o666
    assert edits.hooks[0].hook_name == "createContainer"
    assert edits.intel_rdt is not None and edits.intel_rdt.clos_id == "grp"
    assert edits.additional_gids == [44]
    assert edits.net_devices[0].host_interface_name == "eth1"


def test_construct_by_name_or_alias() -> None:
    by_name = cdi.Mount(host_path="/a", container_path="/b")
    by_alias = cdi.Mount.model_validate({"hostPath": "/a", "containerPath": "/b"})
    assert by_name == by_alias


def test_output_is_minimal() -> None:
    spec = cdi.Spec(
        cdi_version="0.3.0",
        kind=KIND,
        devices=[
            cdi.Device(
                name="gpu0",
                container_edits=cdi.ContainerEdits(
                    env=["A=1"], mounts=[cdi.Mount(host_path="/a", container_path="/b", options=[])]
                ),
            )
        ],
        container_edits=cdi.ContainerEdits(),
    )
    assert cdi.spec_to_dict(spec) == {
        "cdiVersion": "0.3.0",
        "kind": KIND,
        "devices": [
            {"name": "gpu0", "containerEdits": {"env": ["A=1"], "mounts": [{"hostPath": "/a", "containerPath": "/b"}]}}
        ],
    }


def test_zero_ids_are_kept() -> None:
    # uid/gid 0 (root) is a real value, unlike an unset field.
    node = cdi.DeviceNode(path="/dev/x", uid=0, gid=0)
    assert node.model_dump() == {"path": "/dev/x", "uid": 0, "gid": 0}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (spec_dict(extra=1), "extra"),
        (
            spec_dict(devices=[{"name": "gpu0", "containerEdits": {"env": ["A=1"], "envs": []}}]),
            "devices[0].containerEdits.envs",
        ),
        (
            spec_dict(devices=[{"name": "gpu0", "containerEdits": {"deviceNodes": [{"path": "/dev/x", "mode": 1}]}}]),
            "devices[0].containerEdits.deviceNodes[0].mode",
        ),
        # Dropped in CDI 1.1.0 and unknown to specs-go's current structs.
        (
            spec_dict(cdiVersion="0.7.0", devices=[{"name": "g", "containerEdits": {"intelRdt": {"enableCMT": True}}}]),
            "devices[0].containerEdits.intelRdt.enableCMT",
        ),
    ],
)
def test_unknown_fields_are_rejected(data: dict, field: str) -> None:
    with pytest.raises(cdi.CDIError) as err:
        cdi.spec_from_dict(data)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (spec_dict(cdiVersion=3), "cdiVersion"),
        (spec_dict(kind=None), "kind"),
        (spec_dict(devices=[{"containerEdits": {"env": ["A=1"]}}]), "devices[0].name"),
        (spec_dict(devices=[{"name": "g", "containerEdits": {"env": "A=1"}}]), "devices[0].containerEdits.env"),
        (
            spec_dict(devices=[{"name": "g", "containerEdits": {"deviceNodes": [{"path": "/d", "uid": "5"}]}}]),
            "devices[0].containerEdits.deviceNodes[0].uid",
        ),
        (
            spec_dict(devices=[{"name": "g", "containerEdits": {"deviceNodes": [{"path": "/d", "gid": -1}]}}]),
            "devices[0].containerEdits.deviceNodes[0].gid",
        ),
        (
            spec_dict(devices=[{"name": "g", "containerEdits": {"deviceNodes": [{"path": "/d", "uid": 2**32}]}}]),
            "devices[0].containerEdits.deviceNodes[0].uid",
        ),
        (
            spec_dict(cdiVersion="0.7.0", devices=[{"name": "g", "containerEdits": {"additionalGids": [-5]}}]),
            "devices[0].containerEdits.additionalGids[0]",
        ),
        (
            spec_dict(devices=[{"name": "g", "containerEdits": {"mounts": [{"hostPath": "/a"}]}}]),
            "devices[0].containerEdits.mounts[0].containerPath",
        ),
    ],
)
def test_wrong_types_and_missing_keys(data: dict, field: str) -> None:
    with pytest.raises(cdi.CDIError) as err:
        cdi.spec_from_dict(data)
    assert err.value.field == field


def test_not_an_object() -> None:
    with pytest.raises(cdi.CDIError, match="spec: must be a JSON object"):
        cdi.spec_from_dict(["x"])  # type: ignore[arg-type]
    with pytest.raises(cdi.CDIError, match="not valid JSON"):
        cdi.parse_spec("{")


def test_yaml_text() -> None:
    text = "cdiVersion: 0.3.0\nkind: vendor.com/gpu\ndevices:\n- name: g\n  containerEdits:\n    env: [A=1]\n"
    assert cdi.parse_spec(text, yaml_format=True).devices[0].container_edits.env == ["A=1"]


def test_error_is_a_value_error() -> None:
    assert issubclass(cdi.CDIError, ValueError)
    err = cdi.CDIError("bad", "devices[0].name")
    assert (str(err), err.field, err.reason) == ("devices[0].name: bad", "devices[0].name", "bad")
