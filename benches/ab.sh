#!/usr/bin/env bash
# Failover trials of two operator builds, alternating on the running local cluster:
#   benches/ab.sh OLD_BIN NEW_BIN [ROUNDS=4] [TRIALS=50]
# Each round runs the bench's failover trials (leader deleted, leader NotReady) once per build,
# everything else off; results go to target/bench-ab/<round>-<a|b>/results.json, and the
# pooled medians and p99 per build are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$(realpath "$1"); new=$(realpath "$2"); rounds=${3:-4}; trials=${4:-50}
out=target/bench-ab
mkdir -p "$out"
cargo bench --bench bench --no-run >/dev/null 2>&1
for r in $(seq 1 "$rounds"); do
  for side in a b; do
    bin=$old; [ "$side" = b ] && bin=$new
    dir="$out/$r-$side"
    echo "round $r, build $side ($bin)"
    PODIUM_BIN=$bin BENCH_OUT=$dir BENCH_TRIALS=$trials BENCH_APP_TRIALS=0 BENCH_IDLE_SECONDS=0 \
      BENCH_HANDOFFS=0 BENCH_LEASE_KILLS=0 BENCH_LEASE_RELEASES=0 BENCH_LEASE_TUNED_KILLS=0 \
      BENCH_KIND_TRIALS=0 BENCH_NODE_LOSS_TRIALS=0 BENCH_KIND_LEASE_TRIALS=0 BENCH_SCALES=none \
      BENCH_RAW_SWEEP=none cargo bench --bench bench >"$dir.log" 2>&1
  done
done
python3 - "$out" "$rounds" <<'PY'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
for kind in ("failover_delete_ms", "failover_unready_ms"):
    for side, name in (("a", "old"), ("b", "new")):
        v = []
        for r in range(1, rounds + 1):
            v += json.load(open(f"{out}/{r}-{side}/results.json"))["samples"][kind]
        print(f"{kind} {name}: n={len(v)} p50={pct(v,50):.1f} p90={pct(v,90):.1f} p99={pct(v,99):.1f} max={max(v):.1f}")
PY
