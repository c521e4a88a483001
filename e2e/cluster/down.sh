#!/usr/bin/env bash
# Stops the processes the local control plane started (kwokctl keeps their pid
# files) and removes its state.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
state="$root/target/cluster"
[ -d "$state" ] || { echo "cluster is not up"; exit 0; }

bin=$("$here/build.sh")
KWOK_WORKDIR="$state/kwok" "$bin/kwokctl" delete cluster --name podium >/dev/null 2>&1 || true
# Anything kwokctl could not stop is stopped by its pid file.
for pidfile in "$state"/kwok/clusters/podium/pids/*.pid; do
  [ -f "$pidfile" ] || continue
  kill "$(cat "$pidfile")" 2>/dev/null || true
done
rm -rf "$state"
echo "cluster down"
