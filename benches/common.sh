# Sourced by the benchmark scripts: prints the host and how busy it is before they start
# (figures are only meaningful on an otherwise idle machine).
busy() { awk 'NR == 1 {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
print_host() {
  echo "# host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" >&2
  local b0 b1
  b0=$(busy); sleep 1; b1=$(busy)
  echo "# cores busy before start: $(awk -v a="$b0" -v b="$b1" 'BEGIN {printf "%.2f", (b - a) / 100}')" >&2
}
