"""Dependencies as declared: grpcio-tools builds the kubelet stubs and is never needed at run time, the runtime
pins admit the code it generates, and matplotlib is the optional [plot] extra."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def named(requirements: list[str], name: str) -> list[str]:
    return [r for r in requirements if re.match(rf"{re.escape(name)}\s*([<>=!~;\[]|$)", r)]


def lower_bound(requirement: str) -> tuple[int, ...]:
    match = re.search(r">=\s*([\d.]+)", requirement)
    assert match, f"{requirement}: no lower bound"
    return tuple(int(part) for part in match.group(1).split("."))


def tools_version() -> str:
    (pin,) = named(PYPROJECT["build-system"]["requires"], "grpcio-tools")
    match = re.fullmatch(r"grpcio-tools==([\d.]+)", pin)
    assert match, f"build requirement {pin!r}: pin grpcio-tools exactly (its version fixes the generated code)"
    return match.group(1)


def test_grpcio_tools_is_a_build_requirement_only() -> None:
    version = tools_version()
    assert not named(PYPROJECT["project"]["dependencies"], "grpcio-tools")
    assert named(PYPROJECT["project"]["optional-dependencies"]["test"], "grpcio-tools") == [f"grpcio-tools=={version}"]


def test_runtime_pins_admit_the_generated_code() -> None:
    """The stubs refuse to load with a grpcio older than the tools, or a protobuf older than their protoc."""
    version = tuple(int(part) for part in tools_version().split("."))
    dependencies = PYPROJECT["project"]["dependencies"]
    (grpcio,) = named(dependencies, "grpcio")
    assert lower_bound(grpcio) >= version
    (protobuf,) = named(dependencies, "protobuf")
    generated = (ROOT / "dra_hami/kubeletapi/dra_v1_pb2.py").read_text()  # made by setup.py build_py
    match = re.search(r"Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", generated)
    assert match, "dra_v1_pb2.py has no protobuf runtime check; regenerate: python setup.py -q build_py"
    gencode = tuple(int(part) for part in match.groups())
    assert lower_bound(protobuf) >= gencode
    assert f"<{gencode[0] + 1}" in protobuf.replace(" ", ""), "a protobuf major newer than the gencode's is refused"
    stub = (ROOT / "dra_hami/kubeletapi/dra_v1_pb2_grpc.py").read_text()
    assert f"GRPC_GENERATED_VERSION = '{tools_version()}'" in stub


def test_every_module_imports_without_grpc_tools_or_matplotlib() -> None:
    """As on a node installed from the wheel: the two are made unimportable (grpcio itself tries grpc_tools and
    copes with its absence, so a check of sys.modules would not tell whether our code needs it)."""
    code = """
import importlib, importlib.abc, pkgutil, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("grpc_tools", "matplotlib"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
import dra_hami
skip = {"dra_hami.__main__", "dra_hami.kubeletapi.codegen"}  # __main__ runs the CLI; codegen is the build step
for info in pkgutil.walk_packages(dra_hami.__path__, "dra_hami."):
    if info.name not in skip:
        importlib.import_module(info.name)
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_matplotlib_is_the_optional_plot_extra() -> None:
    assert not named(PYPROJECT["project"]["dependencies"], "matplotlib")
    assert named(PYPROJECT["project"]["optional-dependencies"]["plot"], "matplotlib")
