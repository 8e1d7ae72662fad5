#!/usr/bin/env bash
# Print a C header listing every CUresult-returning driver entry point declared by cuda.h
# (legacy, versioned and _ptsz/_ptds names: preprocessed with __CUDA_API_VERSION_INTERNAL).
# Used by the fake libcuda's cuGetProcAddress to tell "exists in the real driver but not
# implemented here" (stub returning CUDA_ERROR_NOT_SUPPORTED) from "unknown" (NOT_FOUND).
set -euo pipefail
CUDA_H="${1:?usage: gen-cuda-names.sh /path/to/cuda.h}"
CC="${CC:-cc}"
echo "/* generated from $CUDA_H by scripts/gen-cuda-names.sh; do not edit */"
echo "static const char *const fake_cuda_header_names[] = {"
printf '#define __CUDA_API_VERSION_INTERNAL 1\n#include <cuda.h>\n' |
    "$CC" -E -P -x c -I"$(dirname "$CUDA_H")" - |
    grep -oE '\bCUresult[[:space:]]+cu[A-Za-z0-9_]+[[:space:]]*\(' |
    sed -E 's/^CUresult[[:space:]]+//; s/[[:space:]]*\($//' |
    LC_ALL=C sort -u |
    sed -E 's/.*/    "&",/'
echo "};"
echo "struct fake_cuda_error_name { int code; const char *name; };"
echo "static const struct fake_cuda_error_name fake_cuda_error_names[] = {"
grep -oE '^[[:space:]]*CUDA_(SUCCESS|ERROR_[A-Z0-9_]+)[[:space:]]*=[[:space:]]*[0-9]+' "$CUDA_H" |
    sed -E 's/^[[:space:]]*([A-Z0-9_]+)[[:space:]]*=[[:space:]]*([0-9]+)/    {\2, "\1"},/'
echo "};"
