#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules into a cache outside
# the repository, keyed by the pinned versions; prints the cache directory.
# Binaries already in the cache are reused.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

key=$(cat "$here/go.mod" "$here/go.sum" "$here/etcd/main.go" "$here/versions.env" | sha256sum | cut -c1-12)
bin="${PODIUM_CACHE:-$HOME/.cache/podium}/k8s-${K8S_VERSION}-${key}"
mkdir -p "$bin"

export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
# Two compile jobs at once keep peak memory well inside a small machine.
par=${PODIUM_BUILD_JOBS:-2}

ver_flags() {
  local v=$K8S_VERSION major minor
  major=$(echo "${v#v}" | cut -d. -f1)
  minor=$(echo "${v#v}" | cut -d. -f2)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    printf -- '-X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
      "$pkg" "$v" "$pkg" "$major" "$pkg" "$minor" "$pkg"
  done
}

build_k8s() {
  local name=$1 pkg=$2
  [ -x "$bin/$name" ] && return 0
  echo "building $name" >&2
  (cd "$here" && go build -p "$par" -ldflags "-s -w $(ver_flags)" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
}

build_k8s etcd ./etcd
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
  build_k8s "$c" "k8s.io/kubernetes/cmd/$c"
done

# kwok is an ordinary module, so it installs straight from the module proxy.
for c in kwok kwokctl; do
  if [ ! -x "$bin/$c" ]; then
    echo "building $c" >&2
    GOBIN="$bin" go install -p "$par" -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}" \
      "sigs.k8s.io/kwok/cmd/$c@${KWOK_VERSION}"
  fi
done

echo "$bin"
