#!/usr/bin/env bash
# W2 (W1 with checkpoints every second, K = 10000) side by side in one run: Rill at p = 1 and 2,
# then Apache Flink's W2 with its heap and RocksDB backends (../shared/peers/flink).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-10000000}"
cargo build --release -q -p rill
for p in 1 2; do
  w=$(mktemp -d)
  secs=$(target/release/rill run examples/w1.yaml --set "parallelism=$p" --set "sources.events.count=$N" \
    --set "work_dir=$w" --set "checkpoint={interval: 1s}" --from-scratch --progress never 2>&1 | sed -n 's/.*finished in \([0-9.]*\) s.*/\1/p')
  n=$(wc -l < "$w/checkpoints/history.jsonl" 2>/dev/null || echo 0)
  echo "rill W2 p=$p secs=$secs eps=$(awk -v n="$N" -v s="$secs" 'BEGIN {printf "%.0f", n / s}') checkpoints=$n"
  rm -rf "$w"
done
WORKLOADS="W2-hashmap W2-rocksdb" N="$N" TINY_N= ../shared/peers/flink/run.sh 2>/dev/null | \
  sed -n 's/^flink \(W2-[a-z]*\) p=\([0-9]\) .* net_secs=\([0-9.]*\) net_eps=\([0-9]*\) checkpoints=\([0-9]*\).*/flink \1 p=\2 net_secs=\3 net_eps=\4 checkpoints=\5/p'
