#!/usr/bin/env bash
# W0 side by side, in one run on one machine: the hand-written loop, Rill at p=1 and p=2,
# and (unless FLINK=0) Apache Flink's W0 from ../shared/peers/flink.
#   benches/w0.sh                 # N=10M, 3 repeats, median
#   N=100000000 REPEAT=1 benches/w0.sh
# Prints one line per run and a median table; run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-10000000}"
REPEAT="${REPEAT:-3}"
FLINK="${FLINK:-1}"
cargo build --release -q -p rill -p rill-examples -p rill-torch
RILL=target/release/rill
results=$(mktemp)

source benches/common.sh
print_host

for ((r = 1; r <= REPEAT; r++)); do
  line=$(target/release/w0-hand "$N")
  secs=$(sed -n 's/.*secs=\([0-9.]*\).*/\1/p' <<<"$line")
  echo "hand-loop p=1 secs=$secs" | tee -a "$results"
  for p in 1 2; do
    start=$(date +%s.%N)
    out=$($RILL run examples/w0.yaml --set "parallelism=$p" --set "sources.events.count=$N" --progress never 2>&1)
    end=$(date +%s.%N)
    job=$(sed -n 's/.*finished in \([0-9.]*\) s.*/\1/p' <<<"$out")
    kept=$(awk '$1 == "discard" && $2 == "blackhole" {print $4}' <<<"$out")
    echo "rill p=$p secs=$job proc_secs=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", b - a}') kept=$kept" | tee -a "$results"
  done
done

if [[ "$FLINK" == 1 ]]; then
  WORKLOADS=W0 REPEAT="$REPEAT" N="$N" TINY_N= ../shared/peers/flink/run.sh 2>/dev/null | while read -r l; do
    p=$(sed -n 's/.* p=\([0-9]*\) .*/\1/p' <<<"$l")
    net=$(sed -n 's/.* net_secs=\([0-9.]*\).*/\1/p' <<<"$l")
    secs=$(sed -n 's/.* secs=\([0-9.]*\).*/\1/p' <<<"$l")
    echo "flink p=$p secs=$net wall_secs=$secs" | tee -a "$results"
  done
fi

python3 - "$results" "$N" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    kv = dict(x.split("=", 1) for x in f[1:])
    # Rill's figure is its whole process, start to exit (Flink's is its net job time).
    rows.setdefault((f[0], kv["p"]), []).append(float(kv.get("proc_secs", kv["secs"])))
n = int(sys.argv[2])
hand = statistics.median(rows[("hand-loop", "1")])
print(f"\n| engine | p | runs | median secs | events/s | vs hand loop | vs Flink (same p) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for (eng, p), secs in sorted(rows.items()):
    m = statistics.median(secs)
    fl = rows.get(("flink", p))
    vs_flink = f"{statistics.median(fl) / m:.2f}x" if fl and eng == "rill" else ""
    print(f"| {eng} | {p} | {len(secs)} | {m:.3f} | {n / m:,.0f} | {hand / m:.3f} | {vs_flink} |")
PY
rm -f "$results"
