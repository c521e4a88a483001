#!/usr/bin/env bash
# Starts the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok with fake nodes) on loopback, and writes an admin
# kubeconfig to target/cluster/kubeconfig. A no-op when it is already up.
# PODIUM_CLUSTER=<x> starts a second, independent cluster: kwokctl name podium-<x>,
# state and kubeconfig in target/cluster-<x> (kwokctl picks free ports, so both run at once).
# K8S_VERSION=1.<minor> selects the Kubernetes minor (build.sh); a cluster already up on
# another release is refused: down.sh first.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
suffix=${PODIUM_CLUSTER:+-$PODIUM_CLUSTER}
state="$root/target/cluster$suffix"
kubeconfig="$state/kubeconfig"
name=podium$suffix

bin=$("$here/build.sh")
kubectl=("$bin/kubectl" --kubeconfig "$kubeconfig")
export KWOK_WORKDIR="$state/kwok"

# The real node (a real kubelet, e2e/node) belongs to the default cluster only: one per machine.
real_node() {
  if [ -z "$suffix" ] && [ "${PODIUM_REAL_NODE:-1}" != 0 ]; then
    "$root/e2e/node/up.sh" "$state" "$bin"
  fi
}

if [ -f "$kubeconfig" ] && [ "$("${kubectl[@]}" get --raw /readyz 2>/dev/null)" = ok ]; then
  # The binaries it was started from (a link written below): another release is not reused.
  running=$(readlink "$state/bin" 2>/dev/null || true)
  if [ -n "$running" ] && [ "$running" != "$bin" ]; then
    echo "a cluster of $(basename "$running" | cut -d- -f2) is up in $state, not of $(basename "$bin" | cut -d- -f2):" \
      "stop it first (make cluster-down, or e2e/cluster/down.sh with the same PODIUM_CLUSTER)" >&2
    exit 1
  fi
  real_node
  echo "cluster already up ($(basename "$bin" | cut -d- -f2)): $kubeconfig"
  exit 0
fi

# A cluster left half-started (or a stale state directory) is removed first.
if [ -d "$state" ]; then
  [ -z "$suffix" ] && "$root/e2e/node/down.sh" "$state" "$bin" >/dev/null
  "$bin/kwokctl" delete cluster --name "$name" >/dev/null 2>&1 || true
  rm -rf "$state"
fi
mkdir -p "$state"
# down.sh stops the cluster with the binaries it was started from, whatever K8S_VERSION says then.
ln -sfn "$bin" "$state/bin"

sed "s#\${PKI}#$KWOK_WORKDIR/clusters/$name/pki#g" "$here/kwokctl.yaml" >"$state/kwokctl.yaml"
"$bin/kwokctl" create cluster --name "$name" -c "$state/kwokctl.yaml" \
  --kubeconfig "$kubeconfig" \
  --etcd-binary "$bin/etcd" \
  --kube-apiserver-binary "$bin/kube-apiserver" \
  --kube-controller-manager-binary "$bin/kube-controller-manager" \
  --kube-scheduler-binary "$bin/kube-scheduler" \
  --kwok-controller-binary "$bin/kwok" \
  --quiet-pull --wait 3m >"$state/create.log" 2>&1 || {
  cat "$state/create.log" >&2
  exit 1
}
ln -sfn "kwok/clusters/$name/logs" "$state/logs"
# The tools' own kubectl, so scripts do not depend on one installed on the machine.
ln -sfn "$bin/kubectl" "$state/kubectl"

"${kubectl[@]}" apply -f "$here/nodes.yaml" >/dev/null
"${kubectl[@]}" wait --for=condition=Ready node --all --timeout=120s >/dev/null
# Pods need the default ServiceAccount, which the controller manager creates.
for _ in $(seq 1 120); do
  "${kubectl[@]}" -n default get serviceaccount default >/dev/null 2>&1 && break
  sleep 0.5
done
real_node
echo "cluster up ($(basename "$bin" | cut -d- -f2)): export KUBECONFIG=$kubeconfig"
