"""Trace files: Alibaba openb CSVs and our own YAML format, validated row by row (pure: text in, records out).

Every problem is a ``TraceError`` naming the file, the line and the column (CSV) or field (YAML).

CSV (the Alibaba ``cluster-trace-gpu-v2023`` layout; extra columns such as qos or times are ignored):

* nodes: ``sn,cpu_milli,memory_mib,gpu,model`` and, optionally, ``gpu_memory_mib`` (overrides the model table).
* pods: ``name,cpu_milli,memory_mib,num_gpu,gpu_milli`` and, optionally, ``gpu_spec`` (``V100M16|V100M32``).

YAML (``.yaml`` / ``.yml``): a mapping with a ``nodes`` and/or a ``pods`` list whose items carry the same keys
as the CSV columns (``name`` may stand for ``sn``). ``--nodes`` reads ``nodes`` and ``--pods`` reads ``pods``,
so one file may hold both::

    nodes:
      - {name: n1, cpu_milli: 96000, memory_mib: 393216, gpu: 8, model: G2}
      - {name: n2, cpu_milli: 8000, memory_mib: 32768, gpu: 1, model: X1, gpu_memory_mib: 20000}
    pods:
      - {name: p1, cpu_milli: 4000, memory_mib: 8192, num_gpu: 1, gpu_milli: 500}
      - {name: p2, cpu_milli: 8000, memory_mib: 16384, num_gpu: 2, gpu_milli: 1000, gpu_spec: G2|V100M32}
      - {name: p3, cpu_milli: 2000, memory_mib: 4096}   # CPU-only: num_gpu and gpu_milli default to 0
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MILLI_PER_GPU = 1000

# GPU memory per trace model, in MiB. The trace gives none; what matters to the protocol is only that a pod's
# gpu_milli maps onto the same fraction of memory, so every value is a multiple of 1000 MiB: 1 GPU-milli is then
# exactly (memory / 1000) MiB and no rounding can admit or refuse what the milli accounting would not.
# P100, T4, V100M16: 16 GB cards (T4 reports 15 GiB usable); V100M32: 32 GB; A10: 24 GB. G2 and G3 are Alibaba's
# undisclosed internal types: assumed 32 GB and 80 GB (the allocation ratio does not depend on the value).
GPU_MEMORY_MIB = {
    "P100": 16_000,
    "T4": 15_000,
    "V100M16": 16_000,
    "V100M32": 32_000,
    "A10": 24_000,
    "G2": 32_000,
    "G3": 80_000,
}

_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,200}[a-z0-9])?$")
_MODEL = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_. ]{0,63}$")


class TraceError(ValueError):
    """A trace file cannot be used; the message names the file, line and column."""


@dataclass(frozen=True, slots=True)
class TraceNode:
    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int
    model: str  # "" when the node has no GPU
    gpu_memory_mib: int  # per GPU; 0 when the node has no GPU


@dataclass(frozen=True, slots=True)
class TracePod:
    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int  # per GPU: 1..1000 for one GPU, 1000 for several, 0 for none
    gpu_spec: tuple[str, ...] = ()  # accepted GPU models; empty: any

    @property
    def total_gpu_milli(self) -> int:
        return self.num_gpu * self.gpu_milli


NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")


class _Row:
    """One CSV row or YAML item, and how to name its fields in errors."""

    def __init__(self, path: str, line: int, values: dict[str, Any], columns: dict[str, int] | None) -> None:
        self.path, self.line, self.values, self.columns = path, line, values, columns

    def where(self, field: str) -> str:
        if self.columns is None:
            return f"{self.path}:{self.line}: field {field!r}"
        return f"{self.path}:{self.line}: column {self.columns.get(field, 0)} ({field})"

    def error(self, field: str, message: str) -> TraceError:
        return TraceError(f"{self.where(field)}: {message}")

    def has(self, field: str) -> bool:
        value = self.values.get(field)
        return value is not None and str(value).strip() != ""

    def text(self, field: str, default: str | None = None) -> str:
        if not self.has(field):
            if default is not None:
                return default
            raise self.error(field, "is empty")
        return str(self.values[field]).strip()

    def integer(self, field: str, default: int | None = None, low: int = 0, high: int | None = None) -> int:
        if not self.has(field):
            if default is not None:
                return default
            raise self.error(field, "is empty")
        raw = self.values[field]
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise self.error(field, f"{raw!r} is not an integer")
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise self.error(field, f"{str(raw).strip()!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise self.error(field, f"{value} is out of range (must be {bound})")
        return value


# ------------------------------------------------------------------------------------------------ reading


def _csv_rows(path: str, text: str, required: tuple[str, ...]) -> Iterator[_Row]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise TraceError(f"{path}:1: empty file; expected a header with {','.join(required)}") from None
    header = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise TraceError(f"{path}:1: missing column(s) {', '.join(missing)}; expected {','.join(required)}")
    columns = {name: i + 1 for i, name in enumerate(header)}
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < len(required):
            raise TraceError(f"{path}:{line}: {len(row)} column(s), the header has {len(header)}")
        values = {name: row[i] if i < len(row) else "" for i, name in enumerate(header)}
        yield _Row(path, line, values, columns)


class _LineLoader(yaml.SafeLoader):
    """Records the line of every mapping, for error messages."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Hashable, Any]:
    value = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
    value["__line__"] = node.start_mark.line + 1
    return value


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_rows(path: str, text: str, key: str) -> Iterator[_Row]:
    try:
        doc = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise TraceError(f"{path}:{line}: not valid YAML: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(doc, dict) or key not in doc:
        raise TraceError(f"{path}:1: expected a mapping with a {key!r} list")
    items = doc[key]
    if not isinstance(items, list):
        raise TraceError(f"{path}:{doc.get('__line__', 1)}: field {key!r}: expected a list")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise TraceError(f"{path}: {key}[{i}]: expected a mapping, got {item!r}")
        line = item.pop("__line__", 1)
        yield _Row(path, line, item, None)


def _rows(path: Path | str, required: tuple[str, ...], yaml_key: str, text: str | None) -> Iterator[_Row]:
    name = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise TraceError(f"{name}: cannot read: {err.strerror or err}") from None
        except UnicodeDecodeError as err:
            raise TraceError(f"{name}: not UTF-8 text ({err.reason})") from None
    if name.endswith((".yaml", ".yml")):
        yield from _yaml_rows(name, text, yaml_key)
    else:
        yield from _csv_rows(name, text, required)


def load_nodes(path: Path | str, text: str | None = None) -> list[TraceNode]:
    """Nodes of a CSV or YAML trace (``text`` instead of reading ``path``, for tests)."""
    nodes: list[TraceNode] = []
    seen: dict[str, int] = {}
    for row in _rows(path, NODE_COLUMNS, "nodes", text):
        field = "sn" if row.columns is not None or "sn" in row.values else "name"
        name = row.text(field)
        if not _NODE_NAME.match(name):
            raise row.error(field, f"{name!r} is not a valid node name (lowercase DNS subdomain)")
        if name in seen:
            raise row.error(field, f"node {name!r} is listed twice (first on line {seen[name]})")
        seen[name] = row.line
        gpus = row.integer("gpu", default=0, high=64)
        model = row.text("model", default="")
        memory = 0
        if gpus:
            if not model:
                raise row.error("model", f"is empty but the node has {gpus} GPU(s)")
            if not _MODEL.match(model):
                raise row.error("model", f"{model!r} is not a GPU model name")
            if row.has("gpu_memory_mib"):
                memory = row.integer("gpu_memory_mib", low=2)
            elif model in GPU_MEMORY_MIB:
                memory = GPU_MEMORY_MIB[model]
            else:
                known = ", ".join(sorted(GPU_MEMORY_MIB))
                raise row.error("model", f"unknown GPU model {model!r}: give gpu_memory_mib, or use one of {known}")
        nodes.append(
            TraceNode(
                name=name,
                cpu_milli=row.integer("cpu_milli", low=1),
                memory_mib=row.integer("memory_mib", low=1),
                gpus=gpus,
                model=model if gpus else "",
                gpu_memory_mib=memory,
            )
        )
    if not nodes:
        raise TraceError(f"{path}: no nodes")
    return nodes


def load_pods(path: Path | str, text: str | None = None) -> list[TracePod]:
    """Pods of a CSV or YAML trace, in file order."""
    pods: list[TracePod] = []
    for row in _rows(path, POD_COLUMNS, "pods", text):
        name = row.text("name")
        num_gpu = row.integer("num_gpu", default=0, high=64)
        if num_gpu == 0:
            gpu_milli = row.integer("gpu_milli", default=0, high=0)
        elif num_gpu == 1:
            gpu_milli = row.integer("gpu_milli", low=1, high=MILLI_PER_GPU)
        else:
            gpu_milli = row.integer("gpu_milli", low=MILLI_PER_GPU, high=MILLI_PER_GPU)
        spec: tuple[str, ...] = ()
        if row.has("gpu_spec"):
            spec = tuple(part.strip() for part in row.text("gpu_spec").split("|"))
            if any(not _MODEL.match(part) for part in spec):
                raise row.error("gpu_spec", f"{row.text('gpu_spec')!r} is not a |-separated list of GPU models")
        pods.append(
            TracePod(
                name=name,
                cpu_milli=row.integer("cpu_milli"),
                memory_mib=row.integer("memory_mib"),
                num_gpu=num_gpu,
                gpu_milli=gpu_milli,
                gpu_spec=spec,
            )
        )
    if not pods:
        raise TraceError(f"{path}: no pods")
    return pods


def gpu_capacity_milli(nodes: Iterable[TraceNode]) -> int:
    return sum(n.gpus for n in nodes) * MILLI_PER_GPU
