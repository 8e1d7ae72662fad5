#!/usr/bin/env bash
# Fetch the real CUDA driver API header (cuda.h, from the nvidia-cuda-runtime-cu12 wheel) and
# nvml.h (from nvidia-nvml-dev-cu12) into a cache directory outside the clone, and print the
# include directory. Reused when already present. The headers are never committed.
#
#   libvgpu/scripts/fetch-headers.sh            # prints .../cuda-headers-<version>/include
#
# Environment:
#   DRA_HAMI_CACHE        cache root (default $HOME/.cache/dra-hami)
#   CUDA_HEADERS_VERSION  wheel version of both packages (default below)
#   PIP                   pip command (default: "python3 -m pip")
set -euo pipefail

VERSION="${CUDA_HEADERS_VERSION:-12.9.79}"
CACHE="${DRA_HAMI_CACHE:-${HOME:-/tmp}/.cache/dra-hami}"
DEST="$CACHE/cuda-headers-$VERSION"
INC="$DEST/include"

if [[ -f "$INC/cuda.h" && -f "$INC/nvml.h" ]]; then
    echo "$INC"
    exit 0
fi

PIP="${PIP:-python3 -m pip}"
mkdir -p "$CACHE"
TMP="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

echo "fetch-headers: downloading nvidia-cuda-runtime-cu12==$VERSION nvidia-nvml-dev-cu12==$VERSION" >&2
# --no-deps: only these two wheels; platform pinned so the download works from any host.
$PIP download --quiet --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 --python-version 3.11 \
    -d "$TMP/wheels" \
    "nvidia-cuda-runtime-cu12==$VERSION" "nvidia-nvml-dev-cu12==$VERSION" >&2

# Extract only include/ from each wheel (a wheel is a zip file).
python3 - "$TMP/wheels" "$TMP/out/include" <<'PY'
import pathlib
import sys
import zipfile

wheels, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
for whl in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            parts = name.split("/")
            if "include" not in parts or name.endswith("/"):
                continue
            rel = pathlib.Path(*parts[parts.index("include") + 1 :])
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
for need in ("cuda.h", "nvml.h"):
    if not (out / need).is_file():
        sys.exit(f"fetch-headers: {need} not found in the downloaded wheels")
PY

# Publish atomically (another make job may race us: the first rename wins).
mkdir -p "$DEST.tmp.$$" && mv "$TMP/out/include" "$DEST.tmp.$$/include"
if ! mv -T "$DEST.tmp.$$" "$DEST" 2>/dev/null; then
    rm -rf "$DEST.tmp.$$"
fi
[[ -f "$INC/cuda.h" && -f "$INC/nvml.h" ]] || { echo "fetch-headers: failed to populate $INC" >&2; exit 1; }
echo "$INC"
