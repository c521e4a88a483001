#!/usr/bin/env bash
# `make demo`: brings the local cluster up, installs the CRD, starts the operator in the
# background, applies the sample app and ElectionGroup, and shows the result. The sample runs on
# kwok's nodes, so a machine without what real-node-0 needs runs the demo without that node.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ "${PODIUM_REAL_NODE:-1}" != 0 ] && ! missing=$(e2e/node/check.sh); then
  echo "real-node-0 left out: it needs $missing (make deps installs the packages, as root); the demo runs on kwok's nodes"
  export PODIUM_REAL_NODE=0
fi
e2e/cluster/up.sh
export KUBECONFIG="$root/target/cluster/kubeconfig"
kubectl="$root/target/cluster/kubectl"
state="$root/target/demo"
mkdir -p "$state"

"$kubectl" apply --server-side -f crds/electiongroup.yaml >/dev/null
"$kubectl" wait --for=condition=Established crd/electiongroups.podium.dev --timeout=30s >/dev/null

if [ -f "$state/podium.pid" ] && kill -0 "$(cat "$state/podium.pid")" 2>/dev/null; then
  echo "operator already running (pid $(cat "$state/podium.pid"))"
else
  nohup target/debug/podium run --kubeconfig "$KUBECONFIG" --http-addr 127.0.0.1:8080 \
    >"$state/podium.log" 2>&1 &
  echo $! >"$state/podium.pid"
  echo "operator started (pid $!, log target/demo/podium.log, metrics http://127.0.0.1:8080/metrics)"
fi

"$kubectl" apply -k config/samples >/dev/null
"$kubectl" rollout status deployment/api --timeout=60s >/dev/null
leader=
for _ in $(seq 1 60); do
  leader=$("$kubectl" get eg api -o jsonpath='{.status.leader}' 2>/dev/null || true)
  [ -n "$leader" ] && break
  kill -0 "$(cat "$state/podium.pid")" 2>/dev/null || {
    echo "the operator stopped; its log: target/demo/podium.log" >&2
    tail -5 "$state/podium.log" >&2
    exit 1
  }
  sleep 0.5
done
if [ -z "$leader" ]; then
  echo "no leader after 30 s; see kubectl describe eg api and target/demo/podium.log" >&2
  "$kubectl" describe eg api >&2 || true
  exit 1
fi

echo
echo "\$ kubectl get eg"
"$kubectl" get eg
echo
echo "\$ kubectl get pods -L podium.dev/role"
"$kubectl" get pods -L podium.dev/role
echo
echo "\$ kubectl get endpointslices -l kubernetes.io/service-name=api-leader"
"$kubectl" get endpointslices -l kubernetes.io/service-name=api-leader
echo
echo "Try: kubectl delete pod $leader   (then kubectl get eg again)"
echo "     kubectl annotate eg api podium.dev/handoff-to=any"
echo "Stop the operator with: make demo-down"
