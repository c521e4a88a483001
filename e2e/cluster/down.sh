#!/usr/bin/env bash
# Stops the processes the local control plane started (kwokctl keeps their pid
# files) and removes its state. PODIUM_CLUSTER=<x> stops the cluster up.sh started
# under the same name, whichever Kubernetes release it runs (up.sh links its binaries as bin).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
suffix=${PODIUM_CLUSTER:+-$PODIUM_CLUSTER}
state="$root/target/cluster$suffix"
name=podium$suffix
[ -d "$state" ] || { echo "cluster is not up"; exit 0; }

if [ -x "$state/bin/kwokctl" ]; then
  bin=$(readlink -f "$state/bin")
else
  bin=$("$here/build.sh")
fi
[ -z "$suffix" ] && "$root/e2e/node/down.sh" "$state" "$bin"
KWOK_WORKDIR="$state/kwok" "$bin/kwokctl" delete cluster --name "$name" >/dev/null 2>&1 || true
# Anything kwokctl could not stop is stopped by its pid file.
for pidfile in "$state"/kwok/clusters/$name/pids/*.pid; do
  [ -f "$pidfile" ] || continue
  kill "$(cat "$pidfile")" 2>/dev/null || true
done
rm -rf "$state"
echo "cluster down"
