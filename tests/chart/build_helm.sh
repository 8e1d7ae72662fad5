#!/usr/bin/env bash
# Builds (once) the helm CLI the chart tests run, from the Go module proxy (helm.sh/helm/v3, pinned below).
# The binary lives OUTSIDE the clone and is reused while it exists:
#   ${DRA_HAMI_CACHE:-$HOME/.cache/dra-hami}/helm/<version>/bin/helm
# GOMODCACHE and GOCACHE go to .../helm/go so the build never touches the user's Go caches.
#
# Usage: tests/chart/build_helm.sh
#   The last line of stdout is "HELM=<path>"; progress goes to stderr.
# Environment: DRA_HAMI_CACHE, HELM_VERSION (default below), HELM_BUILD_JOBS (go build -p, default 1),
#   HELM_NICE (default 10).
set -euo pipefail

version="${HELM_VERSION:-v3.21.4}"
cache_root="${DRA_HAMI_CACHE:-$HOME/.cache/dra-hami}/helm"
out="$cache_root/$version"
helm="$out/bin/helm"

log() { printf '[helm-build] %s\n' "$*" >&2; }

if [[ -x "$helm" ]] && "$helm" version --short >/dev/null 2>&1; then
    log "cache hit: $helm ($("$helm" version --short))"
    echo "HELM=$helm"
    exit 0
fi

command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { log "ERROR: go is not installed (needed to build helm from the module proxy)"; exit 1; }

mkdir -p "$out/bin" "$cache_root/go"
exec 9>"$cache_root/.build.lock"
flock 9
if [[ -x "$helm" ]]; then # another build finished while we waited for the lock
    echo "HELM=$helm"
    exit 0
fi

t0=$(date +%s)
log "building helm.sh/helm/v3/cmd/helm@$version with $(go env GOVERSION) (cold: a few minutes)"
# go install pkg@version builds in module mode from helm's own go.mod; the version is stamped into the binary.
tmp_bin="$(mktemp -d "$out/bin.XXXXXX")"
GOBIN="$tmp_bin" GOMODCACHE="$cache_root/go/mod" GOCACHE="$cache_root/go/build" GOFLAGS="-buildvcs=false" \
    CGO_ENABLED=0 nice -n "${HELM_NICE:-10}" \
    go install -p "${HELM_BUILD_JOBS:-1}" -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
    "helm.sh/helm/v3/cmd/helm@$version" >&2
mv -f "$tmp_bin/helm" "$helm"
rmdir "$tmp_bin"
log "built $("$helm" version --short) in $(($(date +%s) - t0)) s: $helm"
echo "HELM=$helm"
