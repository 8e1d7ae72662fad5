"""The parsed-quantity memo: same answers as the parser, errors never remembered, bounded."""

from __future__ import annotations

import pytest

from dra_hami.allocator import parsing
from dra_hami.allocator.errors import ParseError


def test_remembered_values_equal_fresh_parses_and_errors_name_each_field() -> None:
    assert parsing.quantity("8Gi", "Claim a", "x") == 8 << 30 == parsing.quantity("8Gi", "Claim b", "y")
    assert parsing.milli_quantity("100m", "Pod p", "cpu") == 100 == parsing.milli_quantity("100m", "Pod q", "cpu")
    assert parsing.quantity(5, "Claim a", "x") == 5
    for label in ("Claim a", "Claim b"):
        with pytest.raises(ParseError, match=f"{label}: spec.x"):
            parsing.quantity("8Gx", label, "spec.x")


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parsing, "_CACHE_LIMIT", 3)
    monkeypatch.setattr(parsing, "_quantities", {})
    for i in range(10):
        assert parsing.quantity(f"{i}Ki", "Claim a", "x") == i * 1024
        assert len(parsing._quantities) <= 3
