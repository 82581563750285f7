#!/usr/bin/env bash
# PostgreSQL sink throughput in one run (BENCHMARKS.md, "PostgreSQL"): N rows over KEYS cards from
# one CSV file, loaded by `psql \copy` (COPY: the limit here) and by Rill's postgres sink, append
# and upsert, at-least-once and exactly-once (both with checkpoints every second), into a
# private server started here. Prints the median wall time of REPEAT runs of each.
#   benches/postgres.sh            # N=1M, KEYS=10k, REPEAT=3
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-1000000}"
KEYS="${KEYS:-10000}"
REPEAT="${REPEAT:-3}"
cargo build --release -q -p rill
source benches/common.sh
print_host
tmp=$(mktemp -d)
chmod 755 "$tmp"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u rill-pg -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown rill-pg "$tmp"
as_pg "$pgbin/initdb" -D "$tmp/data" -U rill --auth=trust -E UTF8 --locale=C >/dev/null
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg "$pgbin/pg_ctl" -D "$tmp/data" -l "$tmp/pg.log" -o "-p $port -k $tmp -c listen_addresses=127.0.0.1 -c max_prepared_transactions=16" -w start >/dev/null
trap 'as_pg "$pgbin/pg_ctl" -D "$tmp/data" -m fast stop >/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
psql=(psql -q -X -h 127.0.0.1 -p "$port" -U rill -d postgres -v ON_ERROR_STOP=1)
url="postgres://rill@127.0.0.1:$port/postgres"

python3 - "$N" "$KEYS" "$tmp/rows.csv" <<'PY'
import sys
n, keys, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
with open(path, "w") as f:
    for i in range(n):
        f.write(f"{i},c{i * 7919 % keys:05d},{(i * 37 % 100000) / 100},{1764000000000 + i}\n")
PY
make_table() { # NAME PRIMARY-KEY?
  "${psql[@]}" -c "SET client_min_messages = warning; DROP TABLE IF EXISTS $1; CREATE TABLE $1 (id bigint, card text${2:+ PRIMARY KEY}, amount double precision, ts bigint)"
}
pipeline() { # MODE DELIVERY
  local mode=""
  [ "$1" = upsert ] && mode="mode: upsert, key: [card], "
  cat > "$tmp/p.yaml" <<YAML
name: pg-bench
work_dir: $tmp/w
checkpoint: {interval: 1s, dir: $tmp/ck}
sources:
  rows:
    type: file
    path: $tmp/rows.csv
    format: {type: csv, header: false, schema: {id: i64, card: string, amount: f64, ts: i64}}
sinks:
  out: {type: postgres, inputs: [rows], url: '$url', table: t, ${mode}delivery: $2}
YAML
}
seconds() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
median() { python3 -c "import sys, statistics; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.3f}')" "$@"; }

declare -A times
for ((r = 1; r <= REPEAT; r++)); do
  make_table t
  t0=$(date +%s.%N); "${psql[@]}" -c "\\copy t FROM '$tmp/rows.csv' CSV"; t1=$(date +%s.%N)
  times[copy]+=" $(seconds "$t0" "$t1")"
  for mode in append upsert; do
    for delivery in at_least_once exactly_once; do
      make_table t "$([ $mode = upsert ] && echo pk)"
      pipeline "$mode" "$delivery"
      rm -rf "$tmp/w" "$tmp/ck"
      t0=$(date +%s.%N); target/release/rill run "$tmp/p.yaml" --progress never >"$tmp/out.txt" 2>&1 || { cat "$tmp/out.txt"; exit 1; }; t1=$(date +%s.%N)
      rows=$("${psql[@]}" -At -c "SELECT count(*) FROM t")
      want=$([ $mode = upsert ] && echo "$KEYS" || echo "$N")
      [ "$rows" = "$want" ] || { echo "$mode $delivery: $rows rows in the table, not $want" >&2; cat "$tmp/out.txt"; exit 1; }
      times[$mode-$delivery]+=" $(seconds "$t0" "$t1")"
    done
  done
done
copy=$(median ${times[copy]})
echo "rows=$N keys=$KEYS repeat=$REPEAT (median wall seconds; rows/s; share of COPY's rate)"
printf '%-28s %8s s %10s rows/s\n' "psql \\copy (COPY)" "$copy" "$(python3 -c "print(round($N / $copy))")"
for k in append-at_least_once append-exactly_once upsert-at_least_once upsert-exactly_once; do
  m=$(median ${times[$k]})
  printf '%-28s %8s s %10s rows/s %6s %% of COPY   (runs:%s)\n' "rill $k" "$m" "$(python3 -c "print(round($N / $m))")" "$(python3 -c "print(round(100 * $copy / $m))")" "${times[$k]}"
done
