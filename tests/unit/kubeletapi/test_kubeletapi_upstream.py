"""The vendored kubelet protos are the upstream files at the recorded tag, the tag is the one the e2e kubelet
speaks, and the health service reaches them without importing the plugin."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

from dra_hami.kubeletapi import codegen

ROOT = Path(__file__).resolve().parents[3]
API = ROOT / "dra_hami" / "kubeletapi"
HEADER = "// dra-hami: "


def upstream() -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, str]] = {}
    for line in (API / "UPSTREAM").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        if key == "file":
            local, path, digest = rest.split(" ")
            files[local] = (path, digest.removeprefix("sha256:"))
        else:
            fields[key] = rest
    return fields, files


def split_header(text: str) -> tuple[list[str], str]:
    lines = text.splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if not line.startswith(HEADER))
    return lines[:n], "".join(lines[n:])


def test_every_vendored_proto_is_the_upstream_file_unchanged() -> None:
    fields, files = upstream()
    assert fields["module"] == "k8s.io/kubelet"
    assert set(files) == set(codegen.PROTOS) == {p.name for p in API.glob("*.proto")}
    for local, (path, digest) in files.items():
        header, body = split_header((API / local).read_text())
        assert header, f"{local}: no provenance header; regenerate with dra_hami/kubeletapi/refresh.sh"
        assert f"k8s.io/kubelet@{fields['version']} {path}" in header[0]
        actual = hashlib.sha256(body.encode()).hexdigest()
        assert actual == digest, f"{local} differs from upstream {path}: edit nothing by hand, run refresh.sh"


def test_the_pinned_tag_is_the_kubelet_of_the_e2e_kubernetes_release() -> None:
    gomod = (ROOT / "tests/e2e/build/kubernetes/go.mod").read_text()
    match = re.search(r"^require k8s\.io/kubernetes v1\.(\d+\.\d+)$", gomod, re.M)
    assert match, "tests/e2e/build/kubernetes/go.mod pins no k8s.io/kubernetes release"
    assert upstream()[0]["version"] == f"v0.{match.group(1)}", "run dra_hami/kubeletapi/refresh.sh after a bump"


def test_the_health_service_does_not_import_the_plugin() -> None:
    code = (
        "import sys, dra_hami.health.service\n"
        "bad = sorted(m for m in sys.modules if m.startswith('dra_hami.plugin'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
