#!/usr/bin/env bash
# Checks the server's Prometheus exposition and the Grafana dashboard against it.
#
# Installs Debian's `prometheus` package if `promtool` is missing (needs root), starts the server
# binary on a free loopback port with a throw-away data dir, sends a little traffic (so labelled
# series exist), fetches GET /metrics, and checks:
#   1. `promtool check metrics` accepts the scrape (format and naming lint);
#   2. every PromQL expression of the dashboard docs/grafana/invalidator.json parses
#      (`promtool check rules`, with Grafana's variables filled in);
#   3. every metric family the dashboard queries is in the scrape:
#      a histogram (queried as X_bucket / X_sum / X_count) must be declared `histogram` and
#      expose X_bucket, X_sum and X_count; any other name must be declared or sampled.
# Prints every missing name, ends with `promtool: N passed, N failed` (N = checks: the lint,
# the PromQL parse, plus one per metric family), and exits non-zero on any failure.
#
# Env: INVALIDATOR_BIN (default <repo>/target/debug/invalidator).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${INVALIDATOR_BIN:-$ROOT/target/debug/invalidator}
DASHBOARD="$ROOT/docs/grafana/invalidator.json"

die() { echo "test-promtool: $*" >&2; echo "promtool: 0 passed, 1 failed"; exit 1; }

if ! command -v promtool >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "promtool is missing; install Debian's prometheus package (as root)"
  echo "installing Debian's prometheus package (for promtool)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; } >/dev/null \
    || die "apt-get install prometheus failed"
  command -v promtool >/dev/null 2>&1 || die "promtool still missing after installing prometheus"
fi
[ -x "$BIN" ] || die "no server binary at $BIN (build it, or set INVALIDATOR_BIN)"

# shellcheck source=scripts/lib/test-server.sh
source "$ROOT/scripts/lib/test-server.sh"

# A little traffic: every invalidation type, a duplicate, a rejection.
post() { curl -sS -o /dev/null --max-time 5 -H 'content-type: application/json' -d "$2" "$BASE$1" || true; }
post /invalidate/key '{"keys":["user:1","user:2"],"triggered_by":"promtool","request_id":"promtool-1"}'
post /invalidate/key '{"keys":["user:1","user:2"],"triggered_by":"promtool","request_id":"promtool-1"}'
post /invalidate/pattern '{"pattern":"user:*","triggered_by":"promtool","cache_keys":["user:1"]}'
post /invalidate/pattern '{"pattern":"*:profile","triggered_by":"promtool"}'
post /invalidate/pattern '{"pattern":"user:?","triggered_by":"promtool"}'
post /invalidate/pattern '{"pattern":"user:[0-9]+","pattern_type":"regex","triggered_by":"promtool"}'
post /invalidate/key '{"keys":[],"triggered_by":"promtool"}'
sleep 0.5   # let the audit writer flush a batch

curl -fsS --max-time 5 -o "$TMP/metrics.txt" "$BASE/metrics" || die "GET /metrics failed"
echo "scraped $(grep -vc '^#' "$TMP/metrics.txt") samples from $BASE/metrics"

passed=0
failed=0

# --- 1. promtool lint ----------------------------------------------------------------------
lint_rc=0
promtool check metrics <"$TMP/metrics.txt" >"$TMP/lint.txt" 2>&1 || lint_rc=$?
if [ "$lint_rc" -eq 0 ]; then
  passed=$((passed + 1)); echo "ok: promtool check metrics"
else
  failed=$((failed + 1)); echo "FAILED: promtool check metrics (exit $lint_rc):"; sed 's/^/  /' "$TMP/lint.txt"
fi

# --- 2. the dashboard's PromQL parses (as recording rules, with Grafana's variables filled in) --
python3 - "$DASHBOARD" >"$TMP/rules.yml" <<'EOF' || die "could not read $DASHBOARD"
import json, sys
exprs = []
def walk(o):
    if isinstance(o, dict):
        if isinstance(o.get("expr"), str):
            exprs.append(o["expr"])
        for v in o.values():
            walk(v)
    elif isinstance(o, list):
        for v in o:
            walk(v)
walk(json.load(open(sys.argv[1])))
print("groups:\n  - name: dashboard\n    rules:")
for i, e in enumerate(exprs):
    e = e.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$instance", ".*")
    print(f"      - record: dashboard:expr_{i}")
    print(f"        expr: {json.dumps(e)}")
EOF
if promtool check rules "$TMP/rules.yml" >"$TMP/rules.txt" 2>&1; then
  passed=$((passed + 1)); echo "ok: the dashboard's $(grep -c 'record:' "$TMP/rules.yml") PromQL expressions parse"
else
  failed=$((failed + 1)); echo "FAILED: the dashboard's PromQL does not parse:"; sed 's/^/  /' "$TMP/rules.txt"
fi

# --- 3. the dashboard's metric names --------------------------------------------------------
python3 - "$DASHBOARD" "$TMP/metrics.txt" >"$TMP/names.txt" <<'EOF' || die "could not check $DASHBOARD"
import json, re, sys

dash = json.load(open(sys.argv[1]))
used = set()
def walk(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k in ("expr", "definition", "query") and isinstance(v, str):
                used.update(re.findall(r"\binvalidator_[A-Za-z0-9_]+", v))
            walk(v)
    elif isinstance(o, list):
        for v in o:
            walk(v)
walk(dash)

types, samples = {}, set()
for line in open(sys.argv[2]):
    line = line.strip()
    if line.startswith("# TYPE "):
        parts = line.split()
        if len(parts) >= 4:
            types[parts[2]] = parts[3]
    elif line and not line.startswith("#"):
        samples.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))

SUFFIXES = ("_bucket", "_sum", "_count")
families = {}
for name in sorted(used):
    base = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), None)
    if base is not None and (base + "_bucket" in used or types.get(base) == "histogram"):
        families.setdefault(base, "histogram")
    elif base is not None and types.get(base) == "summary":
        families.setdefault(base, "summary")
    else:
        families.setdefault(name, "plain")

ok = bad = 0
for fam, kind in sorted(families.items()):
    if kind == "histogram":
        missing = [fam + s for s in SUFFIXES if fam + s not in samples]
        wrong = types.get(fam) not in (None, "histogram")
        if fam not in types and len(missing) == 3:
            print(f"MISSING: {fam} (histogram: {', '.join(fam + s for s in SUFFIXES)}) is not in the scrape")
            bad += 1
        elif wrong or missing:
            why = []
            if wrong:
                why.append(f"declared {types[fam]}, not histogram")
            if missing:
                why.append("no " + ", ".join(missing))
            print(f"MISSING: {fam}: {'; '.join(why)}")
            bad += 1
        else:
            print(f"ok: {fam} (histogram)")
            ok += 1
    elif kind == "summary":
        if fam in types:
            print(f"ok: {fam} (summary)")
            ok += 1
        else:
            print(f"MISSING: {fam} is not in the scrape")
            bad += 1
    else:
        if fam in samples or fam in types:
            print(f"ok: {fam} ({types.get(fam, 'untyped')})")
            ok += 1
        else:
            print(f"MISSING: {fam} is not in the scrape")
            bad += 1
print(ok, bad)
EOF
sed '$d' "$TMP/names.txt"
read -r p f < <(tail -n 1 "$TMP/names.txt")
passed=$((passed + p)); failed=$((failed + f))

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "the server died during the run:" >&2; tail -n 20 "$TMP/server.log" >&2
  failed=$((failed + 1))
fi
echo "promtool: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
