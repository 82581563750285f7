#!/usr/bin/env bash
# Workload J (BENCHMARKS.md, "Joins") side by side in one run: the hand-written loop, Rill's
# interval join at p = 1 and 2 (benches/join.yaml), and Apache Flink's DataStream interval join
# on the same data (benches/flink/FlinkJoinBench.java, compiled with javac against the jars
# ../shared/peers/flink/run.sh installs).
#   benches/join.sh                 # N=5M events a side, K=100k keys; REPEAT=1; FLINK=0 leaves Flink out
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-5000000}"
K="${K:-100000}"
REPEAT="${REPEAT:-1}"
FLINK="${FLINK:-1}"
cargo build --release -q -p rill -p rill-examples
results=$(mktemp)
source benches/common.sh
print_host

if [[ "$FLINK" == 1 ]]; then
  flink_dir="${FLINKPEER_DIR:-/tmp/flinkpeer}"
  lib=$(ls -d "$flink_dir"/venv/lib/python3*/site-packages/pyflink/lib 2>/dev/null | head -1 || true)
  if [[ -z "$lib" ]]; then
    # The peer's script makes the venv with Flink's jars (a tiny run of its own workload).
    WORKLOADS=W0 PARALLELISMS=1 N=1000 TINY_N= ../shared/peers/flink/run.sh >/dev/null 2>&1
    lib=$(ls -d "$flink_dir"/venv/lib/python3*/site-packages/pyflink/lib | head -1)
  fi
  classes=$(mktemp -d)
  javac -nowarn -d "$classes" -cp "$lib/*" benches/flink/FlinkJoinBench.java 2> >(grep -v '^Note:' >&2)
fi

for ((r = 1; r <= REPEAT; r++)); do
  line=$(target/release/join-hand "$N" "$K")
  echo "hand-loop p=1 secs=$(sed -n 's/.*secs=\([0-9.]*\).*/\1/p' <<<"$line") pairs=$(sed -n 's/.*pairs=\([0-9]*\).*/\1/p' <<<"$line")" | tee -a "$results"
  for p in 1 2; do
    out=$(/usr/bin/time -f "rss_kb=%M" target/release/rill run benches/join.yaml --set "parallelism=$p" \
      --set "sources.left.count=$N" --set "sources.right.count=$N" \
      --set "sources.left.fields.key=id % $K" --set "sources.right.fields.key=id % $K" \
      --set "work_dir=$(mktemp -d)" --progress never 2>&1)
    secs=$(sed -n 's/.*finished in \([0-9.]*\) s.*/\1/p' <<<"$out")
    pairs=$(awk '$1 == "joined" && $2 == "join" {print $5}' <<<"$out")
    echo "rill p=$p secs=$secs pairs=$pairs $(grep -o 'rss_kb=[0-9]*' <<<"$out")" | tee -a "$results"
  done
  if [[ "$FLINK" == 1 ]]; then
    for p in 1 2; do
      line=$(java -Dlog4j.configurationFile=../shared/peers/flink/log4j2.properties -cp "$lib/*:$classes" FlinkJoinBench --n "$N" --keys "$K" --p "$p" 2>/dev/null | grep '^flink J')
      echo "flink p=$p secs=$(sed -n 's/.* net_secs=\([0-9.]*\).*/\1/p' <<<"$line") pairs=$(sed -n 's/.* pairs=\([0-9]*\).*/\1/p' <<<"$line") wall_secs=$(sed -n 's/.* secs=\([0-9.]*\).*/\1/p' <<<"$line") $(grep -o 'check=[a-zA-Z]*' <<<"$line")" | tee -a "$results"
    done
  fi
done

python3 - "$results" "$N" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    kv = dict(x.split("=", 1) for x in f[1:])
    rows.setdefault((f[0], kv["p"]), []).append((float(kv["secs"]), kv.get("pairs")))
n = int(sys.argv[2])
hand = statistics.median(s for s, _ in rows[("hand-loop", "1")])
print("\n| engine | p | runs | median secs | input rows/s | pairs | vs hand loop | Flink ÷ Rill (same p) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for (eng, p), rs in sorted(rows.items()):
    m = statistics.median(s for s, _ in rs)
    fl = rows.get(("flink", p))
    vs = f"{statistics.median(s for s, _ in fl) / m:.2f}x" if fl and eng == "rill" else ""
    print(f"| {eng} | {p} | {len(rs)} | {m:.3f} | {2 * n / m:,.0f} | {rs[0][1]} | {hand / m:.3f} | {vs} |")
PY
rm -f "$results"
