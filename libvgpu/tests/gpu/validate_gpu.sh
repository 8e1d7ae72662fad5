#!/usr/bin/env bash
# Validates libvgpu.so on a real NVIDIA GPU with PyTorch (by hand or on a GPU machine; not CI):
# builds the library here, then runs tests/gpu/validate_torch.py, which checks under
# LD_PRELOAD=libvgpu.so that
#   * allocations up to CUDA_DEVICE_MEMORY_LIMIT succeed and the next raises torch.OutOfMemoryError,
#     with the default caching allocator, expandable_segments:True and backend:cudaMallocAsync;
#   * torch.cuda.mem_get_info and nvidia-smi (in the container environment) show the slice;
#   * two processes sharing one CUDA_DEVICE_MEMORY_SHARED_CACHE share one cap;
#   * a matmul loop under CUDA_DEVICE_SM_LIMIT=25/50/75 reaches about that NVML utilization;
# and prints a markdown table.
#
#   bash libvgpu/tests/gpu/validate_gpu.sh            (from the repository root)
#
# Environment:
#   CUDA_INCLUDE   directory with cuda.h and nvml.h (default: search a CUDA toolkit, then the
#                  nvidia-* pip wheels of this Python, then scripts/fetch-headers.sh (needs PyPI))
#   PYTHON         Python with torch (default python3)
#   LIMIT          memory cap of the checks (default 4g)    CAPS  SM caps (default 25,50,75)
#   SECONDS_PER_CAP  length of each matmul run (default 15) SKIP_COMPUTE=1  memory checks only
#   OUT            if set: the log and validate_gpu.md are also written there
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIBVGPU="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
LIMIT="${LIMIT:-4g}"
CAPS="${CAPS:-25,50,75}"
SECONDS_PER_CAP="${SECONDS_PER_CAP:-15}"

if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    exec > >(tee -a "$OUT/validate_gpu.log") 2>&1
fi

die() {
    echo "validate_gpu: error: $*" >&2
    exit 2
}
say() { echo "validate_gpu: $*" >&2; }

# ---- prerequisites ------------------------------------------------------------------------------
command -v make >/dev/null || die "make is not installed"
command -v "${CC:-gcc}" >/dev/null || die "no C compiler (${CC:-gcc}); install gcc"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON=/path/to/python with torch)"
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this needs a machine with an NVIDIA GPU and driver"
nvidia-smi -L >/dev/null 2>&1 || die "nvidia-smi cannot talk to the driver: $(nvidia-smi -L 2>&1 | head -n 3)"
"$PYTHON" - <<'PY' || die "PyTorch with a usable CUDA device is needed for $PYTHON (pip install torch)"
import sys
import torch
ok = torch.cuda.is_available()
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device: "
      f"{torch.cuda.get_device_name(0) if ok else 'none'}", file=sys.stderr)
sys.exit(0 if ok else 1)
PY

# ---- headers (no internet needed when a toolkit or the nvidia wheels are installed) ----------
has_headers() { [[ -f "$1/cuda.h" && -f "$1/nvml.h" ]]; }

find_headers() {
    if [[ -n "${CUDA_INCLUDE:-}" ]]; then
        has_headers "$CUDA_INCLUDE" || die "CUDA_INCLUDE=$CUDA_INCLUDE lacks cuda.h or nvml.h"
        echo "$CUDA_INCLUDE"
        return
    fi
    local d
    for d in /usr/local/cuda/include /usr/local/cuda-*/include /usr/include /opt/cuda/include; do
        if has_headers "$d"; then
            echo "$d"
            return
        fi
    done
    # pip wheels (torch pulls nvidia-cuda-runtime-cu12; nvml.h is in nvidia-nvml-dev-cu12): cuda.h
    # and nvml.h may sit in different package directories, so merge them into one directory.
    local dirs
    dirs="$("$PYTHON" - <<'PY' 2>/dev/null || true
import importlib.util, os
roots = set()
for mod in ("nvidia",):
    spec = importlib.util.find_spec(mod)
    if spec and spec.submodule_search_locations:
        roots.update(spec.submodule_search_locations)
for root in roots:
    for sub in sorted(os.listdir(root)):
        inc = os.path.join(root, sub, "include")
        if os.path.isdir(inc):
            print(inc)
PY
)"
    local cuda_dir="" nvml_dir=""
    while IFS= read -r d; do
        [[ -z "$d" ]] && continue
        [[ -z "$cuda_dir" && -f "$d/cuda.h" ]] && cuda_dir="$d"
        [[ -z "$nvml_dir" && -f "$d/nvml.h" ]] && nvml_dir="$d"
    done <<<"$dirs"
    if [[ -n "$cuda_dir" && -n "$nvml_dir" ]]; then
        local merged="${TMPDIR:-/tmp}/vgpu-cuda-include-$$"
        mkdir -p "$merged"
        ln -sf "$cuda_dir"/* "$merged"/
        ln -sf "$nvml_dir"/nvml.h "$merged"/nvml.h
        echo "$merged"
        return
    fi
    say "no local cuda.h + nvml.h (cuda.h: ${cuda_dir:-none}, nvml.h: ${nvml_dir:-none}); trying scripts/fetch-headers.sh (needs PyPI)"
    "$LIBVGPU/scripts/fetch-headers.sh" || die "no CUDA headers: set CUDA_INCLUDE to a directory with cuda.h and nvml.h (a CUDA toolkit's include/, or pip install nvidia-cuda-runtime-cu12 nvidia-nvml-dev-cu12)"
}

INC="$(find_headers)"
say "headers: $INC"

# ---- build ----------------------------------------------------------------------------------------
say "building libvgpu (make -C $LIBVGPU)"
make -C "$LIBVGPU" -j"$(nproc 2>/dev/null || echo 2)" CUDA_INCLUDE="$INC" >&2 || die "make -C libvgpu failed"
LIB="$LIBVGPU/build/libvgpu.so"
[[ -f "$LIB" ]] || die "$LIB was not built"

# ---- checks ---------------------------------------------------------------------------------------
say "driver: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader -i 0 2>/dev/null || echo unknown)"
args=(run --lib "$LIB" --limit "$LIMIT" --caps "$CAPS" --seconds "$SECONDS_PER_CAP")
[[ "${SKIP_COMPUTE:-0}" == "1" ]] && args+=(--skip-compute)
[[ -n "${OUT:-}" ]] && args+=(--out "$OUT")
rc=0
"$PYTHON" "$HERE/validate_torch.py" "${args[@]}" || rc=$?
if [[ $rc -eq 0 ]]; then
    say "all checks passed"
else
    say "some checks FAILED (exit $rc); see the table above"
fi
exit "$rc"
