#!/usr/bin/env bash
# The HTTP API's cost: W0 (N events, p=1) without the API and with it on, scraped every second
# (GET /metrics and GET /api/v1/job, as Prometheus and the page would), runs alternated.
#   benches/http_overhead.sh               # N=50M, 5 runs each, medians
#   N=10000000 REPEAT=3 benches/http_overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-50000000}"
REPEAT="${REPEAT:-5}"
cargo build --release -q -p rill
RILL=target/release/rill
source benches/common.sh
print_host
results=$(mktemp)
job_secs() { sed -n 's/.*finished in \([0-9.]*\) s.*/\1/p' "$1"; }
for ((r = 1; r <= REPEAT; r++)); do
  log=$(mktemp)
  $RILL run examples/w0.yaml --set "sources.events.count=$N" --progress never 2>"$log"
  echo "api=off secs=$(job_secs "$log")" | tee -a "$results"
  $RILL run examples/w0.yaml --set "sources.events.count=$N" --progress never --http 127.0.0.1:0 2>"$log" &
  pid=$!
  addr=""
  while [[ -z "$addr" ]] && kill -0 "$pid" 2>/dev/null; do
    addr=$(sed -n 's|^HTTP API at http://\([0-9.:]*\)/.*|\1|p' "$log")
    [[ -n "$addr" ]] || sleep 0.05
  done
  scrapes=0
  while kill -0 "$pid" 2>/dev/null; do
    curl -s -o /dev/null "http://$addr/metrics" && curl -s -o /dev/null "http://$addr/api/v1/job" && scrapes=$((scrapes + 1)) || true
    sleep 1
  done
  wait "$pid"
  echo "api=on secs=$(job_secs "$log") scrapes=$scrapes" | tee -a "$results"
  rm -f "$log"
done
for mode in off on; do
  sort -n <(grep "^api=$mode" "$results" | sed 's/.*secs=\([0-9.]*\).*/\1/') | awk -v m="$mode" '{a[NR] = $1} END {printf "median api=%s %.3f s over %d runs\n", m, a[int((NR + 1) / 2)], NR}'
done
