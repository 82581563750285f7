#!/usr/bin/env bash
# W1 side by side, in one run: the hand-written loop, Rill (state in sled) at p=1 and 2, and
# Apache Flink's W1 (heap state) from ../shared/peers/flink, for K = 100 and K = 10000 keys.
#   benches/w1.sh                   # N=10M, REPEAT=1; FLINK=0 leaves Flink out
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-10000000}"
REPEAT="${REPEAT:-1}"
FLINK="${FLINK:-1}"
KEYS="${KEYS:-100 10000}"
cargo build --release -q -p rill -p rill-examples -p rill-torch
results=$(mktemp)
source benches/common.sh
print_host

for k in $KEYS; do
  for ((r = 1; r <= REPEAT; r++)); do
    line=$(target/release/w1-hand "$N" "$k")
    echo "hand-loop K=$k p=1 secs=$(sed -n 's/.*secs=\([0-9.]*\).*/\1/p' <<<"$line") windows=$(sed -n 's/.*windows=\([0-9]*\).*/\1/p' <<<"$line")" | tee -a "$results"
    for p in 1 2; do
      out=$(target/release/rill run examples/w1.yaml --set "parallelism=$p" --set "sources.events.count=$N" \
        --set "sources.events.fields.key=id % $k" --set "work_dir=$(mktemp -d)" --progress never 2>&1)
      job=$(sed -n 's/.*finished in \([0-9.]*\) s.*/\1/p' <<<"$out")
      windows=$(awk '$1 == "per_key" {print $5}' <<<"$out")
      echo "rill K=$k p=$p secs=$job windows=$windows" | tee -a "$results"
    done
  done
  if [[ "$FLINK" == 1 ]]; then
    WORKLOADS=W1 REPEAT="$REPEAT" N="$N" TINY_N= EXTRA_ARGS="--keys $k" ../shared/peers/flink/run.sh 2>/dev/null | while read -r l; do
      p=$(sed -n 's/.* p=\([0-9]*\) .*/\1/p' <<<"$l")
      echo "flink K=$k p=$p secs=$(sed -n 's/.* net_secs=\([0-9.]*\).*/\1/p' <<<"$l") windows=$(sed -n 's/.* windows=\([0-9]*\).*/\1/p' <<<"$l") wall_secs=$(sed -n 's/.* secs=\([0-9.]*\).*/\1/p' <<<"$l")" | tee -a "$results"
    done
  fi
done

python3 - "$results" "$N" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    kv = dict(x.split("=", 1) for x in f[1:])
    rows.setdefault((kv["K"], f[0], kv["p"]), []).append((float(kv["secs"]), kv.get("windows")))
n = int(sys.argv[2])
print("\n| K | engine | p | runs | median secs | events/s | windows | vs hand loop | vs Flink heap (same K, p) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for (k, eng, p), rs in sorted(rows.items(), key=lambda x: (int(x[0][0]), x[0][1], x[0][2])):
    m = statistics.median(s for s, _ in rs)
    hand = statistics.median(s for s, _ in rows[(k, "hand-loop", "1")])
    fl = rows.get((k, "flink", p))
    vs = f"{statistics.median(s for s, _ in fl) / m:.2f}x" if fl and eng == "rill" else ""
    print(f"| {k} | {eng} | {p} | {len(rs)} | {m:.3f} | {n / m:,.0f} | {rs[0][1]} | {hand / m:.3f} | {vs} |")
PY
rm -f "$results"
