"""CEL device selectors with the Kubernetes device environment, evaluated by cel-python.

Each expression is compiled once; results are cached per (expression, device, pool generation) because device
attributes cannot change within one generation of a pool. Runtime errors are cached as well: they are as
deterministic as results.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import celpy
import celpy.celtypes as ct
from celpy.evaluation import CELEvalError

from dra_hami.quantity import QuantityError, to_decimal

from .errors import SelectorError
from .model import Device, split_qualified
from .semver import Version


class CelFunctionError(Exception):
    """Raised by our extension functions; deliberately not a ValueError, which cel-python reports as overflow."""


class CelQuantity:
    """Kubernetes' CEL ``Quantity`` type (k8s.io/apiserver library.Quantity)."""

    __slots__ = ("value",)

    def __init__(self, value: Decimal) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CelQuantity) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"quantity({self.value})"


def _quantity(text: Any) -> CelQuantity:
    try:
        return CelQuantity(to_decimal(str(text), "quantity"))
    except QuantityError:
        raise CelFunctionError(f"quantity({str(text)!r}): not a valid quantity") from None


def _semver(text: Any) -> Version:
    try:
        return Version.parse(str(text))
    except ValueError as err:
        raise CelFunctionError(f"semver({str(text)!r}): {err}") from None


def _is_quantity(text: Any) -> ct.BoolType:
    try:
        _quantity(text)
    except CelFunctionError:
        return ct.BoolType(False)
    return ct.BoolType(True)


def _is_semver(text: Any) -> ct.BoolType:
    try:
        Version.parse(str(text))
    except ValueError:
        return ct.BoolType(False)
    return ct.BoolType(True)


def _ordered(a: Any, b: Any) -> int:
    if isinstance(a, CelQuantity) and isinstance(b, CelQuantity):
        return (a.value > b.value) - (a.value < b.value)
    if isinstance(a, Version) and isinstance(b, Version):
        return (a > b) - (a < b)
    raise TypeError(f"no such overload: {type(a).__name__}.compare({type(b).__name__})")


def _as_integer(q: Any) -> ct.IntType:
    if not isinstance(q, CelQuantity):
        raise TypeError("asInteger needs a quantity")
    if q.value != q.value.to_integral_value() or not -(2**63) <= q.value < 2**63:
        raise CelFunctionError("asInteger: value is not an int64")
    return ct.IntType(int(q.value))


def _version_part(index: int) -> Callable[[Any], ct.IntType]:
    def part(v: Any) -> ct.IntType:
        if not isinstance(v, Version):
            raise TypeError("needs a semver")
        return ct.IntType((v.major, v.minor, v.patch)[index])

    return part


def _arith(sign: int) -> Callable[[Any, Any], CelQuantity]:
    def op(q: Any, other: Any) -> CelQuantity:
        if not isinstance(q, CelQuantity):
            raise TypeError("needs a quantity")
        amount = other.value if isinstance(other, CelQuantity) else Decimal(int(other))
        return CelQuantity(q.value + sign * amount)

    return op


FUNCTIONS: dict[str, Any] = {
    "quantity": _quantity,
    "isQuantity": _is_quantity,
    "semver": _semver,
    "isSemver": _is_semver,
    "compareTo": lambda a, b: ct.IntType(_ordered(a, b)),
    "isGreaterThan": lambda a, b: ct.BoolType(_ordered(a, b) > 0),
    "isLessThan": lambda a, b: ct.BoolType(_ordered(a, b) < 0),
    "asInteger": _as_integer,
    "isInteger": lambda q: ct.BoolType(q.value == q.value.to_integral_value()),
    "asApproximateFloat": lambda q: ct.DoubleType(float(q.value)),
    "sign": lambda q: ct.IntType((q.value > 0) - (q.value < 0)),
    "add": _arith(1),
    "sub": _arith(-1),
    "major": _version_part(0),
    "minor": _version_part(1),
    "patch": _version_part(2),
}


class _Domains(ct.MapType):
    """attributes/capacity by domain: an unknown domain is an empty map, as in Kubernetes."""

    def __getitem__(self, key: Any) -> Any:
        try:
            return super().__getitem__(key)
        except KeyError:
            return ct.MapType()


