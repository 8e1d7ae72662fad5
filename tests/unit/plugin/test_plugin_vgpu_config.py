import pytest

from dra_hami.api.vgpu_config import ConfigError, parse_vgpu_config

BASE = {"apiVersion": "gpu.hami.io/v1alpha1", "kind": "VGpuConfig"}


def test_env_of_every_field():
    config = parse_vgpu_config(
        {**BASE, "coreLimitPolicy": "disable", "priority": "low", "oomPolicy": "error", "logLevel": "warn"}, "p"
    )
    assert config.env() == [
        "GPU_CORE_UTILIZATION_POLICY=disable",
        "CUDA_TASK_PRIORITY=1",
        "VGPU_OOM_POLICY=error",
        "LIBCUDA_LOG_LEVEL=2",
    ]


def test_empty_config_sets_nothing():
    assert parse_vgpu_config(dict(BASE), "p").env() == []


def test_merge_later_wins_and_keeps_unset():
    base = parse_vgpu_config({**BASE, "priority": "low", "logLevel": "info"}, "p")
    top = parse_vgpu_config({**BASE, "priority": "high"}, "p")
    merged = top.merged_over(base)
    assert merged.env() == ["CUDA_TASK_PRIORITY=0", "LIBCUDA_LOG_LEVEL=3"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({**BASE, "priority": 0}, r"p\.priority: got 0, expected 'high' or 'low'"),
        ({**BASE, "memory": "4Gi"}, r"p\.memory: unknown field; VGpuConfig knows apiVersion, kind, coreLimitPolicy"),
        ({"kind": "VGpuConfig"}, r"p\.apiVersion: required"),
        ({**BASE, "kind": "GpuConfig"}, r"p\.kind: got 'GpuConfig', expected 'VGpuConfig'"),
        ("coreLimitPolicy: force", r"p: must be a JSON object"),
    ],
)
def test_errors_name_the_field(params, message):
    with pytest.raises(ConfigError, match=message):
        parse_vgpu_config(params, "p")
