"""Kubernetes resource quantities as exact numbers, parsed with bounds a hostile input cannot stretch.

The grammar is Kubernetes' (k8s.io/apimachinery resource.Quantity):
``[+-]digits[.digits](Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|e<int>|E<int>)``. Values are exact (no float or
28-digit Decimal rounding) and bounded: at most ``MAX_LENGTH`` characters, a decimal exponent within
``MAX_EXPONENT``, and a magnitude of at most ``MAX_QUANTITY`` (2^63-1, the largest value the API server
stores; it clamps larger ones to it). An unbounded exponent made ``1e1000000`` cost seconds of CPU per
parse in the old parser (the integer it produced had a million digits); here it is refused at once.
Pure and import-light: no Kubernetes client.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

MAX_QUANTITY = (1 << 63) - 1
MAX_LENGTH = 100  # the canonical form of any storable value is far shorter (2^63-1 has 19 digits)
MAX_EXPONENT = 100  # |decimal exponent| of the e-notation; with MAX_LENGTH digits this keeps numbers small

_BINARY = (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10))
_SUFFIX_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}  # power of 2
_SUFFIX_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_GRAMMAR = re.compile(
    r"(?P<sign>[+-]?)(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?"
)
_SUFFIX_HINT = "a number with an optional suffix (Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E or e<exponent>)"


class QuantityError(ValueError):
    pass


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse(value: str | int | float, what: str) -> Fraction:
    """The exact value of a quantity; ``what`` names the field in the error."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise QuantityError(f"{what}: {_shown(value)} is not a Kubernetes quantity; use {_SUFFIX_HINT}")
    if isinstance(value, int):
        exact = Fraction(value) if abs(value) <= MAX_QUANTITY else None
    elif isinstance(value, float):
        exact = Fraction(value) if math.isfinite(value) and abs(value) <= MAX_QUANTITY else None
    else:
        exact = _parse_text(value, what)
    if exact is None or abs(exact) > MAX_QUANTITY:
        raise QuantityError(f"{what}: {_shown(value)} is larger than {MAX_QUANTITY} (2^63-1), the largest quantity "
                            "Kubernetes stores; request a smaller amount")  # fmt: skip
    return exact


def _parse_text(text: str, what: str) -> Fraction | None:
    if len(text) > MAX_LENGTH:
        raise QuantityError(f"{what}: {_shown(text)} is {len(text)} characters long; a quantity has at most "
                            f"{MAX_LENGTH}")  # fmt: skip
    match = _GRAMMAR.fullmatch(text)
    if match is None or not (match["int"] or match["frac"]):
        raise QuantityError(f"{what}: {_shown(text)} is not a Kubernetes quantity; use {_SUFFIX_HINT}")
    digits = (match["int"] or "") + (match["frac"] or "")
    exp10, exp2 = -len(match["frac"] or ""), 0
    suffix = match["suffix"] or ""
    if suffix in _SUFFIX_BINARY:
        exp2 = _SUFFIX_BINARY[suffix]
    elif suffix in _SUFFIX_DECIMAL:
        exp10 += _SUFFIX_DECIMAL[suffix]
    else:  # e-notation; the exponent's digits are bounded by MAX_LENGTH, so int() is cheap
        exponent = int(suffix[1:])
        if abs(exponent) > MAX_EXPONENT:
            raise QuantityError(f"{what}: {_shown(text)} has exponent {exponent}; quantities allow at most "
                                f"\u00b1{MAX_EXPONENT}")  # fmt: skip
        exp10 += exponent
    mantissa = int(digits) << exp2
    if mantissa and exp10 > 0 and len(str(mantissa)) + exp10 > 19:  # > 10^19 > MAX_QUANTITY, skip the pow
        return None
    exact = Fraction(mantissa) * Fraction(10) ** exp10
    return -exact if match["sign"] == "-" else exact


def to_int(value: str | int, what: str) -> int:
    """Parse a quantity that must be a whole number (bytes, cores, shares); ``what`` names the field."""
    exact = parse(value, what)
    if exact.denominator != 1:
        raise QuantityError(f"{what}: {_shown(value)} is not a whole number")
    return int(exact)


def ceil_int(value: str | int | float, what: str) -> int:
    """Rounded up to a whole number, like Quantity.Value()."""
    return math.ceil(parse(value, what))


def ceil_milli(value: str | int | float, what: str) -> int:
    """In thousandths, rounded up, like Quantity.MilliValue()."""
    return math.ceil(parse(value, what) * 1000)


def to_decimal(value: str | int, what: str) -> Decimal:
    """The exact value as a Decimal (every quantity is a terminating decimal: 2^k * 10^e)."""
    exact = parse(value, what)
    scale = 0
    while exact.denominator != 1:  # the denominator divides 10^(MAX_EXPONENT+MAX_LENGTH): few steps
        exact *= 10
        scale += 1
    numerator = int(exact)
    digits = tuple(int(d) for d in str(abs(numerator)))
    return Decimal((1 if numerator < 0 else 0, digits, -scale))


def format_bytes(value: int) -> str:
    """Shortest exact binary form, e.g. 4294967296 -> '4Gi', 1500 MiB -> '1500Mi'."""
    for suffix, unit in _BINARY:
        if value and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)
