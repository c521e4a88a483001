#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules into a cache outside the
# repository, keyed by the pinned versions; prints the cache directory. Binaries already in
# the cache are reused.
# K8S_VERSION=1.<minor> (default: versions.env) selects the Kubernetes minor: its module set is
# v1.<minor>/ (go.mod, go.sum, versions.env; written by pin.sh), and it builds into a cache
# directory of its own, ~/.cache/podium/k8s-<release>-<key>.
# PODIUM_REAL_NODE=0 leaves out the real node's kubelet and kube-proxy (built when first needed).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
minor=$(echo "${K8S_VERSION:-$K8S_DEFAULT}" | sed -E 's/^v//; s/^([0-9]+\.[0-9]+).*/\1/')
mods="$here/v$minor"
[ -f "$mods/go.mod" ] || {
  echo "K8S_VERSION=${K8S_VERSION:-}: no module set $mods (supported: $(cd "$here" && ls -d v1.* | tr -d v | tr '\n' ' '))" >&2
  exit 2
}
# shellcheck source=v1.37/versions.env
source "$mods/versions.env"

key=$(cat "$mods/go.mod" "$mods/go.sum" "$mods/versions.env" | sha256sum | cut -c1-12)
bin="${PODIUM_CACHE:-$HOME/.cache/podium}/k8s-${K8S_RELEASE}-${key}"
mkdir -p "$bin"

export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
# Two compile jobs at once keep peak memory well inside a small machine.
par=${PODIUM_BUILD_JOBS:-2}

ver_flags() {
  local v=$K8S_RELEASE major minor
  major=$(echo "${v#v}" | cut -d. -f1)
  minor=$(echo "${v#v}" | cut -d. -f2)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    printf -- '-X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
      "$pkg" "$v" "$pkg" "$major" "$pkg" "$minor" "$pkg"
  done
}

build() {
  local name=$1 pkg=$2 flags=$3
  [ -x "$bin/$name" ] && return 0
  echo "building $name ($pkg)" >&2
  local t0=$SECONDS
  (cd "$mods" && go build -p "$par" -ldflags "-s -w $flags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  echo "built $name in $((SECONDS - t0)) s" >&2
}

# etcd's server module is its main package; the version etcd reports comes from its api module.
build etcd go.etcd.io/etcd/server/v3 ""
components=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
[ "${PODIUM_REAL_NODE:-1}" = 0 ] || components+=(kubelet kube-proxy)
for c in "${components[@]}"; do
  build "$c" "k8s.io/kubernetes/cmd/$c" "$(ver_flags)"
done

# kwok is an ordinary module, so it installs straight from the module proxy, with its own go.mod;
# one build of a kwok release serves every Kubernetes minor that pins it (kwokctl reads each
# component's version from its binary and picks the flags for it).
kw="${PODIUM_CACHE:-$HOME/.cache/podium}/kwok-${KWOK_RELEASE}"
for c in kwok kwokctl; do
  if [ ! -x "$kw/$c" ]; then
    echo "building $c" >&2
    t0=$SECONDS
    mkdir -p "$kw"
    GOBIN="$kw" go install -p "$par" -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_RELEASE}" \
      "sigs.k8s.io/kwok/cmd/$c@${KWOK_RELEASE}"
    echo "built $c in $((SECONDS - t0)) s" >&2
  fi
  ln -sfn "$kw/$c" "$bin/$c"
done

echo "$bin"
