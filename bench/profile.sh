#!/usr/bin/env bash
# Instructions per request through modelrollout-proxy, counted by valgrind's callgrind: immune to
# other work on the machine (unlike wall-clock figures), so one change at a time can be judged on
# a shared 2-core box. The mock upstream runs natively; only the proxy runs under callgrind.
#
# Two request kinds, each counted alone: a non-streamed chat completion (the body of
# bench/chat.lua) and a streamed one (8 chunks plus usage). For each: PROFILE_WARMUP requests
# first, then the counters are zeroed, PROFILE_REQUESTS requests on one keep-alive connection,
# and the counters dumped. Writes $OUT/{plain,stream}.callgrind and prints, per kind, the
# instructions per request and the functions with the most inclusive instructions.
#
# Knobs: PROFILE_REQUESTS (500), PROFILE_WARMUP (50), PROFILE_OUT (.cache/profile),
# PROFILE_TOP (40 functions listed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

REQUESTS=${PROFILE_REQUESTS:-500}
WARMUP=${PROFILE_WARMUP:-50}
OUT=${PROFILE_OUT:-$ROOT/.cache/profile}
TOP=${PROFILE_TOP:-40}
BIN=$ROOT/target/release
MOCK_PORT=18281
PROXY_PORT=18280
ADMIN_PORT=18290
PIDS=()

log() { printf '[profile %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cleanup() {
  local pid
  for pid in "${PIDS[@]:-}"; do
    [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [[ -n $pid ]] && wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

wait_http() { # URL
  local deadline=$((SECONDS + 120))
  until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || { log "$1 did not answer within 120 s"; exit 1; }
    sleep 0.5
  done
}

if ! command -v valgrind >/dev/null || ! command -v callgrind_annotate >/dev/null; then
  log "installing valgrind (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi

log "building release binaries"
cargo build --release -q -p modelrollout-mockllm -p modelrollout-proxy --bins
mkdir -p "$OUT/routing" "$OUT/credentials"
cat >"$OUT/routing/bench.json" <<EOF
{"version": 1, "rollout": "bench", "namespace": "bench", "generation": 1, "model": "bench",
 "stable": {"model": "bench-stable", "endpoint": "http://127.0.0.1:$MOCK_PORT/v1"},
 "canary": {"model": "bench-canary", "endpoint": "http://127.0.0.1:$MOCK_PORT/v1"},
 "canaryWeight": 25, "stickiness": {"headers": ["X-Session-ID"], "bodyField": "user"},
 "phase": "Progressing"}
EOF

"$BIN/modelrollout-mockllm" --listen "127.0.0.1:$MOCK_PORT" --worker-threads 1 --record-limit 0 \
  >"$OUT/mock.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MOCK_PORT/healthz"

# One callgrind run per kind, so each file holds exactly one kind of request.
for kind in plain stream; do
  rm -f "$OUT/$kind.callgrind"*
  # One worker thread: what the proxy runs on one pinned core in make bench.
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$kind.callgrind" \
    "$BIN/modelrollout-proxy" --listen "127.0.0.1:$PROXY_PORT" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" --routing-dir "$OUT/routing" \
    --credentials-dir "$OUT/credentials" --worker-threads 1 --log warn >"$OUT/proxy-$kind.log" 2>&1 &
  proxy_pid=$!
  PIDS+=("$proxy_pid")
  wait_http "http://127.0.0.1:$ADMIN_PORT/readyz"
  python3 - "$kind" "$PROXY_PORT" "$WARMUP" "$REQUESTS" "$proxy_pid" <<'EOF'
import http.client, json, subprocess, sys
kind, port, warmup, requests, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
body = {"model": "bench", "messages": [{"role": "user", "content": "Say something."}], "user": "bench-user"}
if kind == "stream":
    body.update(stream=True, stream_options={"include_usage": True})
payload = json.dumps(body, separators=(",", ":")).encode()
headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
def one():
    conn.request("POST", "/v1/chat/completions", payload, headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200 or (kind == "stream" and b"[DONE]" not in data):
        sys.exit(f"unexpected answer {response.status}: {data[:200]!r}")
for _ in range(warmup):
    one()
subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
for _ in range(requests):
    one()
subprocess.run(["callgrind_control", "--dump=measured", pid], check=True, capture_output=True)
EOF
  kill "$proxy_pid"
  wait "$proxy_pid" 2>/dev/null || true
  measured=$(ls -t "$OUT/$kind.callgrind".* | head -1)
  total=$(awk '/^summary:/ {print $2}' "$measured")
  log "$kind: $((total / REQUESTS)) instructions per request ($total for $REQUESTS requests)"
  printf '%s %s %s\n' "$kind" "$REQUESTS" "$total" >>"$OUT/summary.txt"
  callgrind_annotate --inclusive=yes --threshold=100 "$measured" 2>/dev/null \
    | sed -n '/^-* *$/,$p' | grep -E '^ *[0-9,]+ ' | head -n "$TOP" >"$OUT/$kind.top.txt" || true
  cat "$OUT/$kind.top.txt"
done
