#!/usr/bin/env bash
# Online learning throughput in one run (BENCHMARKS.md, "Online learning"): River in Python, the
# hand-written Rust loop (examples/src/bin/lr-hand.rs) and Rill (benches/learn.yaml), the same
# stream and settings; then Rill's probabilities against River's on the first N_RIVER records.
#   benches/learn.sh               # N=10M for Rill and the loop, N_RIVER=200k, REPEAT=3
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-10000000}"
N_RIVER="${N_RIVER:-200000}"
REPEAT="${REPEAT:-3}"
cargo build --release -q -p rill -p rill-examples
source benches/common.sh
print_host
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

.venv/bin/python benches/learn_river.py "$N_RIVER" "$tmp/river.txt"
# Rill's scores of the same records, to the file, for the comparison.
target/release/rill run benches/learn.yaml --set "sources.events.count=$N_RIVER" --set "work_dir=$tmp/w0" \
  --set "sinks.discard.type=file" --set "sinks.discard.path=$tmp/rill.jsonl" --progress never >/dev/null 2>&1
python3 - "$tmp/river.txt" "$tmp/rill.jsonl" <<'PY'
import json, sys
river = [float(l) for l in open(sys.argv[1])]
rill = [json.loads(l)["probability"] for l in open(sys.argv[2])]
assert len(river) == len(rill), (len(river), len(rill))
print(f"same predictions as River: {len(rill)} records, largest difference {max(abs(a - b) for a, b in zip(river, rill)):.3e}")
PY
# River as the issue measured it: progressive_val_score over the Phishing data set (its CSV
# reader and an Accuracy metric included), 20 passes.
.venv/bin/python - <<'PY'
import time
from river import datasets, evaluate, linear_model, metrics, optim
start, n = time.perf_counter(), 0
for _ in range(20):
    model = linear_model.LogisticRegression(optimizer=optim.SGD(0.1), intercept_lr=0.1)
    evaluate.progressive_val_score(datasets.Phishing(), model, metrics.Accuracy())
    n += 1250
secs = time.perf_counter() - start
print(f"river progressive_val_score on Phishing n={n} secs={secs:.3f} rps={n / secs:.0f}")
PY
for ((r = 1; r <= REPEAT; r++)); do
  target/release/lr-hand gen "$N"
  out=$(target/release/rill run benches/learn.yaml --set "sources.events.count=$N" --set "work_dir=$tmp/w$r" --progress never 2>&1)
  secs=$(sed -n 's/.*finished in \([0-9.]*\) s.*/\1/p' <<<"$out")
  echo "rill n=$N secs=$secs rps=$(python3 -c "print(round($N / $secs))")"
done
