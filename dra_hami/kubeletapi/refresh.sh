#!/usr/bin/env bash
# Refresh the vendored kubelet plugin-API .proto files from the upstream Go module k8s.io/kubelet.
#
#   dra_hami/kubeletapi/refresh.sh           # the tag that matches the e2e Kubernetes release
#   dra_hami/kubeletapi/refresh.sh v0.36.3   # an explicit tag
#
# The default tag is derived from tests/e2e/build/kubernetes/go.mod (k8s.io/kubernetes v1.X.Y ships
# k8s.io/kubelet v0.X.Y), so the protos we compile are the ones the kubelet under test speaks.
# Go is used only to download the module: the module proxy and sum.golang.org vouch for the bytes.
# Each .proto gets a short provenance header; UPSTREAM records the module, tag, module checksum and
# the sha256 of every upstream file (tests/unit/kubeletapi checks the files against it).
# Afterwards regenerate the Python stubs: python setup.py -q build_py
#
# Environment:
#   DRA_HAMI_CACHE   cache root (default $HOME/.cache/dra-hami); the Go module cache is $DRA_HAMI_CACHE/go
#   GO               go command (default: go)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${DRA_HAMI_CACHE:-${HOME:-/tmp}/.cache/dra-hami}"
GO="${GO:-go}"

if [[ $# -ge 1 ]]; then
    TAG="$1"
else
    K8S="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$ROOT/tests/e2e/build/kubernetes/go.mod")"
    if [[ "$K8S" != v1.* ]]; then
        echo "refresh: no 'require k8s.io/kubernetes v1.X.Y' line in tests/e2e/build/kubernetes/go.mod; pass a tag" >&2
        exit 1
    fi
    TAG="v0.${K8S#v1.}"
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# Outside any module (an empty temp dir), with the cache outside the clone; -mod=mod so no vendor dir is consulted.
INFO="$(cd "$TMP" && GOMODCACHE="$CACHE/go" GOFLAGS=-mod=mod "$GO" mod download -json "k8s.io/kubelet@$TAG")"

MODULE_INFO="$INFO" python3 - "$HERE" <<'PY'
import hashlib
import json
import os
import sys
from pathlib import Path

here = Path(sys.argv[1])
info = json.loads(os.environ["MODULE_INFO"])
if info.get("Error"):
    sys.exit(f"refresh: go mod download failed: {info['Error']}")
module_dir = Path(info["Dir"])
# Our flat file name -> the file in the module. Flat, because "dra-health" is not a Python package name.
files = {
    "dra_v1.proto": "pkg/apis/dra/v1/api.proto",
    "dra_v1beta1.proto": "pkg/apis/dra/v1beta1/api.proto",
    "dra_health_v1alpha1.proto": "pkg/apis/dra-health/v1alpha1/api.proto",
    "pluginregistration.proto": "pkg/apis/pluginregistration/v1/api.proto",
}
lines = [
    "# Written by refresh.sh: where the vendored .proto files come from. Do not edit by hand.",
    f"module {info['Path']}",
    f"version {info['Version']}",
    f"sum {info['Sum']}",
]
for local, upstream in files.items():
    body = (module_dir / upstream).read_bytes()
    header = (
        f"// dra-hami: vendored from {info['Path']}@{info['Version']} {upstream} (Apache-2.0, The Kubernetes Authors).\n"
        "// dra-hami: refreshed by dra_hami/kubeletapi/refresh.sh; everything below these lines is upstream, unchanged.\n"
    )
    (here / local).write_bytes(header.encode() + body)
    lines.append(f"file {local} {upstream} sha256:{hashlib.sha256(body).hexdigest()}")
    print(f"refresh: {local} <- {info['Path']}@{info['Version']} {upstream}")
(here / "UPSTREAM").write_text("\n".join(lines) + "\n")
PY
