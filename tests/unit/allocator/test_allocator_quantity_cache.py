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


def test_the_memo_is_bounded() -> None:
    memo = parsing._ceil_int_text
    memo.cache_clear()
    limit = memo.cache_info().maxsize
    assert limit == 4096
    for i in range(limit + 10):
        assert parsing.quantity(f"{i}Ki", "Claim a", "x") == i * 1024
        assert memo.cache_info().currsize <= limit


def test_errors_are_never_remembered() -> None:
    memo = parsing._ceil_int_text
    memo.cache_clear()
    with pytest.raises(ParseError):
        parsing.quantity("8Gx", "Claim a", "x")
    assert memo.cache_info().currsize == 0
