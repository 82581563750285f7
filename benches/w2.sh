#!/usr/bin/env bash
# W2 = W1 with a checkpoint every second, against W1 without, in one run (the overhead), for
# K = 100 and 10000 at p = 1 and 2. Prints checkpoint durations and sizes from the history.
#   benches/w2.sh        # N=10M
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-10000000}"
cargo build --release -q -p rill
echo "| K | p | W1 secs | W2 secs | overhead | checkpoints | median ckpt ms | max ckpt ms | median ckpt bytes |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for k in 100 10000; do
  for p in 1 2; do
    w=$(mktemp -d)
    w1=$(target/release/rill run examples/w1.yaml --set "parallelism=$p" --set "sources.events.count=$N" --set "sources.events.fields.key=id % $k" \
      --set "work_dir=$w/w1" --progress never 2>&1 | sed -n 's/.*finished in \([0-9.]*\) s.*/\1/p')
    w2=$(target/release/rill run examples/w1.yaml --set "parallelism=$p" --set "sources.events.count=$N" --set "sources.events.fields.key=id % $k" \
      --set "work_dir=$w/w2" --set "checkpoint={interval: 1s}" --from-scratch --progress never 2>&1 | sed -n 's/.*finished in \([0-9.]*\) s.*/\1/p')
    stats=$(python3 - "$w/w2/checkpoints/history.jsonl" <<'PY'
import json, statistics, sys
h = [json.loads(l) for l in open(sys.argv[1])] if __import__("os").path.exists(sys.argv[1]) else []
if not h:
    print("0 - - -")
else:
    d = [x["duration_ms"] for x in h]; b = [x["bytes"] for x in h]
    print(len(h), statistics.median(d), max(d), int(statistics.median(b)))
PY
)
    read -r n med mx bytes <<<"$stats"
    echo "| $k | $p | $w1 | $w2 | $(awk -v a="$w1" -v b="$w2" 'BEGIN {printf "%+.1f%%", (b / a - 1) * 100}') | $n | $med | $mx | $bytes |"
    rm -rf "$w"
  done
done
