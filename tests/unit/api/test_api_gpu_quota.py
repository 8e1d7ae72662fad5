"""The GpuQuota model agrees with the CRD the cluster validates against, and reads every shape the API can hold."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dra_hami.api.gpu_quota import GpuAmounts, QuotaError, parse_spec, parse_status

ROOT = Path(__file__).resolve().parents[3]


def _crd_schema() -> dict:
    crd = yaml.safe_load((ROOT / "crds" / "gpuquota.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]


def test_the_model_has_the_crds_fields():
    schema = _crd_schema()
    hard = schema["spec"]["properties"]["hard"]["properties"]
    used = schema["status"]["properties"]["used"]["properties"]
    assert set(hard) == set(used) == set(GpuAmounts.model_fields)
    assert "chargedAt" in schema["status"]["properties"]


def test_quantities_and_counts_are_read():
    spec = parse_spec({"hard": {"memory": "16Gi", "cores": 150, "unknown": 1}}, "GpuQuota ns/q")
    assert spec.hard == GpuAmounts(memory=16 << 30, cores=150, gpus=None)
    status = parse_status({"used": {"memory": 1024, "gpus": 2}, "chargedAt": "2026-01-02T03:04:05Z"}, "q")
    assert status.used == GpuAmounts(memory=1024, cores=None, gpus=2)
    assert status.charged_at == "2026-01-02T03:04:05Z"


def test_absent_parts_mean_no_limit_and_nothing_used():
    assert parse_spec(None, "q").hard == GpuAmounts()
    assert parse_status(None, "q").used is None
    assert parse_status({"used": "garbage", "chargedAt": 5}, "q") == parse_status({}, "q")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("not an object", r"^q: spec.hard must be an object"),
        ({"hard": ["memory"]}, r"^q: spec.hard must be an object"),
        ({"hard": {"gpus": True}}, r"^q: spec.hard.gpus: True is not an integer$"),
        ({"hard": {"memory": "1.5"}}, r"^q: spec.hard.memory: '1.5' is not a whole number \(use a quantity"),
    ],
)
def test_bad_specs_name_the_object_and_field(spec, message):
    with pytest.raises(QuotaError, match=message):
        parse_spec(spec, "q")


def test_a_bad_used_names_status_used():
    with pytest.raises(QuotaError, match=r"^q: status.used.cores: -1 must not be negative$"):
        parse_status({"used": {"cores": -1}}, "q")
