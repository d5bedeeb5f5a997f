#!/usr/bin/env bash
# Browser test of the dashboard: the real server binary and Debian's Chromium (playwright-core).
#   INVALIDATOR_BIN=path/to/invalidator   (default: target/debug/invalidator; build it first)
#   DASHBOARD_SCREENSHOT=1                (also writes docs/dashboard.png)
# Ends with "dashboard: N passed, N failed"; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

if [ ! -x /usr/bin/chromium ]; then
  echo "installing Chromium (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq chromium >/dev/null
fi

if [ ! -d dashboard/test/node_modules/playwright-core ]; then
  echo "npm ci (dashboard/test)"
  (cd dashboard/test && npm ci --no-audit --no-fund --loglevel=error)
fi

export INVALIDATOR_BIN="${INVALIDATOR_BIN:-$repo/target/debug/invalidator}"
if [ ! -x "$INVALIDATOR_BIN" ]; then
  echo "server binary not found: $INVALIDATOR_BIN (cargo build, or set INVALIDATOR_BIN)"
  echo "dashboard: 0 passed, 1 failed"
  exit 1
fi

# The test starts the servers itself and stops them; it records their pids here so that an
# interrupted run still kills exactly the servers it started.
pidfile="$(mktemp)"
out="$(mktemp)"
export DASHBOARD_PIDFILE="$pidfile"
cleanup() {
  while read -r pid; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
  done <"$pidfile"
  rm -f "$pidfile" "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 110 s cap on the node test (it takes ~15 s), so the whole script stays under 2 minutes.
status=0
timeout --kill-after=5 110 node dashboard/test/dashboard.test.mjs 2>&1 | tee "$out" || status=${PIPESTATUS[0]}
if ! tail -n1 "$out" | grep -qE '^dashboard: [0-9]+ passed, [0-9]+ failed$'; then
  [ "$status" -eq 124 ] && echo "dashboard test timed out"
  [ "$status" -eq 0 ] && status=1
  echo "dashboard: 0 passed, 1 failed"
fi
exit "$status"
