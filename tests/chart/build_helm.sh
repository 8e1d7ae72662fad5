#!/usr/bin/env bash
# Finds, or builds once, the helm CLI the chart tests run.
#   1. a helm on PATH whose version fits (v3, at least HELM_MIN_VERSION) is used as it is;
#   2. else the cached build ${DRA_HAMI_CACHE:-$HOME/.cache/dra-hami}/helm/<version>/bin/helm;
#   3. else (not with --find) helm.sh/helm/v3 at the pinned version is built from the Go module proxy with the
#      Go on PATH (or /usr/local/go/bin), never a downloaded toolchain. GOMODCACHE and GOCACHE go to
#      .../helm/go so the build never touches the user's Go caches. Cold: about 8 minutes on 2 busy cores.
#
# Usage: tests/chart/build_helm.sh [--find]
#   The last line of stdout is "HELM=<path>"; progress (every package as it compiles) goes to stderr.
#   --find: never build; exit 3 (with what to run on stderr) when no fitting helm exists. The chart tests use it.
# Environment: DRA_HAMI_CACHE, HELM_VERSION (the build's pin, default below), HELM_MIN_VERSION (the oldest helm
#   on PATH that is accepted, default below), HELM_BUILD_JOBS (go build -p, default 1), HELM_NICE (default 10).
set -euo pipefail

version="${HELM_VERSION:-v3.21.4}"
# The oldest helm v3 the chart tests have been run with; helm v4 is not accepted (not tested here).
min_version="${HELM_MIN_VERSION:-v3.17.0}"
cache_root="${DRA_HAMI_CACHE:-$HOME/.cache/dra-hami}/helm"
out="$cache_root/$version"
helm="$out/bin/helm"
find_only=0
[[ "${1:-}" == "--find" ]] && find_only=1

log() { printf '[helm-build] %s\n' "$*" >&2; }

# fits <vX.Y.Z>: same major as the pin and not older than min_version.
fits() {
    local v="${1#v}" min="${min_version#v}"
    v="${v%%[-+]*}"
    [[ "${v%%.*}" == "${min%%.*}" ]] || return 1
    [[ "$(printf '%s\n%s\n' "$min" "$v" | sort -V | head -n1)" == "$min" ]]
}

if on_path="$(command -v helm)"; then
    path_version="$(helm version --template '{{.Version}}' 2>/dev/null || true)"
    if [[ -n "$path_version" ]] && fits "$path_version"; then
        log "using $on_path ($path_version, on PATH)"
        echo "HELM=$on_path"
        exit 0
    fi
    log "ignoring $on_path (${path_version:-version unknown}): the chart tests need helm v3 >= $min_version"
fi

if [[ -x "$helm" ]] && "$helm" version --short >/dev/null 2>&1; then
    log "cache hit: $helm ($("$helm" version --short))"
    echo "HELM=$helm"
    exit 0
fi

if [[ "$find_only" == 1 ]]; then
    log "none >= $min_version on PATH, none cached at $helm; run tests/chart/build_helm.sh (builds helm $version with Go, about 8 minutes cold) or put helm v3 on PATH"
    exit 3
fi

command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || {
    log "ERROR: go is not installed (needed to build helm $version from the module proxy);"
    log "install Go (https://go.dev/dl/) or put helm v3 >= $min_version on PATH"
    exit 1
}

mkdir -p "$out/bin" "$cache_root/go"
exec 9>"$cache_root/.build.lock"
log "waiting for the build lock $cache_root/.build.lock"
flock 9
if [[ -x "$helm" ]]; then # another build finished while we waited for the lock
    log "cache hit after wait: $helm"
    echo "HELM=$helm"
    exit 0
fi

t0=$(date +%s)
log "building helm.sh/helm/v3/cmd/helm@$version with $(go env GOVERSION) (cold: about 8 minutes; each package is"
log "listed as it compiles)"
# go install pkg@version builds in module mode from helm's own go.mod; the version is stamped into the binary.
# GOTOOLCHAIN=local: a Go older than helm's go.mod asks for fails with the version it needs instead of
# downloading a toolchain behind the user's back.
tmp_bin="$(mktemp -d "$out/bin.XXXXXX")"
GOBIN="$tmp_bin" GOMODCACHE="$cache_root/go/mod" GOCACHE="$cache_root/go/build" GOFLAGS="-buildvcs=false" \
    GOTOOLCHAIN=local CGO_ENABLED=0 nice -n "${HELM_NICE:-10}" \
    go install -v -p "${HELM_BUILD_JOBS:-1}" -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
    "helm.sh/helm/v3/cmd/helm@$version" >&2 || {
    log "ERROR: building helm $version failed (see above); a Go too old for helm's go.mod says which it needs"
    rm -rf "$tmp_bin"
    exit 1
}
mv -f "$tmp_bin/helm" "$helm"
rmdir "$tmp_bin"
log "built $("$helm" version --short) in $(($(date +%s) - t0)) s: $helm"
echo "HELM=$helm"
