"""Build hook: compile the kubelet gRPC protos before the package files are collected."""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _codegen():
    spec = importlib.util.spec_from_file_location("codegen", ROOT / "dra_hami/plugin/proto/codegen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithProtos(build_py):
    def run(self):
        # Into the source tree, so editable installs see the stubs; regular builds then copy them.
        _codegen().generate(ROOT, ROOT)
        super().run()


setup(cmdclass={"build_py": BuildPyWithProtos})
