#!/usr/bin/env bash
# Builds (once) the dra-hami container image from the repository's Dockerfile, with no Docker Hub and no Docker
# engine: the base is made here from Debian packages, and every Dockerfile step runs under Debian's podman.
#
#   1. base:  mmdebstrap makes a Debian bookworm root with python3, python3-venv and python3-pip, and
#             `podman import` turns it into localhost/dra-hami-base:<base-key>;
#   2. image: `podman build --build-arg PYTHON_IMAGE=<that base>` runs the Dockerfile (the same file users run
#             with `docker build`), with host networking for apt and pip;
#   3. `podman save --format oci-archive` writes the archive that `ctr images import` (the e2e containerd) reads.
#
# The result lives OUTSIDE the clone and is reused while its stamp exists:
#   ${DRA_HAMI_CACHE:-$HOME/.cache/dra-hami}/image/<key>/dra-hami.oci.tar
# The key hashes every input: the Dockerfile, .dockerignore, the files of the build context, the base recipe
# and this script. podman keeps its layers in .../image/storage (its own store, not the host's), so a rebuild
# after a source change reuses the base and the apt/venv layers.
#
# Usage: tests/e2e/build_image.sh
#   Needs root, podman, runc and mmdebstrap (never installed here: apt-get install podman runc mmdebstrap).
#   The last lines of stdout are IMAGE_ARCHIVE=<path> and IMAGE_REF=<name:tag>; progress goes to stderr.
# Environment: DRA_HAMI_CACHE, E2E_NICE (default 10), DRA_HAMI_DEBIAN_MIRROR (default http://deb.debian.org/debian),
#   DRA_HAMI_IMAGE_REF (default docker.io/library/dra-hami:<chart appVersion>, what the chart's defaults pull).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache_root="${DRA_HAMI_CACHE:-$HOME/.cache/dra-hami}/image"
nice_level="${E2E_NICE:-10}"
mirror="${DRA_HAMI_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

log() { printf '[image-build] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

[[ "$(id -u)" == 0 ]] || die "needs root (rootful podman and mmdebstrap in root mode); run it as root"

ensure_debian_pkg() { # ensure_debian_pkg <command> <package>: present, or say what to install (never installs:
    # this script also runs inside a test fixture; .ci/run installs the packages)
    command -v "$1" >/dev/null || die "$1 not found; install the Debian package $2 (apt-get install $2)"
}
ensure_debian_pkg podman podman
ensure_debian_pkg runc runc
ensure_debian_pkg mmdebstrap mmdebstrap

app_version="$(awk -F'"' '/^appVersion:/ { print $2 }' "$repo/charts/dra-hami/Chart.yaml")"
[[ -n "$app_version" ]] || die "cannot read appVersion from charts/dra-hami/Chart.yaml"
image_ref="${DRA_HAMI_IMAGE_REF:-docker.io/library/dra-hami:$app_version}"

# --- the base: what it is made of decides its key ------------------------------------------------------------
base_suite=bookworm
base_packages=python3,python3-venv,python3-pip,ca-certificates
base_recipe="1 mmdebstrap --variant=minbase $base_suite $mirror include=$base_packages"
base_key="$(echo "$base_recipe" | sha256sum | cut -c1-12)"
base_ref="localhost/dra-hami-base:$base_key"

# --- the image key: every file podman sends as build context (git's view: tracked + untracked, not ignored;
# .dockerignore then trims it further, and hashing a little more than needed only costs a rebuild).
cd "$repo"
git rev-parse --git-dir >/dev/null 2>&1 || die "$repo is not a git checkout (the cache key lists its files with git)"
context_digest="$(git ls-files -z --cached --others --exclude-standard -- \
    Dockerfile .dockerignore pyproject.toml setup.py README.md dra_hami cdi libvgpu |
    sort -z | xargs -0 -r sha256sum | sha256sum | cut -c1-16)"
key="$(printf '%s\n' "$context_digest" "$base_recipe" "$image_ref" "$(sha256sum <"$here/build_image.sh")" |
    sha256sum | cut -c1-16)"
