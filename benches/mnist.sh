#!/usr/bin/env bash
# MNIST inference side by side, in one run, on the same machine, model and batch sizes:
#   (a) raw tch on pre-made batches (target/release/mnist-raw: the limit), in one loop and in
#       Rill's layout of 2 worker threads,
#   (b) Rill: file source → infer (2 workers) → discarding sink, as fast as it reads
#       (throughput: of the whole job, and net of the same job on one record — LibTorch opened,
#       model loaded, warm-up — which raw tch does before its clock starts) and paced at RATE
#       images/s (latency),
#   (c) Python + PyTorch, one record at a time, (d) the same in batches.
# Images/s and latency p50/p99 for max_batch_size 1, 32, 256 and max_delay 1 ms, 10 ms.
#   benches/mnist.sh          # PASSES=10 (10 000 images), REPEAT=3 (medians), RATE=1000, PACED_N=3000
set -euo pipefail
cd "$(dirname "$0")/.."
PASSES="${PASSES:-10}"
REPEAT="${REPEAT:-3}"
RATE="${RATE:-1000}"
PACED_N="${PACED_N:-3000}"
SIZES="${SIZES:-1 32 256}"
DELAYS="${DELAYS:-1ms 10ms}"
cargo build --release -q -p rill -p rill-examples -p rill-torch
source benches/common.sh
print_host
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for ((i = 0; i < PASSES; i++)); do cat data/mnist_stream.csv; done > "$work/digits.csv"
head -n "$PACED_N" "$work/digits.csv" > "$work/paced.csv"
head -n 1 "$work/digits.csv" > "$work/one.csv"
n=$(wc -l < "$work/digits.csv")
echo "# $n images (the 1000 stream digits x $PASSES); paced runs: $PACED_N images at $RATE/s" >&2
results="$work/results"

rill_run() { # size delay csv [rate]
  local extra=()
  [[ -n "${4:-}" ]] && extra=(--set "sources.digits.rate=$4")
  target/release/rill run benches/mnist_bench.yaml --progress never --set "sources.digits.path=$3" \
    --set "transforms.predicted.batch.max_size=$1" --set "transforms.predicted.batch.max_delay=$2" \
    --set "work_dir=$work/w" "${extra[@]}" 2>&1
}
fields() { python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print("ips=%s p50=%s p99=%s" % (d["images_per_s"], d["p50_ms"], d["p99_ms"]))' "$1"; }
p50() { sed -n "s/.*$1 latency from source: p50 \([0-9.]*\) ms, p99 \([0-9.]*\) ms.*/\1 \2/p"; }

for ((rep = 1; rep <= REPEAT; rep++)); do
for b in $SIZES; do
  # Raw tch in both layouts: one loop with every core as intra-op threads, and Rill's own
  # layout (2 workers, cores/2 threads each). "vs raw tch" compares with the faster one.
  for w in 1 2; do
    raw=$(target/release/mnist-raw models/mnist_cnn.pt "$work/digits.csv" "$b" - 1 "$w")
    echo "raw-tch-${w}w batch=$b delay=- rep=$rep $(fields "$raw")" | tee -a "$results"
  done
  py=$(.venv/bin/python benches/mnist_py.py models/mnist_cnn.pt "$work/digits.csv" --batch "$b")
  name=python-batched; [[ "$b" == 1 ]] && name=python-per-record
  echo "$name batch=$b delay=- $(fields "$py")" | tee -a "$results"
  for d in $DELAYS; do
    out=$(rill_run "$b" "$d" "$work/digits.csv")
    secs=$(sed -n 's/.*finished in \([0-9.]*\) s.*/\1/p' <<<"$out")
    read -r l50 l99 <<<"$(p50 discard <<<"$out")"
    echo "rill batch=$b delay=$d ips=$(python3 -c "print(round($n / $secs, 1))") p50=$l50 p99=$l99" | tee -a "$results"
    # Net of what raw tch does before its clock starts: the same job on one record (opening
    # LibTorch, loading the model, the warm-up batch, starting the actors).
    base=$(rill_run "$b" "$d" "$work/one.csv" | sed -n 's/.*finished in \([0-9.]*\) s.*/\1/p')
    echo "rill-net batch=$b delay=$d rep=$rep ips=$(python3 -c "print(round($n / max($secs - $base, 1e-3), 1))") p50=$l50 p99=$l99" | tee -a "$results"
    out=$(rill_run "$b" "$d" "$work/paced.csv" "$RATE")
    read -r l50 l99 <<<"$(p50 discard <<<"$out")"
    mean=$(sed -n 's/.*mean size \([0-9.]*\).*/\1/p' <<<"$out")
    echo "rill-paced batch=$b delay=$d ips=$RATE p50=$l50 p99=$l99 mean_batch=$mean" | tee -a "$results"
  done
done
done

python3 - "$results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    f = line.split()
    kv = dict(x.split("=", 1) for x in f[1:])
    runs.setdefault((f[0], kv["batch"], kv["delay"]), []).append(kv)
med = lambda rs, k: statistics.median(float(r[k]) for r in rs) if rs[0].get(k) else None
raw = {}
for (eng, b, _), rs in runs.items():
    if eng.startswith("raw-tch"):
        raw[b] = max(raw.get(b, 0), med(rs, "ips"))
print("\n| engine | max_batch_size | max_delay | runs | images/s (median) | vs raw tch | latency p50 ms | p99 ms | mean batch |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for (eng, b, d), rs in runs.items():
    ips = med(rs, "ips")
    vs = "" if eng == "rill-paced" else f"{ips / raw[b]:.2f}"
    mb = med(rs, "mean_batch")
    print(f"| {eng} | {b} | {d} | {len(rs)} | {ips:,.0f} | {vs} | {med(rs, 'p50'):.2f} | {med(rs, 'p99'):.2f} | {'' if mb is None else f'{mb:.1f}'} |")
# Raw tch itself varies by ±20 % between repeats here, so also pair each repeat's Rill-net with
# the faster raw tch layout of the same repeat.
for (eng, b, d), rs in runs.items():
    if eng == "rill-net":
        best = {}
        for (e, bb, _), raws in runs.items():
            for r in raws if e.startswith("raw-tch") and bb == b else []:
                best[r["rep"]] = max(best.get(r["rep"], 0), float(r["ips"]))
        ratios = [float(r["ips"]) / best[r["rep"]] for r in rs]
        print(f"\nrill-net / raw tch of the same repeat, batch {b}, delay {d}: "
              f"{', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})")
PY
