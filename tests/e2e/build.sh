#!/usr/bin/env bash
# Builds (once) the Kubernetes and containerd binaries the e2e suite runs, from the Go module proxy,
# pinned by the go.mod files under tests/e2e/build/. The result lives OUTSIDE the clone:
#   ${DRA_HAMI_CACHE:-$HOME/.cache/dra-hami}/e2e/<version-key>/bin
# and is reused while its stamp file is present. runc and busybox-static come from Debian; this script never
# installs them (.ci/run does: apt-get install runc busybox-static).
# Go: the one on PATH (or /usr/local/go/bin), never a downloaded toolchain (GOTOOLCHAIN=local); it must be at
# least the version the go.mod files under build/ ask for, checked before anything is downloaded.
#
# Usage: tests/e2e/build.sh
#   The last line of stdout is the bin directory ("BIN_DIR=<path>"); progress (each package as it compiles)
#   and timings go to stderr.
# Environment: DRA_HAMI_CACHE, E2E_BUILD_JOBS (go build -p, default 2), E2E_NICE (default 10).
# The upstream example DRA driver's kubelet plugin (the peer of test_peer_comparison.py) is built the same way,
# pinned by build/dra-example-driver/go.mod, under its own key and stamp, so changing it never rebuilds the
# Kubernetes binaries; bin/dra-example-kubeletplugin links to it.
# The cluster's network and store are built the same way under one more key ("net-..."): etcd (pinned by
# build/etcd/go.mod), the reference CNI plugins bridge, host-local, loopback and portmap (build/cni/go.mod) and
# kube-proxy (from build/kubernetes/go.mod, sharing the Kubernetes GOCACHE); bin/etcd, bin/kube-proxy and
# bin/cni/<plugin> link to them.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build_src="$here/build"
cache_root="${DRA_HAMI_CACHE:-$HOME/.cache/dra-hami}/e2e"
jobs="${E2E_BUILD_JOBS:-2}"
nice_level="${E2E_NICE:-10}"