out="$cache_root/$key"
archive="$out/dra-hami.oci.tar"
stamp="$out/.stamp"

if [[ -f "$stamp" ]]; then
    log "cache hit: $archive ($(cat "$stamp"))"
    echo "IMAGE_ARCHIVE=$archive"
    echo "IMAGE_REF=$image_ref"
    exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.build.lock"
log "waiting for the build lock $cache_root/.build.lock"
flock 9
if [[ -f "$stamp" ]]; then
    log "cache hit after wait: $archive"
    echo "IMAGE_ARCHIVE=$archive"
    echo "IMAGE_REF=$image_ref"
    exit 0
fi

# podman's own store under the cache, so the host's store stays untouched and the layers survive between builds.
# Flags this host needs (see tests/integration/podman.py): runc (crun fails here) and rlimits below the hard ones.
podman_cmd=(podman --root "$cache_root/storage" --runroot "$cache_root/run" --storage-driver overlay)
build_flags=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network host --pull=never)
# A host behind a TLS-intercepting proxy trusts its CA through the system bundle and pip's config: lend both to
# the RUN steps as read-only build-time mounts (never part of a layer), so pip and apt inside trust what the host
# trusts. Without such a host setup these files are the stock ones and change nothing.
for f in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf; do
    [[ -f "$f" ]] && build_flags+=(--volume "$f:$f:ro")
done

t_all=$(date +%s)
if ! "${podman_cmd[@]}" image exists "$base_ref"; then
    t0=$(date +%s)
    log "base $base_ref: mmdebstrap $base_suite ($base_packages) from $mirror"
    tmp_base="$(mktemp -d "$cache_root/.base.XXXXXX")"
    trap 'rm -rf "$tmp_base"' EXIT
    nice -n "$nice_level" mmdebstrap --mode=root --variant=minbase --include="$base_packages" \
        --format=tar "$base_suite" "$tmp_base/rootfs.tar" "$mirror" >&2 ||
        die "mmdebstrap could not make the $base_suite base from $mirror (see its output above); set DRA_HAMI_DEBIAN_MIRROR to a reachable Debian mirror"
    "${podman_cmd[@]}" import --change 'CMD ["/bin/bash"]' "$tmp_base/rootfs.tar" "$base_ref" >&2 ||
        die "podman import of the base failed (see the output above)"
    rm -rf "$tmp_base"
    trap - EXIT
    log "base $base_ref: done in $(($(date +%s) - t0)) s"
fi

t0=$(date +%s)
log "podman build $image_ref (PYTHON_IMAGE=$base_ref)"
nice -n "$nice_level" "${podman_cmd[@]}" build "${build_flags[@]}" --build-arg "PYTHON_IMAGE=$base_ref" \
    --tag "$image_ref" --file "$repo/Dockerfile" "$repo" >&2 || die "podman build failed (see the output above)"
log "podman build: done in $(($(date +%s) - t0)) s"

rm -rf "$out.tmp"
mkdir -p "$out.tmp"
"${podman_cmd[@]}" save --format oci-archive --output "$out.tmp/dra-hami.oci.tar" "$image_ref" >&2 ||
    die "podman save failed (see the output above)"
size="$("${podman_cmd[@]}" image inspect --format '{{.Size}}' "$image_ref")"
rm -rf "$out"
mv "$out.tmp" "$out"
total=$(($(date +%s) - t_all))
printf '%s image-size=%s archive-size=%s built %s in %ss\n' "$image_ref" "$size" \
    "$(stat -c %s "$archive")" "$(date -u +%FT%TZ)" "$total" >"$stamp"
log "built $image_ref in $total s: $archive ($(cat "$stamp"))"
# Keep the three newest archives; podman's store drops the untagged layers of older builds.
while IFS= read -r stale; do
    [[ "$stale" == "$out" ]] || { log "removing old build $stale" && rm -rf "$stale"; }
done < <(ls -1dt "$cache_root"/[0-9a-f]*[0-9a-f] 2>/dev/null | grep -E '/[0-9a-f]{16}$' | tail -n +4)
echo "IMAGE_ARCHIVE=$archive"
echo "IMAGE_REF=$image_ref"
