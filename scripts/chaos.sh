#!/usr/bin/env bash
# The fault suite (issue "nothing acknowledged is ever lost"), against the real binary:
# kill -9 mid-burst (SQLite and PostgreSQL), PostgreSQL restarted mid-load, NATS restarted
# mid-load (two cluster nodes), a cluster node killed for good. Each run counts responses 200,
# audit rows, rows missing and duplicated, and pushes received by a subscriber; the script
# exits non-zero on any loss or duplicate.
#
#   scripts/chaos.sh            # short: one run of each fault (CI)
#   scripts/chaos.sh long       # 10 runs of each kill -9, 3 of each other fault, release build
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and NATS with JetStream on 4222.
# It restarts both (pg_ctlcluster, and the nats-server process with its own command line),
# so do not run it beside other tests that use them.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-short}
if [ "$mode" = long ]; then default_out=bench-results/chaos-long.json; else default_out=target/chaos-short.json; fi
out=${CHAOS_JSON:-$default_out}
mkdir -p "$(dirname "$out")"
if [ "$mode" = long ]; then
  [ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --bins
  bin=target/release/invalidator load=target/release/invalidator-load
  "$load" --threads 2 chaos kill9-sqlite --runs 10 --bin "$bin" --json "${out%.json}-kill9-sqlite.json"
  "$load" --threads 2 chaos kill9-postgres --runs 10 --bin "$bin" --json "${out%.json}-kill9-postgres.json"
  "$load" --threads 2 chaos pg-restart --runs 3 --bin "$bin" --json "${out%.json}-pg-restart.json"
  "$load" --threads 2 chaos nats-restart --runs 3 --bin "$bin" --json "${out%.json}-nats-restart.json"
  "$load" --threads 2 chaos node-kill --runs 3 --bin "$bin" --json "${out%.json}-node-kill.json"
else
  [ -x target/debug/invalidator-load ] || cargo build --workspace --bins
  target/debug/invalidator-load --threads 2 chaos all --bin target/debug/invalidator \
    --before-secs 1.5 --after-secs 1.5 --json "$out"
fi
