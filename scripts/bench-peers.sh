#!/usr/bin/env bash
# Side-by-side benchmark: invalidator vs Redis pub/sub vs nats-server (TCP and WebSocket).
#
# Starts every server on loopback ports of its own (persistence off), runs the `bench-fanout`
# and `bench-patterns` scenarios of `invalidator-load` against each, writes one JSON file per
# run into bench-results/ (or $OUT), stops everything (trap), then draws the plots into
# docs/plots/ with scripts/plot.py.
#
#   scripts/bench-peers.sh                 # everything (~5 min on 2 cores)
#   QUICK=1 scripts/bench-peers.sh         # small counts, to check the plumbing
#   SYSTEMS="invalidator redis" scripts/bench-peers.sh
#   python3 scripts/plot.py bench-results/ # re-plot only
#
# Ports: invalidator 14000, Redis 16379, NATS 14222 (WebSocket 14223). Needs: cargo, python3;
# installs redis-server / nats-server from Debian packages and matplotlib from PyPI if missing.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/bench-results}
SYSTEMS=${SYSTEMS:-"invalidator redis nats nats-ws"}
SUBSCRIBERS=${SUBSCRIBERS:-"1 100 1000"}
PATTERNS=${PATTERNS:-"10 1000 10000"}
THREADS=${THREADS:-1} # load-generator worker threads: the other core is the server's
QUICK=${QUICK:-0}
INV_PORT=14000 REDIS_PORT=16379 NATS_PORT=14222 NATS_WS_PORT=14223

log() { printf '\n== %s\n' "$*" >&2; }

# ---- tools -------------------------------------------------------------------------------
need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing ${need_apt[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
NATS_BIN=$(command -v nats-server || echo /usr/sbin/nats-server)
python3 -c 'import matplotlib' 2>/dev/null || {
    log "installing matplotlib (pip)"
    python3 -m pip install -q matplotlib
}

log "building release binaries"
cargo build --release --bins
BIN=$ROOT/target/release

# ---- servers -----------------------------------------------------------------------------
TMP=$(mktemp -d /tmp/bench-peers.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

wait_port() { # host port name
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$3 did not open $1:$2" >&2
    return 1
}

redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize no --logfile "$TMP/redis.log" --dir "$TMP" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")

cat >"$TMP/nats.conf" <<EOF
listen: 127.0.0.1:$NATS_PORT
max_payload: 1MB
websocket {
  listen: "127.0.0.1:$NATS_WS_PORT"
  no_tls: true
}
EOF
"$NATS_BIN" -c "$TMP/nats.conf" -l "$TMP/nats.log" &
NATS_PID=$!
PIDS+=("$NATS_PID")

"$BIN/invalidator" serve --listen 127.0.0.1:$INV_PORT \
    --data-dir "$TMP/invalidator-data" >"$TMP/invalidator.log" 2>&1 &
INV_PID=$!
PIDS+=("$INV_PID")

wait_port 127.0.0.1 $REDIS_PORT redis
wait_port 127.0.0.1 $NATS_PORT nats
wait_port 127.0.0.1 $NATS_WS_PORT nats-ws
wait_port 127.0.0.1 $INV_PORT invalidator

pid_of() {
    case $1 in
    invalidator) echo "$INV_PID" ;;
    redis) echo "$REDIS_PID" ;;
    nats | nats-ws) echo "$NATS_PID" ;;
    esac
}

# ---- runs --------------------------------------------------------------------------------
mkdir -p "$OUT"
rm -f "$OUT"/fanout-*.json "$OUT"/patterns-*.json "$OUT"/summary.txt
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p') x $(nproc)"
    echo "redis: $(redis-server --version)"
    echo "nats: $("$NATS_BIN" --version)"
    echo "invalidator: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) (+ working tree)"
    echo "load-generator threads: $THREADS"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"

LOAD=("$BIN/invalidator-load" --threads "$THREADS")
common_args() { # system
    echo --system "$1" --server-pid "$(pid_of "$1")" \
        --invalidator-addr 127.0.0.1:$INV_PORT --redis-addr 127.0.0.1:$REDIS_PORT \
        --nats-addr 127.0.0.1:$NATS_PORT --nats-ws-url ws://127.0.0.1:$NATS_WS_PORT
}

# Event counts per size: bounded so each run takes seconds (the max-rate phase also stops
# after --max-secs of publishing).
fanout_counts() { # subscribers -> "latency_events max_events"
    if [ "$QUICK" = 1 ]; then echo "50 200"; return; fi
    case $1 in
    1) echo "500 20000" ;;
    100) echo "500 5000" ;;
    *) echo "300 2000" ;;
    esac
}

for n in $SUBSCRIBERS; do
    read -r lat max <<<"$(fanout_counts "$n")"
    for sys in $SYSTEMS; do
        log "fan-out: $sys, $n subscribers"
        # shellcheck disable=SC2046
        "${LOAD[@]}" bench-fanout $(common_args "$sys") --subscribers "$n" \
            --latency-events "$lat" --rate 100 --max-events "$max" --max-secs 5 \
            --publishers 4 --json "$OUT/fanout-$sys-$n.json" | tee -a "$OUT/summary.txt"
    done
done

for m in $PATTERNS; do
    if [ "$QUICK" = 1 ]; then lat=100 max=1000; else lat=1000 max=200000; fi
    for sys in $SYSTEMS; do
        log "patterns: $sys, $m patterns over 1000 subscribers"
        # shellcheck disable=SC2046
        "${LOAD[@]}" bench-patterns $(common_args "$sys") --subscribers 1000 --patterns "$m" \
            --latency-events "$lat" --rate 500 --max-events "$max" --max-secs 3 \
            --publishers 4 --json "$OUT/patterns-$sys-$m.json" | tee -a "$OUT/summary.txt"
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

log "plotting"
python3 scripts/plot.py "$OUT"
