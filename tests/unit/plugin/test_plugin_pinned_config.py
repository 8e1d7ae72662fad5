"""Admin-pinned DeviceClass config (issue 18 item 2): a claim's VGpuConfig cannot change a field the class pins,
so ``coreLimitPolicy: disable`` in a claim no longer removes the compute cap the admin set."""

import pytest
from plugin_factories import DRIVER, NODE, claim, result, vgpu_config

from dra_hami.api.vgpu_config import CoreLimitPolicy, Priority, parse_vgpu_config
from dra_hami.plugin.claim import ClaimError, read_allocation


def read(obj, devices):
    return read_allocation(obj, obj["metadata"]["uid"], DRIVER, NODE, devices)


def test_unpinned_class_config_is_overridden_by_the_claim_as_before(devices):
    configs = [vgpu_config(source="FromClass", coreLimitPolicy="default"), vgpu_config(coreLimitPolicy="disable")]
    assert read(claim([result()], config=configs), devices).configs["gpu"].core_limit_policy is CoreLimitPolicy.DISABLE


def test_a_pinned_field_keeps_the_class_value_and_other_fields_still_merge(devices):
    configs = [
        vgpu_config(source="FromClass", coreLimitPolicy="force", pinned=["coreLimitPolicy"]),
        vgpu_config(coreLimitPolicy="disable", priority="high"),
    ]
    config = read(claim([result()], config=configs), devices).configs["gpu"]
    assert config.core_limit_policy is CoreLimitPolicy.FORCE and config.priority is Priority.HIGH
    assert "GPU_CORE_UTILIZATION_POLICY=force" in config.env()


def test_pinning_a_field_without_a_value_keeps_libvgpus_default(devices):
    configs = [vgpu_config(source="FromClass", pinned=["coreLimitPolicy"]), vgpu_config(coreLimitPolicy="disable")]
    config = read(claim([result()], config=configs), devices).configs["gpu"]
    assert config.core_limit_policy is None and config.env() == []


def test_a_claim_cannot_pin(devices):
    configs = [vgpu_config(coreLimitPolicy="disable", pinned=["coreLimitPolicy"])]
    with pytest.raises(ClaimError, match=r"config\[0\]\.opaque\.parameters\.pinned: only a DeviceClass"):
        read(claim([result()], config=configs), devices)


def test_overrides_of_names_the_changed_pinned_fields():
    def cfg(**fields):
        return parse_vgpu_config({"apiVersion": "gpu.hami.io/v1alpha1", "kind": "VGpuConfig", **fields}, "p")

    admin = cfg(coreLimitPolicy="default", priority="low", pinned=["coreLimitPolicy", "priority"])
    assert cfg(coreLimitPolicy="disable", priority="low").overrides_of(admin) == ["coreLimitPolicy"]
    assert cfg(oomPolicy="kill").overrides_of(admin) == []
    assert cfg(logLevel="debug").overrides_of(cfg(pinned=["logLevel"])) == ["logLevel"]


def test_unknown_pinned_field_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"p\.pinned\.0: got 'memory', expected 'coreLimitPolicy'"):
        parse_vgpu_config({"apiVersion": "gpu.hami.io/v1alpha1", "kind": "VGpuConfig", "pinned": ["memory"]}, "p")
