"""Fixtures for the libvgpu suites: build once per session, run workload programs against the
fake driver (see helpers.py).

* ``libvgpu_builds`` (session): ``.get(variant)`` runs ``make -C libvgpu -j2 -k [asan|ubsan]``
  once per variant and returns a BuildInfo (paths, make log).
* ``libvgpu_build`` (session): the release build (fake driver required, libvgpu.so optional).
* ``libvgpu_variant``: "release" unless parametrized indirectly, e.g.
  ``@pytest.mark.parametrize("libvgpu_variant", ["release", "asan", "ubsan"], indirect=True)``;
  sanitizer variants are skipped when the compiler has no runtime for them.
* ``run_program``: a helpers.Runner; ``run_program(name, args, env, preload=True,
  variant="release")`` returns a ProgramResult with ``.rc``, ``.stdout``, ``.stderr`` and the
  parsed ``.kv`` (``r["key"]``, ``r.int("key")``); ``run_program.spawn(...)`` starts one in the
  background. Each test gets its own simulated GPU (FAKE_CUDA_STATE in tmp_path).
* ``libvgpu_helpers``: the helpers module (constants MI/GI, wait_ready, release, parse_kv).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

# helpers.py is loaded under a unique module name: other test directories may have a helpers.py
_spec = importlib.util.spec_from_file_location("libvgpu_fake_helpers", Path(__file__).with_name("helpers.py"))
helpers = importlib.util.module_from_spec(_spec)
sys.modules["libvgpu_fake_helpers"] = helpers
_spec.loader.exec_module(helpers)


@pytest.fixture(scope="session")
def libvgpu_builds() -> helpers.Builds:
    return helpers.Builds(jobs=2)


@pytest.fixture(scope="session")
def libvgpu_build(libvgpu_builds) -> helpers.BuildInfo:
    return libvgpu_builds.require_fake("release")


@pytest.fixture
def libvgpu_variant(request, libvgpu_builds) -> str:
    variant = getattr(request, "param", "release")
    if variant != "release" and helpers.sanitizer_runtime(variant) is None:
        pytest.skip(f"no {variant} runtime for this compiler")
    libvgpu_builds.require_fake(variant)
    return variant


@pytest.fixture
def run_program(libvgpu_builds, tmp_path):
    runner = helpers.Runner(libvgpu_builds, tmp_path)
    yield runner
    runner.cleanup()


@pytest.fixture
def libvgpu_helpers():
    return helpers


@pytest.fixture(scope="session", autouse=True)
def _libvgpu_fake_built(libvgpu_builds):
    """Build libvgpu (release) before any test of this directory, so suites that only look for
    libvgpu/build/fake find it; failures are reported by the tests that need the artifacts."""
    libvgpu_builds.get("release")
