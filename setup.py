"""Build hooks: compile the kubelet gRPC protos before the package files are collected, copy the repository's
examples/ into the package (``dra-hami demo`` runs them when installed), and put a built libvgpu.so into the package
when DRA_HAMI_LIBVGPU names one (the image build does; `dra-hami install-libvgpu` copies it out)."""

import importlib.util
import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _codegen():
    spec = importlib.util.spec_from_file_location("codegen", ROOT / "dra_hami/kubeletapi/codegen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithProtos(build_py):
    def run(self):
        # Into the source tree, so editable installs see the stubs; regular builds then copy them.
        _codegen().generate(ROOT, ROOT)
        super().run()
        # The examples stay at the top of the repository (docs and tests name them there); the package gets a copy.
        examples = Path(self.build_lib) / "dra_hami" / "demo" / "examples"
        shutil.rmtree(examples, ignore_errors=True)
        examples.mkdir(parents=True)
        for manifest in sorted((ROOT / "examples").glob("*.yaml")):
            shutil.copy2(manifest, examples / manifest.name)
        library = os.environ.get("DRA_HAMI_LIBVGPU")
        target = Path(self.build_lib) / "dra_hami" / "lib" / "libvgpu.so"
        if not library:
            target.unlink(missing_ok=True)  # build/lib is reused: never ship a library left by an earlier build
            return
        if not Path(library).is_file():
            raise SystemExit(f"DRA_HAMI_LIBVGPU={library}: no such file (build it with: make -C libvgpu)")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(library, target)


setup(cmdclass={"build_py": BuildPyWithProtos})