def _cel_value(value: Any) -> Any:
    if isinstance(value, bool):
        return ct.BoolType(value)
    if isinstance(value, int):
        return ct.IntType(value)
    if isinstance(value, str):
        return ct.StringType(value)
    return value  # Version


def device_activation(device: Device) -> dict[str, Any]:
    driver = device.key.driver
    attributes: dict[Any, dict[Any, Any]] = {}
    for name, value in device.attributes.items():
        domain, ident = split_qualified(name, driver)
        attributes.setdefault(ct.StringType(domain), {})[ct.StringType(ident)] = _cel_value(value)
    capacity: dict[Any, dict[Any, Any]] = {}
    for name, cap in device.capacity.items():
        domain, ident = split_qualified(name, driver)
        capacity.setdefault(ct.StringType(domain), {})[ct.StringType(ident)] = CelQuantity(Decimal(cap.value))
    return {
        "device": ct.MapType(
            {
                ct.StringType("driver"): ct.StringType(driver),
                ct.StringType("attributes"): _Domains({k: ct.MapType(v) for k, v in attributes.items()}),
                ct.StringType("capacity"): _Domains({k: ct.MapType(v) for k, v in capacity.items()}),
                ct.StringType("allowMultipleAllocations"): ct.BoolType(device.allow_multiple_allocations),
            }
        )
    }


def _message(err: Exception) -> str:
    if isinstance(err, CELEvalError) and err.args:
        return str(err.args[0])
    return str(err).strip() or type(err).__name__


def _parse_message(err: Exception) -> str:
    # cel-python's parse errors are the expression with a caret under the offending column.
    lines = str(err).rstrip().splitlines()
    if len(lines) == 2 and lines[1].strip() == "^":
        return f"syntax error at column {len(lines[1]) - 1}"
    return " ".join(line.strip() for line in lines) or type(err).__name__


class SelectorCache:
    """Compiled CEL programs and per-device results. Safe to keep across cluster-state rebuilds."""

    def __init__(self) -> None:
        self._env = celpy.Environment()
        self._programs: dict[str, Any] = {}
        self._activations: dict[tuple[Any, int], dict[str, Any]] = {}
        self._results: dict[tuple[str, Any, int], bool | str] = {}
        self.evaluations = 0  # how many real CEL evaluations ran (for tests and benchmarks)

    def compile(self, expression: str, where: str) -> Any:
        """The program for ``expression``; ``where`` names object and field (``DeviceClass gpu: spec.selectors[0]``)."""
        program = self._programs.get(expression)
        if program is None:
            try:
                program = self._env.program(self._env.compile(expression), functions=FUNCTIONS)
            except Exception as err:  # cel-python raises its parser's and lark's own exception types
                raise SelectorError(f"{where}: compile error: {_parse_message(err)} in {expression!r}") from None
            self._programs[expression] = program
        return program

    def matches(self, expression: str, device: Device, where: str) -> bool:
        """Whether the device satisfies the selector; a runtime error raises SelectorError naming device and field."""
        cache_key = (expression, device.key, device.generation)
        result = self._results.get(cache_key)
        if result is None:
            result = self._evaluate(expression, device, where)
            self._results[cache_key] = result
        if isinstance(result, str):
            raise SelectorError(f"{where}: device {device.name} (pool {device.key.pool}): {result}")
        return result

    def _evaluate(self, expression: str, device: Device, where: str) -> bool | str:
        program = self.compile(expression, where)
        activation_key = (device.key, device.generation)
        activation = self._activations.get(activation_key)
        if activation is None:
            activation = self._activations[activation_key] = device_activation(device)
        self.evaluations += 1
        try:
            value = program.evaluate(activation)
        except CELEvalError as err:
            return _message(err)
        except Exception as err:  # an extension function raised something cel-python did not wrap
            return _message(err)
        if isinstance(value, CELEvalError):
            return _message(value)
        if not isinstance(value, ct.BoolType | bool):
            return f"expression must evaluate to bool, got {type(value).__name__}"
        return bool(value)
