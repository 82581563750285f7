#!/usr/bin/env bash
# Kafka → filter → Kafka in one run (BENCHMARKS.md, "Kafka"): N small JSON messages in a topic of
# 4 partitions on a tansu broker started here (in memory), filtered (`amount > 50.0`, half of
# them) into another topic, by a hand-written rdkafka consume-and-produce loop (the limit here,
# examples/src/bin/kafka-hand.rs, 1 and 2 threads) and by Rill at parallelism 1 and 2,
# at-least-once and exactly-once (checkpoints every second; the exactly-once sink has one
# instance: tansu 0.6 loses messages when two transactional producers write one partition).
# Prints the median wall time of REPEAT runs of each, and checks every run's output count.
#   benches/kafka.sh               # N=2M, REPEAT=3
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-2000000}"
REPEAT="${REPEAT:-3}"
cargo build --release -q -p rill -p rill-examples
source benches/common.sh
print_host
hand=target/release/kafka-hand
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/tansu broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ >"$tmp/broker.log" 2>&1 &
broker=$!
trap 'kill $broker; wait $broker 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
bootstrap="127.0.0.1:$port"
until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null; do sleep 0.1; done
topic() { .venv/bin/tansu topic create --broker "tcp://$bootstrap" --partitions "$2" "$1" >/dev/null; }
topic tx 4
"$hand" produce "$bootstrap" tx "$N"
want=$("$hand" count "$bootstrap" tx)
[ "$want" = "$N" ] || { echo "the input topic holds $want messages, not $N" >&2; exit 1; }
kept=$(python3 -c "print(sum(1 for i in range($N) if (i * 37 % 10000) / 100 > 50.0))")

pipeline() { # PARALLELISM DELIVERY OUT
  local ck="" sinkp=""
  if [ "$2" = exactly_once ]; then ck="checkpoint: {interval: 1s, dir: $tmp/ck}"; sinkp="parallelism: 1, "; fi
  cat > "$tmp/p.yaml" <<YAML
name: kafka-bench
parallelism: $1
work_dir: $tmp/w
$ck
sources:
  tx: {type: kafka, bootstrap_servers: '$bootstrap', topic: tx, stop: latest}
transforms:
  big: {type: filter, inputs: [tx], condition: "amount > 50.0"}
sinks:
  out: {type: kafka, ${sinkp}inputs: [big], bootstrap_servers: '$bootstrap', topic: $3, key: card, delivery: $2}
YAML
}
seconds() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
median() { python3 -c "import sys, statistics; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.3f}')" "$@"; }
check() { # TOPIC WHAT
  local got
  got=$("$hand" count "$bootstrap" "$1")
  [ "$got" = "$kept" ] || { echo "$2: $got messages in $1, not $kept" >&2; exit 1; }
}

declare -A times
run=0
for ((r = 1; r <= REPEAT; r++)); do
  for threads in 1 2; do
    run=$((run + 1)); topic "out$run" 4
    t0=$(date +%s.%N); "$hand" filter "$bootstrap" tx "out$run" "$threads" >/dev/null; t1=$(date +%s.%N)
    check "out$run" "hand loop, $threads threads"
    times[hand-$threads]+=" $(seconds "$t0" "$t1")"
  done
  for p in 1 2; do
    for delivery in at_least_once exactly_once; do
      run=$((run + 1)); topic "out$run" 4
      pipeline "$p" "$delivery" "out$run"
      rm -rf "$tmp/w" "$tmp/ck"
      t0=$(date +%s.%N); target/release/rill run "$tmp/p.yaml" --progress never >"$tmp/out.txt" 2>&1 || { cat "$tmp/out.txt"; exit 1; }; t1=$(date +%s.%N)
      check "out$run" "rill p=$p $delivery"
      times[rill-$p-$delivery]+=" $(seconds "$t0" "$t1")"
    done
  done
done
echo "messages=$N kept=$kept partitions=4 repeat=$REPEAT (median wall seconds, whole process; messages read per second)"
for k in hand-1 hand-2 rill-1-at_least_once rill-1-exactly_once rill-2-at_least_once rill-2-exactly_once; do
  m=$(median ${times[$k]})
  printf '%-24s %8s s %10s msg/s   (runs:%s)\n' "$k" "$m" "$(python3 -c "print(round($N / $m))")" "${times[$k]}"
done
