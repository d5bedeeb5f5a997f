#!/usr/bin/env bash
# Build the TypeScript client (clients/typescript) and run its tests against the real server
# binary ($INVALIDATOR_BIN, default target/debug/invalidator: build it first, this script does
# not run cargo). Ends with the line `typescript: N passed, N failed`; exits non-zero on any
# failure. Every server the tests start is killed on exit (the whole test process group).
set -euo pipefail
cd "$(dirname "$0")/../clients/typescript"

command -v node >/dev/null || { echo "typescript: node is not installed" >&2; exit 1; }
if [ ! -d node_modules ] || [ ! -f node_modules/.package-lock.json ] ||
  [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run --silent build

# Servers' data dirs go under a private TMPDIR, removed at the end whatever happens.
TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/test-typescript.XXXXXX")
export TMPDIR
OUT="$TMPDIR/tap.out"
PGID=""
cleanup() {
  if [ -n "$PGID" ]; then kill -KILL -- "-$PGID" 2>/dev/null || true; fi
  rm -rf "$TMPDIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Own process group (job control), so that the cleanup reaches every server the tests spawned.
set -m
timeout --kill-after=5 110 node --test --test-reporter=tap test/*.test.mjs >"$OUT" 2>&1 &
PGID=$!
set +m
tail -n +1 -f --pid="$PGID" "$OUT" &
TAIL=$!
rc=0
wait "$PGID" || rc=$?
wait "$TAIL" 2>/dev/null || true

passed=$(grep -E '^# pass [0-9]+$' "$OUT" | tail -n1 | awk '{print $3}')
failed=$(grep -E '^# fail [0-9]+$' "$OUT" | tail -n1 | awk '{print $3}')
skipped=$(grep -E '^# skipped [0-9]+$' "$OUT" | tail -n1 | awk '{print $3}')
passed=${passed:-0}
failed=${failed:-0}
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "# the test runner exited with $rc without reporting a failure (timeout or crash)"
  failed=1
fi
echo "# skipped ${skipped:-0} (features the server does not have yet)"
echo "typescript: $passed passed, $failed failed"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
