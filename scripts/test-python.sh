#!/usr/bin/env bash
# Tests of the Python client (clients/python) against the real server binary.
#
#   scripts/test-python.sh [pytest args...]
#
# Env: INVALIDATOR_BIN (default: target/debug/invalidator; build it first with cargo build),
#      PYTHON (default: python3, must be >= 3.10).
# Creates or reuses the venv clients/python/.venv and installs the package with its test extras
# only when pyproject.toml changed since the last install. Ends with "python: N passed, N failed";
# exits non-zero on any failure, on no tests run, or on a run over the time limit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PKG="$ROOT/clients/python"
VENV="$PKG/.venv"
STAMP="$VENV/.install-stamp"
PYTHON="${PYTHON:-python3}"
TIME_LIMIT="${PYTHON_TEST_TIMEOUT:-110}"

export INVALIDATOR_BIN="${INVALIDATOR_BIN:-$ROOT/target/debug/invalidator}"
if [[ ! -x "$INVALIDATOR_BIN" ]]; then
  echo "test-python: no server binary at $INVALIDATOR_BIN (run cargo build, or set INVALIDATOR_BIN)" >&2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/test-python.XXXXXX")"
export INVALIDATOR_TEST_PIDFILE="$WORK/server-pids"
: >"$INVALIDATOR_TEST_PIDFILE"

cleanup() {
  # Servers are killed by the test fixtures (and die with pytest through PDEATHSIG); this is
  # the last resort for a run that was itself killed.
  local pid
  while read -r pid; do
    [[ -n "$pid" ]] || continue
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--data-dir"; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  done <"$INVALIDATOR_TEST_PIDFILE"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" - <<'EOF'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"test-python: Python >= 3.10 needed, {sys.executable} is {sys.version.split()[0]}")
EOF
  "$PYTHON" -m venv "$VENV"
  rm -f "$STAMP"
fi
if [[ ! -f "$STAMP" || "$PKG/pyproject.toml" -nt "$STAMP" ]]; then
  echo "test-python: installing clients/python[test] into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$PKG[test]"
  touch "$STAMP"
fi

set +e
(cd "$PKG" && timeout -k 10 "$TIME_LIMIT" "$VENV/bin/python" -m pytest -q -rs \
  --junitxml="$WORK/junit.xml" -p no:cacheprovider "$@")
rc=$?
set -e

read -r passed failed skipped < <("$VENV/bin/python" - "$WORK/junit.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print(0, 0, 0)
    sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
k = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - k, f, k)
EOF
)

case "$rc" in
  0) ;;
  5) echo "test-python: pytest collected no tests" >&2 ;;
  124|137) echo "test-python: over the time limit of ${TIME_LIMIT}s" >&2 ;;
  *) echo "test-python: pytest exited with $rc" >&2 ;;
esac
if [[ "$rc" -ne 0 && "$failed" -eq 0 ]]; then
  failed=1 # no tests, a crash or a timeout: count it as a failure
fi
echo "python: $skipped skipped"
echo "python: $passed passed, $failed failed"
[[ "$rc" -eq 0 ]]