log() { printf '[e2e-build] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null ||
    die "go is not installed (needed to build kube-* and containerd from the module proxy); install Go from https://go.dev/dl/"

mod_version() { # mod_version <go.mod> <module path>
    awk -v m="$2" '$1 == "require" && $2 == m { print $3 } $1 == m && $2 ~ /^v/ { print $2 }' "$1" | head -n1
}
k8s_version="$(mod_version "$build_src/kubernetes/go.mod" k8s.io/kubernetes)"
containerd_version="$(mod_version "$build_src/containerd/go.mod" github.com/containerd/containerd/v2)"
[[ -n "$k8s_version" && -n "$containerd_version" ]] || die "cannot read the pinned versions from $build_src/*/go.mod"
go_version="$(go env GOVERSION)"
# Bump when the way the binaries are built changes (flags, tags, the list of commands).
recipe="2 version-ldflags -trimpath -s -w CGO_ENABLED=0 no_btrfs kube-apiserver kube-controller-manager kube-scheduler kubelet containerd shim ctr"
# The key changes whenever a pinned module, the Go toolchain or the recipe changes.
digest="$( (cat "$build_src"/kubernetes/go.mod "$build_src"/kubernetes/go.sum "$build_src"/containerd/go.mod \
    "$build_src"/containerd/go.sum && echo "$recipe") | sha256sum | cut -c1-12)"
key="k8s-${k8s_version}_containerd-${containerd_version}_${go_version}_${digest}"
out="$cache_root/$key"
bin="$out/bin"
stamp="$bin/.stamp"

# The Go on PATH must be at least what every go.mod under build/ asks for (GOTOOLCHAIN=local never fetches one).
go_needed="$(awk '$1 == "go" { print $2 }' "$build_src"/*/go.mod | sort -V | tail -n1)"
go_have="${go_version#go}"
if [[ -n "$go_needed" && "$(printf '%s\n%s\n' "$go_needed" "$go_have" | sort -V | head -n1)" != "$go_needed" ]]; then
    die "$(command -v go) is $go_version; the pinned modules need go >= $go_needed (https://go.dev/dl/)"
fi

ensure_debian_pkg() { # ensure_debian_pkg <command> <package>: present, or say what to install (never installs)
    command -v "$1" >/dev/null ||
        die "$1 not found; install the Debian package $2 (apt-get install $2; .ci/run installs it)"
}

link_host_tools() {
    ensure_debian_pkg runc runc
    ensure_debian_pkg busybox busybox-static
    ln -sfn "$(command -v runc)" "$bin/runc"
    # The test images need a static busybox (the dynamic one would need the host's libc inside the image).
    local bb
    bb="$(command -v busybox)"
    if ldd "$bb" >/dev/null 2>&1; then # ldd fails on a static executable
        die "$bb is dynamically linked; install busybox-static"
    fi
    ln -sfn "$bb" "$bin/busybox"
}

# --- the upstream example DRA driver: one small binary, its own key and stamp (never part of the key above)
example_src="$build_src/dra-example-driver"
example_version="$(mod_version "$example_src/go.mod" sigs.k8s.io/dra-example-driver)"
[[ -n "$example_version" ]] || die "cannot read the pinned sigs.k8s.io/dra-example-driver version from $example_src/go.mod"
example_recipe="1 -trimpath -s -w CGO_ENABLED=0 dra-example-kubeletplugin"
example_digest="$( (cat "$example_src"/go.mod "$example_src"/go.sum && echo "$example_recipe") | sha256sum | cut -c1-12)"
example_out="$cache_root/dra-example-driver-${example_version}_${go_version}_${example_digest}"

build_example_driver() { # builds (once) and links $bin/dra-example-kubeletplugin; needs $bin to exist
    local ebin="$example_out/bin" t0
    if [[ ! -f "$ebin/.stamp" ]]; then
        mkdir -p "$cache_root"
        exec 8>"$cache_root/.build-example.lock"
        flock 8
        if [[ ! -f "$ebin/.stamp" ]]; then
            t0=$(date +%s)
            log "build dra-example-driver $example_version: starting (go build ...)"
            rm -rf "$example_out/bin.tmp"
            mkdir -p "$example_out/bin.tmp"
            (cd "$example_src" && GOFLAGS=-mod=mod GOMODCACHE="$cache_root/go/mod" GOCACHE="$cache_root/go/build" \
                GOMAXPROCS="$jobs" GOTOOLCHAIN=local CGO_ENABLED=0 nice -n "$nice_level" \
                go build -v -p "$jobs" -trimpath "-ldflags=-s -w" -o "$example_out/bin.tmp/" \
                sigs.k8s.io/dra-example-driver/cmd/dra-example-kubeletplugin) >&2 ||
                die "build dra-example-driver failed (see the output above)"
            [[ -x "$example_out/bin.tmp/dra-example-kubeletplugin" ]] ||
                die "missing dra-example-kubeletplugin after the build"
            rm -rf "$ebin"
            mv "$example_out/bin.tmp" "$ebin"
            printf 'dra-example-driver %s %s built %s in %ss\n' "$example_version" "$go_version" \
                "$(date -u +%FT%TZ)" "$(($(date +%s) - t0))" >"$ebin/.stamp"
            log "build dra-example-driver $example_version: done in $(($(date +%s) - t0)) s"
            # Keep the two newest example-driver builds.
            while IFS= read -r stale; do
                [[ "$stale" == "$example_out" ]] || { log "removing old build $stale" && rm -rf "$stale"; }
            done < <(ls -1dt "$cache_root"/dra-example-driver-* 2>/dev/null | tail -n +3)
        fi
        exec 8>&-
    fi
    ln -sfn "$ebin/dra-example-kubeletplugin" "$bin/dra-example-kubeletplugin"
}

# What hack/lib/version.sh stamps into a release build (else the binaries call themselves v0.0.0-master).
k8s_minor="${k8s_version#v1.}"
k8s_minor="${k8s_minor%%.*}"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

# --- etcd, the CNI plugins and kube-proxy: their own key and stamp (never part of the Kubernetes key above)
etcd_src="$build_src/etcd"
cni_src="$build_src/cni"
etcd_version="$(mod_version "$etcd_src/go.mod" go.etcd.io/etcd/server/v3)"
cni_version="$(mod_version "$cni_src/go.mod" github.com/containernetworking/plugins)"
[[ -n "$etcd_version" && -n "$cni_version" ]] || die "cannot read the pinned etcd / CNI plugin versions from $build_src/{etcd,cni}/go.mod"
net_recipe="1 -trimpath -s -w CGO_ENABLED=0 etcd bridge host-local loopback portmap kube-proxy"
net_digest="$( (cat "$etcd_src"/go.mod "$etcd_src"/go.sum "$cni_src"/go.mod "$cni_src"/go.sum \
    "$build_src"/kubernetes/go.mod "$build_src"/kubernetes/go.sum && echo "$net_recipe") | sha256sum | cut -c1-12)"
net_out="$cache_root/net-etcd-${etcd_version}_cni-${cni_version}_k8s-${k8s_version}_${go_version}_${net_digest}"
cni_plugins=(bridge host-local loopback portmap)

build_net_tools() { # builds (once) and links $bin/etcd, $bin/kube-proxy and $bin/cni/*; needs $bin to exist
    local nbin="$net_out/bin" t0 t1
    if [[ ! -f "$nbin/.stamp" ]]; then
        mkdir -p "$cache_root"
        exec 7>"$cache_root/.build-net.lock"
        flock 7
        if [[ ! -f "$nbin/.stamp" ]]; then
            t0=$(date +%s)
            rm -rf "$net_out/bin.tmp"
            mkdir -p "$net_out/bin.tmp/cni"
            local env=(GOFLAGS=-mod=mod GOMODCACHE="$cache_root/go/mod" GOCACHE="$cache_root/go/build"
                GOMAXPROCS="$jobs" GOTOOLCHAIN=local CGO_ENABLED=0)
            t1=$(date +%s)
            log "build etcd $etcd_version: starting"
            (cd "$etcd_src" && env "${env[@]}" nice -n "$nice_level" go build -v -p "$jobs" -trimpath "-ldflags=-s -w" \
                -o "$net_out/bin.tmp/etcd" go.etcd.io/etcd/server/v3) >&2 || die "build etcd failed (see the output above)"
            log "build etcd $etcd_version: done in $(($(date +%s) - t1)) s"
            t1=$(date +%s)
            log "build CNI plugins $cni_version: starting"
            # The plugins print this version for `<plugin> version` (what their release build stamps).
            (cd "$cni_src" && env "${env[@]}" nice -n "$nice_level" go build -v -p "$jobs" -trimpath \
                "-ldflags=-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$cni_version" \
                -o "$net_out/bin.tmp/cni/" \
                github.com/containernetworking/plugins/plugins/main/bridge \
                github.com/containernetworking/plugins/plugins/ipam/host-local \
                github.com/containernetworking/plugins/plugins/main/loopback \
                github.com/containernetworking/plugins/plugins/meta/portmap) >&2 ||
                die "build CNI plugins failed (see the output above)"
            log "build CNI plugins $cni_version: done in $(($(date +%s) - t1)) s"
            t1=$(date +%s)
            log "build kube-proxy $k8s_version: starting"
            (cd "$build_src/kubernetes" && env "${env[@]}" nice -n "$nice_level" go build -v -p "$jobs" -trimpath \
                "-ldflags=$k8s_ldflags" -o "$net_out/bin.tmp/kube-proxy" k8s.io/kubernetes/cmd/kube-proxy) >&2 ||
                die "build kube-proxy failed (see the output above)"
            log "build kube-proxy $k8s_version: done in $(($(date +%s) - t1)) s"
            for b in etcd kube-proxy "${cni_plugins[@]/#/cni/}"; do
                [[ -x "$net_out/bin.tmp/$b" ]] || die "missing $b after the build"
            done
            rm -rf "$nbin"
            mv "$net_out/bin.tmp" "$nbin"
            printf 'etcd %s cni %s kube-proxy %s %s built %s in %ss\n' "$etcd_version" "$cni_version" "$k8s_version" \
                "$go_version" "$(date -u +%FT%TZ)" "$(($(date +%s) - t0))" >"$nbin/.stamp"
            log "build etcd, CNI plugins, kube-proxy: done in $(($(date +%s) - t0)) s"
            while IFS= read -r stale; do
                [[ "$stale" == "$net_out" ]] || { log "removing old build $stale" && rm -rf "$stale"; }
            done < <(ls -1dt "$cache_root"/net-* 2>/dev/null | tail -n +3)
        fi
        exec 7>&-
    fi
    ln -sfn "$nbin/etcd" "$bin/etcd"
    ln -sfn "$nbin/kube-proxy" "$bin/kube-proxy"
    mkdir -p "$bin/cni"
    for p in "${cni_plugins[@]}"; do
        ln -sfn "$nbin/cni/$p" "$bin/cni/$p"
    done
}

if [[ -f "$stamp" ]]; then
    link_host_tools
    build_example_driver
    build_net_tools
    log "cache hit: $bin ($(cat "$stamp"))"
    echo "BIN_DIR=$bin"
    exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.build.lock"
log "waiting for the build lock $cache_root/.build.lock"
flock 9
if [[ -f "$stamp" ]]; then # another build finished while we waited
    link_host_tools
    build_example_driver
    build_net_tools
    log "cache hit after wait: $bin"
    echo "BIN_DIR=$bin"
    exit 0
fi

export GOFLAGS=-mod=mod
export GOMODCACHE="$cache_root/go/mod"
export GOCACHE="$cache_root/go/build"
export GOMAXPROCS="$jobs"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
tmp="$out/bin.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
flags=(-v -p "$jobs" -trimpath "-ldflags=-s -w -X github.com/containerd/containerd/v2/version.Version=${containerd_version#v}")

t_all=$(date +%s)
step() { # step <name> <dir> <go args...>
    local name="$1" dir="$2" t0
    shift 2
    t0=$(date +%s)
    log "$name: starting (go ${*:1:1} ...)"
    (cd "$dir" && nice -n "$nice_level" go "$@") >&2 || die "$name failed (see the output above)"
    log "$name: done in $(($(date +%s) - t0)) s"
}

step "download kubernetes modules" "$build_src/kubernetes" mod download
step "download containerd modules" "$build_src/containerd" mod download
step "build containerd $containerd_version" "$build_src/containerd" build "${flags[@]}" -tags no_btrfs -o "$tmp/" \
    github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    github.com/containerd/containerd/v2/cmd/ctr
step "build kubernetes $k8s_version" "$build_src/kubernetes" build -v -p "$jobs" -trimpath "-ldflags=$k8s_ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubelet

for b in kube-apiserver kube-controller-manager kube-scheduler kubelet containerd containerd-shim-runc-v2 ctr; do
    [[ -x "$tmp/$b" ]] || die "missing $tmp/$b after the build"
done
rm -rf "$bin"
mv "$tmp" "$bin"
link_host_tools
build_example_driver
build_net_tools
total=$(($(date +%s) - t_all))
printf 'kubernetes %s containerd %s %s built %s in %ss\n' "$k8s_version" "$containerd_version" "$go_version" \
    "$(date -u +%FT%TZ)" "$total" >"$stamp"
log "built everything in $total s into $bin"
# Keep the three newest builds (other pins, other checkouts); older ones are ~430 MB of dead weight each.
while IFS= read -r stale; do
    [[ "$stale" == "$out" ]] || { log "removing old build $stale" && rm -rf "$stale"; }
done < <(ls -1dt "$cache_root"/k8s-* 2>/dev/null | tail -n +4)
echo "BIN_DIR=$bin"
