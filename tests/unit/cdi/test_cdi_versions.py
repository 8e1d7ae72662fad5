"""minimum_version at each threshold, too-low declared versions, and build_spec."""

from typing import Any

import pytest
from cdi_samples import KIND, device, spec_dict, with_device_edits

import cdi

# (edits of the only device, the version they need, the field that forces it)
EDIT_THRESHOLDS = [
    ({"env": ["A=1"]}, "0.3.0", None),
    ({"mounts": [{"hostPath": "/a", "containerPath": "/b"}]}, "0.3.0", None),
    ({"mounts": [{"hostPath": "/a", "containerPath": "/b", "type": "bind"}]}, "0.4.0", "mounts[0].type"),
    ({"deviceNodes": [{"path": "/dev/x"}]}, "0.3.0", None),
    ({"deviceNodes": [{"path": "/dev/x", "hostPath": "/dev/y"}]}, "0.5.0", "deviceNodes[0].hostPath"),
    ({"intelRdt": {"closID": "g"}}, "0.7.0", "intelRdt"),
    ({"intelRdt": {}}, "0.7.0", "intelRdt"),
    ({"additionalGids": [5]}, "0.7.0", "additionalGids"),
    ({"netDevices": [{"hostInterfaceName": "eth1", "name": "e0"}]}, "1.1.0", "netDevices"),
    ({"intelRdt": {"schemata": ["L3:0=f"]}}, "1.1.0", "intelRdt.schemata"),
    ({"intelRdt": {"enableMonitoring": True}}, "1.1.0", "intelRdt.enableMonitoring"),
    ({"intelRdt": {"enableMonitoring": False}}, "0.7.0", "intelRdt"),
]


def _versions_below(version: str) -> list[str]:
    """The known versions from the base up to, not including, ``version``."""
    return list(cdi.VALID_VERSIONS[cdi.VALID_VERSIONS.index(cdi.EARLIEST_VERSION) : cdi.VALID_VERSIONS.index(version)])


@pytest.mark.parametrize(("edits", "needed", "reason"), EDIT_THRESHOLDS)
def test_device_edit_thresholds(edits: dict[str, Any], needed: str, reason: str | None) -> None:
    spec = cdi.spec_from_dict(with_device_edits(edits))
    assert cdi.minimum_version(spec) == needed
    expected = f"devices[0].containerEdits.{reason}" if reason else None
    assert cdi.required_version(spec) == (needed, expected)
    # Declaring exactly the minimum is fine; anything lower names the field that needs more.
    cdi.spec_from_dict(with_device_edits(edits, needed))
    for low in _versions_below(needed):
        with pytest.raises(cdi.CDIError, match=f"needs at least {needed}") as err:
            cdi.spec_from_dict(with_device_edits(edits, low))
        assert err.value.field == "cdiVersion"
        assert f"(because of {expected})" in str(err.value)


@pytest.mark.parametrize(("edits", "needed", "reason"), EDIT_THRESHOLDS)
def test_spec_level_edits_count_too(edits: dict[str, Any], needed: str, reason: str | None) -> None:
    spec = cdi.spec_from_dict(spec_dict(cdiVersion=cdi.CURRENT_VERSION, containerEdits=edits))
    assert cdi.required_version(spec) == (needed, f"containerEdits.{reason}" if reason else None)


@pytest.mark.parametrize(
    ("overrides", "needed", "reason"),
    [
        ({}, "0.3.0", None),
        ({"devices": [{"name": "9gpu", "containerEdits": {"env": ["A=1"]}}]}, "0.5.0", "devices[0].name"),
        ({"annotations": {"a": "b"}}, "0.6.0", "annotations"),
        ({"annotations": {}}, "0.3.0", None),
        (
            {"devices": [{"name": "g", "annotations": {"a": "b"}, "containerEdits": {"env": ["A=1"]}}]},
            "0.6.0",
            "devices[0].annotations",
        ),
        ({"kind": "vendor.com/gpu.shared"}, "0.6.0", "kind"),
        ({"kind": "vendor.com/gpu"}, "0.3.0", None),  # dots in the vendor were always allowed
    ],
)
def test_spec_thresholds(overrides: dict[str, Any], needed: str, reason: str | None) -> None:
    spec = cdi.spec_from_dict(spec_dict(cdiVersion=cdi.CURRENT_VERSION, **overrides))
    assert cdi.required_version(spec) == (needed, reason)
    for low in _versions_below(needed):
        with pytest.raises(cdi.CDIError, match=f'cdiVersion: "{low}" is too low'):
            cdi.spec_from_dict(spec_dict(cdiVersion=low, **overrides))


def test_highest_requirement_wins() -> None:
    edits = {
        "mounts": [{"hostPath": "/a", "containerPath": "/b", "type": "bind"}],
        "additionalGids": [1],
        "deviceNodes": [{"path": "/dev/x", "hostPath": "/dev/x"}],
    }
    spec = cdi.spec_from_dict(with_device_edits(edits))
    assert cdi.minimum_version(spec) == "0.7.0"
    assert list(cdi.version_requirements(spec)) == [
        ("0.4.0", "devices[0].containerEdits.mounts[0].type"),
        ("0.5.0", "devices[0].containerEdits.deviceNodes[0].hostPath"),
        ("0.7.0", "devices[0].containerEdits.additionalGids"),
    ]


def test_build_spec_picks_the_minimum() -> None:
    assert cdi.build_spec(KIND, [device("gpu0")]).cdi_version == "0.3.0"
    assert cdi.build_spec(KIND, [device("0-gpu0")]).cdi_version == "0.5.0"
    assert cdi.build_spec(KIND, [device()], annotations={"a": "b"}).cdi_version == "0.6.0"
    rdt = cdi.build_spec(KIND, [device()], container_edits=cdi.ContainerEdits(intel_rdt=cdi.IntelRdt()))
    assert rdt.cdi_version == "0.7.0"


def test_build_spec_validates() -> None:
    with pytest.raises(cdi.CDIError, match=r"devices\[1\].name: duplicate"):
        cdi.build_spec(KIND, [device("a"), device("a")])
    with pytest.raises(cdi.CDIError, match="kind: "):
        cdi.build_spec("nokind", [device()])


def test_with_minimum_version_lowers_and_copies() -> None:
    spec = cdi.spec_from_dict(spec_dict(cdiVersion="1.1.0"))
    lowered = cdi.with_minimum_version(spec)
    assert (spec.cdi_version, lowered.cdi_version) == ("1.1.0", "0.3.0")
    assert lowered.devices == spec.devices and lowered.devices is not spec.devices


def test_versions_table() -> None:
    assert cdi.CURRENT_VERSION == cdi.VALID_VERSIONS[-1] == "1.1.0"
    assert "0.1.0" in cdi.VALID_VERSIONS and "0.9.0" not in cdi.VALID_VERSIONS
