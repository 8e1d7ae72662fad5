"""Quantities: Kubernetes' grammar, exact values, and the bounds that keep a hostile value from stalling a
component (issue 18 item 8: ``1e1000000`` used to take seconds per parse). The consumers (allocator, plugin,
GpuQuota) name the field in the refusal."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "webhook"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "allocator"))
from allocator_factories import claim, request
from webhook_fixtures import quota

from dra_hami.allocator import ParseError, parse_claim
from dra_hami.quantity import MAX_QUANTITY, QuantityError, ceil_int, ceil_milli, parse, to_decimal, to_int
from dra_hami.quota.model import QuotaError, parse_gpu_quota

# 10e999999: what a 1.36 API server stores for a claim that asked for 1e1000000 (tests/e2e/test_refused_writes.py).
HOSTILE = ["1e1000000", "10e999999", "1E999999999999", "9" * 30 + "e90", "0.1e-1000000", "8Ei", "9223372036854775808"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4Gi", 4 << 30),
        ("1.5Gi", 3 << 29),
        ("0.1Ki", Fraction(1024, 10)),
        ("100m", Fraction(1, 10)),
        ("1n", Fraction(1, 10**9)),
        ("2k", 2000),
        ("1E", 10**18),  # exa, not an exponent
        ("1E3", 1000),
        ("1.5e3", 1500),
        ("+5", 5),
        ("-5", -5),
        (".5", Fraction(1, 2)),
        ("5.", 5),
        ("7Ei", 7 << 60),
        ("9223372036854775807", MAX_QUANTITY),
        ("0e100", 0),
    ],
)
def test_grammar_and_exact_values(text: str, value: Fraction | int) -> None:
    assert parse(text, "f") == value


@pytest.mark.parametrize("text", ["4Gx", "1K", "", ".", "1_000", "inf", "nan", " 1", "1e", "0x10", "1ki", "--1"])
def test_what_kubernetes_refuses_is_refused(text: str) -> None:
    with pytest.raises(QuantityError, match=r"^spec\.x: .* is not a Kubernetes quantity; use a number"):
        parse(text, "spec.x")


@pytest.mark.parametrize("text", HOSTILE)
def test_huge_values_are_refused_naming_the_field(text: str) -> None:
    with pytest.raises(QuantityError, match=r"^spec\.hard\.memory: .*(exponent|2\^63-1)"):
        to_int(text, "spec.hard.memory")


def test_numbers_and_length_are_bounded() -> None:
    assert to_int(MAX_QUANTITY, "n") == MAX_QUANTITY
    for bad in (MAX_QUANTITY + 1, -(MAX_QUANTITY + 1), float("inf"), 1e30):
        with pytest.raises(QuantityError, match="2\\^63-1"):
            parse(bad, "n")
    with pytest.raises(QuantityError, match="101 characters long; a quantity has at most 100"):
        parse("1" * 101, "n")
    with pytest.raises(QuantityError, match="is not a Kubernetes quantity"):
        parse(True, "n")


def test_rounding_is_exact_beyond_28_digits() -> None:
    # A 28-digit Decimal context would round these; the exact value keeps every digit.
    text = "922337203685477580.6999999999999999999999"
    assert to_decimal(text, "n") == Decimal(text)
    assert ceil_int(text, "n") == 922337203685477581
    assert ceil_milli("9223372036854775.8071", "n") == 9223372036854775808
    assert ceil_int("1n", "n") == 1 and ceil_milli("1n", "n") == 1
    assert to_decimal("0.1Ki", "n") == Decimal("102.4")
    with pytest.raises(QuantityError, match="not a whole number"):
        to_int("1.5", "n")


def test_the_allocator_names_the_claim_field() -> None:
    bad = claim("c1", request(memory="1e1000000"))
    with pytest.raises(ParseError, match=r"ResourceClaim default/c1: .*capacity\.requests\[memory\]: .*exponent"):
        parse_claim(bad)


def test_a_gpu_quota_with_a_huge_limit_names_the_field() -> None:
    with pytest.raises(QuotaError, match=r"GpuQuota ns/budget: spec\.hard\.memory: .*exponent 1000000"):
        parse_gpu_quota(quota(memory="1e1000000"))


def test_importing_the_allocator_does_not_import_the_kubernetes_client() -> None:
    # The allocator is the simulation's and the controller's pure core; the client costs ~1 s to import.
    code = "import sys, dra_hami.allocator; print(sorted(m for m in sys.modules if m.startswith('kubernetes')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
