# Sourced by the scripts/test-*.sh suites: start the server binary $BIN on a free loopback port
# with a throw-away data dir (open mode, SQLite; nothing from the caller's environment leaks in),
# wait for /healthz, and stop it (and remove the dir) when the script exits.
# Sets TMP, SERVER_PID, PORT and BASE; needs die() and BIN from the caller.
TMP=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
env -u DATABASE_URL -u DATABASE_MIGRATE_URL -u NATS_URL -u INVALIDATOR_CONFIG \
  -u INVALIDATOR_ADMIN_TOKEN -u INVALIDATOR_LISTEN -u INVALIDATOR_DATA_DIR \
  INVALIDATOR_LOG=warn \
  "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$TMP/data" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
up=""
for _ in $(seq 1 100); do
  if curl -fsS --max-time 1 "$BASE/healthz" >/dev/null 2>&1; then up=1; break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.2
done
[ -n "$up" ] || { cat "$TMP/server.log" >&2; die "server did not come up on $BASE"; }
echo "server: $BIN on $BASE (pid $SERVER_PID)"
