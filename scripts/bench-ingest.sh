#!/usr/bin/env bash
# Ingest with and without request ids, fsync and os durability, SQLite and PostgreSQL: one run
# of each, in one sitting, so the ratios compare like with like (BENCHMARKS.md "Ingest").
#   scripts/bench-ingest.sh [seconds] [connections]
# Writes bench-results/ingest-<case>.json. Needs PostgreSQL at 127.0.0.1:5432 for the pg cases.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10} conns=${2:-64}
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --bins --quiet
mkdir -p bench-results
bin=target/release/invalidator load=target/release/invalidator-load
port=4290
pg=postgres://postgres@127.0.0.1:5432
run() { # name durability ids(yes|no) store(sqlite|pg)
  local name=$1 durability=$2 ids=$3 store=$4 dir extra=() flag=()
  dir=$(mktemp -d)
  printf '[audit]\ndurability = "%s"\n' "$durability" > "$dir/config.toml"
  if [ "$store" = pg ]; then
    psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS inv_bench_ingest" -c "CREATE DATABASE inv_bench_ingest" postgres
    extra=(--database-url "$pg/inv_bench_ingest")
  fi
  [ "$ids" = no ] && flag=(--no-request-id)
  "$bin" serve --listen 127.0.0.1:$port --data-dir "$dir" --config "$dir/config.toml" "${extra[@]}" 2>"$dir/server.log" &
  local pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  echo "== $name (durability=$durability, request ids: $ids, store: $store)"
  "$load" keys -c "$conns" -d "$secs" --url "http://127.0.0.1:$port" --server-pid $pid "${flag[@]}" \
    --rate "${RATE:-0}" --json "bench-results/ingest-$name${RATE:+-rate$RATE}.json"
  curl -s "http://127.0.0.1:$port/invalidate/metrics" > "bench-results/ingest-$name${RATE:+-rate$RATE}.metrics.json"
  kill -TERM $pid; wait $pid || true
  rm -rf "$dir"
}
if [ -n "${RATE:-}" ]; then
  # Open loop at a fixed rate: what the fsync adds to latency, not to closed-loop throughput.
  run sqlite-os-noid os no sqlite
  run sqlite-fsync-id fsync yes sqlite
  run pg-os-noid os no pg
  run pg-fsync-id fsync yes pg
else
  run sqlite-os-noid os no sqlite
  run sqlite-os-id os yes sqlite
  run sqlite-fsync-noid fsync no sqlite
  run sqlite-fsync-id fsync yes sqlite
  run pg-os-noid os no pg
  run pg-fsync-id fsync yes pg
fi
psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS inv_bench_ingest" postgres
