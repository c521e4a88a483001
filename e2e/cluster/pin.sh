#!/usr/bin/env bash
# Writes the pinned module set of one Kubernetes minor: e2e/cluster/v1.<minor>/{go.mod,go.sum,versions.env}.
# k8s.io/kubernetes refers to its staging modules (k8s.io/api, k8s.io/client-go, ...) as v0.0.0
# through local replace directives, which do not apply to a module that requires it; the go.mod
# written here pins each staging module to the release that matches the Kubernetes one.
#   pin.sh K8S_RELEASE ETCD_RELEASE KWOK_RELEASE     e.g. pin.sh v1.37.2 v3.7.0 v0.8.0
# ETCD_RELEASE is the etcd the release is tested with: the "etcd" entry of build/dependencies.yaml
# in the Kubernetes source (the module cache holds it after `go mod download k8s.io/kubernetes@...`).
set -euo pipefail

[ $# -eq 3 ] || { echo "usage: $0 K8S_RELEASE ETCD_RELEASE KWOK_RELEASE" >&2; exit 2; }
k8s=$1 etcd=$2 kwok=$3
here=$(cd "$(dirname "$0")" && pwd)
minor=$(echo "${k8s#v}" | cut -d. -f2)
patch=$(echo "${k8s#v}" | cut -d. -f3)
staging="v0.${minor}.${patch}"
dir="$here/v1.${minor}"
mkdir -p "$dir"

src=$(go mod download -json "k8s.io/kubernetes@${k8s}" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
gover=$(sed -n 's/^go //p' "$src/go.mod")
mods=$(sed -n '/^replace (/,/^)/p' "$src/go.mod" | awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}')

{
  echo "// The control plane of Kubernetes ${k8s} (etcd ${etcd}): written by e2e/cluster/pin.sh, then go mod tidy."
  echo "module podium.dev/e2e/cluster/v1.${minor}"
  echo
  echo "go ${gover}"
  echo
  echo "require ("
  echo "	go.etcd.io/etcd/server/v3 ${etcd}"
  echo "	k8s.io/kubernetes ${k8s}"
  echo ")"
  echo
  echo "replace ("
  for m in $mods; do echo "	$m => $m ${staging}"; done
  echo ")"
  echo
  echo "tool ("
  echo "	go.etcd.io/etcd/server/v3"
  for c in kube-apiserver kube-controller-manager kube-proxy kube-scheduler kubectl kubelet; do
    echo "	k8s.io/kubernetes/cmd/$c"
  done
  echo ")"
} >"$dir/go.mod"
rm -f "$dir/go.sum"
(cd "$dir" && go mod tidy)

cat >"$dir/versions.env" <<EOF
# Pinned versions of the local control plane on Kubernetes 1.${minor} (see go.mod for the Go
# modules; written by e2e/cluster/pin.sh).
K8S_RELEASE=${k8s}
ETCD_RELEASE=${etcd}
KWOK_RELEASE=${kwok}
EOF
echo "$dir"
