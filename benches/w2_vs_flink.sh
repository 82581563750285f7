#!/usr/bin/env bash
# W2 (W1 with checkpoints every second, K = 10000) side by side in one run: Rill at p = 1 and 2,
# then Apache Flink's W2 with its heap and RocksDB backends (../shared/peers/flink).
#   benches/w2_vs_flink.sh                                   # N=10M, one run each
#   N=50000000 REPEAT=3 ROCKSDB_REPEAT=1 benches/w2_vs_flink.sh
# Prints one line per run and a median table; run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-10000000}"
REPEAT="${REPEAT:-1}"
ROCKSDB_REPEAT="${ROCKSDB_REPEAT:-$REPEAT}" # RocksDB runs 10-50x longer than the rest; 0 leaves it out
cargo build --release -q -p rill
results=$(mktemp)
source benches/common.sh
print_host

for ((r = 1; r <= REPEAT; r++)); do
  for p in 1 2; do
    w=$(mktemp -d)
    secs=$(target/release/rill run examples/w1.yaml --set "parallelism=$p" --set "sources.events.count=$N" \
      --set "work_dir=$w" --set "checkpoint={interval: 1s}" --from-scratch --progress never 2>&1 | sed -n 's/.*finished in \([0-9.]*\) s.*/\1/p')
    n=$(wc -l < "$w/checkpoints/history.jsonl" 2>/dev/null || echo 0)
    echo "rill p=$p secs=$secs checkpoints=$n" | tee -a "$results"
    rm -rf "$w"
  done
done
flink() { # workload repeat
  WORKLOADS="$1" REPEAT="$2" N="$N" TINY_N= ../shared/peers/flink/run.sh 2>/dev/null | \
    sed -n 's/^flink W2-\([a-z]*\) p=\([0-9]\) .* net_secs=\([0-9.]*\) .* checkpoints=\([0-9]*\).*/flink-\1 p=\2 secs=\3 checkpoints=\4/p' | tee -a "$results"
}
flink W2-hashmap "$REPEAT"
if ((ROCKSDB_REPEAT > 0)); then flink W2-rocksdb "$ROCKSDB_REPEAT"; fi

python3 - "$results" "$N" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    kv = dict(x.split("=", 1) for x in f[1:])
    rows.setdefault((f[0], kv["p"]), []).append((float(kv["secs"]), int(kv["checkpoints"])))
n = int(sys.argv[2])
med = lambda rs: statistics.median(s for s, _ in rs)
print("\n| engine | p | runs (secs) | median secs | events/s | checkpoints | vs Flink heap | vs Flink RocksDB |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for (eng, p), rs in sorted(rows.items(), key=lambda x: (x[0][0] != "rill", x[0])):
    m = med(rs)
    vs = lambda peer: f"{med(rows[(peer, p)]) / m:.2f}x" if eng == "rill" and (peer, p) in rows else ""
    runs = ", ".join(f"{s:.3f}" for s, _ in rs)
    print(f"| {eng} | {p} | {runs} | {m:.3f} | {n / m:,.0f} | {rs[0][1]} | {vs('flink-hashmap')} | {vs('flink-rocksdb')} |")
PY
rm -f "$results"
