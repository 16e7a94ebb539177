#!/usr/bin/env bash
# make bench: the same modelrollout-mockllm upstream called directly, through modelrollout-proxy,
# through nginx and through LiteLLM proxy, on loopback, with wrk as the one load tool and
# mockllm-probe for streams. The proxy under test runs alone on one core; wrk, the probe and the
# mock share the other. Writes docs/benchmarks.md (figures, machine, exact commands).
#
# Knobs (environment): BENCH_DURATION (seconds per wrk run, 5), BENCH_REPS (3), BENCH_WARMUP (2),
# BENCH_STREAMS (concurrent streams, 1024), BENCH_ARMS ("direct proxy nginx litellm"),
# BENCH_PROXY_CPU (0), BENCH_LOAD_CPU (1), BENCH_NICE (-10), BENCH_QUIET_WAIT (90, per run) and
# BENCH_QUIET_BUDGET (300, in all): how long to wait for other work on the machine to stop,
# BENCH_OUT (docs/benchmarks.md), BENCH_RAW (bench/results: the raw results, committed with the
# report so every figure can be recomputed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${BENCH_DURATION:-5}
REPS=${BENCH_REPS:-3}
WARMUP=${BENCH_WARMUP:-2}
STREAMS=${BENCH_STREAMS:-1024}
ARMS=${BENCH_ARMS:-direct proxy nginx litellm}
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
OUT=${BENCH_OUT:-docs/benchmarks.md}
RAW=${BENCH_RAW:-bench/results}
# Every measured process (arms, mock, wrk, probe) runs at this niceness, the same for all arms, so
# that builds running beside the bench on a shared machine preempt them less (tails stay honest).
NICE=${BENCH_NICE:--10}
# LiteLLM is pinned so runs stay comparable; bump it deliberately.
LITELLM_VERSION=${BENCH_LITELLM_VERSION:-1.108.7}

WORK=$ROOT/.cache/bench
VENV=$ROOT/.cache/bench-litellm
BIN=$ROOT/target/release
MOCK_PORT=18181
PROXY_PORT=18180
PROXY_ADMIN_PORT=18190
NGINX_PORT=18182
LITELLM_PORT=18183

RESULTS=$WORK/results.jsonl
COMMANDS=$WORK/commands.txt
PIDS=()

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Records the command (for docs/benchmarks.md) and runs it.
run_logged() {
  printf '%s\n' "$*" | sed "s#$ROOT/##g" >>"$COMMANDS"
  "$@"
}

# Starts a long-running process in the background, its command logged, and sets SPAWNED to its PID.
# A simple command run with & is exec'd by the forked shell, so the PID is the process itself.
spawn() { # LOGFILE COMMAND...
  local logfile=$1
  shift
  printf '%s\n' "$*" | sed "s#$ROOT/##g" >>"$COMMANDS"
  "$@" >"$logfile" 2>&1 &
  SPAWNED=$!
  PIDS+=("$SPAWNED")
}

# Fails early when a port is taken (say, by a bench that was killed half-way).
require_free_port() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    die "port $1 is in use: stop whatever listens there (an earlier bench?) and run again"
  fi
}

# Waits for URL and checks the process PID is still the one serving.
wait_started() { # PID URL [seconds]
  wait_http "$2" "${3:-30}"
  kill -0 "$1" 2>/dev/null || die "process $1 exited; see the logs in $WORK"
}

cleanup() {
  local pid
  for pid in "${PIDS[@]:-}"; do
    [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
    # A stopped process only acts on TERM once continued (children too: nginx, LiteLLM workers).
    [[ -n $pid ]] && kill -CONT "$pid" $(pgrep -P "$pid" 2>/dev/null || true) 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [[ -n $pid ]] && wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap "exit 130" INT TERM

# The prefix that puts a command on CPU $1 at the bench's niceness.
on_cpu() { echo nice -n "$NICE" taskset -c "$1"; }

wait_http() { # URL [seconds]
  local url=$1 deadline=$((SECONDS + ${2:-30}))
  until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    ((SECONDS < deadline)) || die "$url did not answer within ${2:-30}s"
    sleep 0.2
  done
}

# Memory in kB of a process and its children (nginx workers, LiteLLM workers): FIELD is VmRSS
# (now) or VmHWM (the peak so far). Read between runs only: sampling during a run would steal
# CPU from the process being measured.
memory_kb() { # FIELD PID...
  local field=$1 total=0 pid kb
  shift
  for pid in "$@" $(for p in "$@"; do pgrep -P "$p" 2>/dev/null || true; done); do
    kb=$(awk -v field="$field:" '$1 == field {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + ${kb:-0}))
  done
  echo "$total"
}

# Percentage of both cores idle over one second (from /proc/stat).
idle_pct() {
  local a b
  read -r _ a1 a2 a3 a4 a5 a6 a7 a8 _ </proc/stat
  sleep 1
  read -r _ b1 b2 b3 b4 b5 b6 b7 b8 _ </proc/stat
  a=$((a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8))
  b=$((b1 + b2 + b3 + b4 + b5 + b6 + b7 + b8))
  echo $(((100 * ((b4 + b5) - (a4 + a5))) / (b - a > 0 ? b - a : 1)))
}

# Waits (up to BENCH_QUIET_WAIT seconds) for other work on the machine to stop, so that a build
# next door does not end up in the figures; prints the idle percentage it started at.
wait_quiet() {
  local idle deadline=$((SECONDS + ${BENCH_QUIET_WAIT:-90}))
  # The whole bench waits at most BENCH_QUIET_BUDGET seconds (300) in total.
  ((deadline > QUIET_DEADLINE)) && deadline=$QUIET_DEADLINE
  idle=$(idle_pct)
  while ((idle < 90 && SECONDS < deadline)); do
    log "machine busy (${idle}% idle): waiting for it to calm down"
    sleep 4
    idle=$(idle_pct)
  done
  echo "$idle"
}

result() { # JSON object fields (already formatted) -> one line in results.jsonl
  printf '{%s}\n' "$1" >>"$RESULTS"
}

# === tools ===

ensure_tools() {
  local missing=()
  command -v wrk >/dev/null || missing+=(wrk)
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
  command -v taskset >/dev/null || missing+=(util-linux)
  command -v curl >/dev/null || missing+=(curl)
  command -v python3 >/dev/null || missing+=(python3 python3-venv)
  if ((${#missing[@]})); then
    log "installing ${missing[*]} (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

ensure_litellm() {
  if [[ ! -x $VENV/bin/python ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$LITELLM_VERSION')" 2>/dev/null; then
    log "installing litellm[proxy]==$LITELLM_VERSION into $VENV (PyPI)"
    "$VENV/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"
  fi
}

build() {
  log "building release binaries"
  run_logged cargo build --release -q -p modelrollout-mockllm -p modelrollout-proxy --bins
  # What was measured: the commit, and whether the built crates had uncommitted changes.
  BENCH_BUILT_FROM=$(git rev-parse --short HEAD)
  if [[ -n $(git status --porcelain -- crates Cargo.lock) ]]; then
    BENCH_BUILT_FROM+=" + uncommitted changes in crates/"
  fi
  export BENCH_BUILT_FROM
}

# === the upstream and the arms ===

mock_config() { # JSON for PUT /control/config
  curl -fsS -X PUT -H 'content-type: application/json' --data "$1" \
    "http://127.0.0.1:$MOCK_PORT/control/config" >/dev/null
}

start_mock() {
  spawn "$WORK/mock.log" $(on_cpu "$LOAD_CPU") "$BIN/modelrollout-mockllm" \
    --listen "127.0.0.1:$MOCK_PORT" --worker-threads 1 --record-limit 0
  MOCK_PID=$SPAWNED
  wait_started "$MOCK_PID" "http://127.0.0.1:$MOCK_PORT/healthz"
}

start_proxy() {
  mkdir -p "$WORK/routing" "$WORK/credentials"
  cat >"$WORK/routing/bench.json" <<EOF
{"version": 1, "rollout": "bench", "namespace": "bench", "generation": 1, "model": "bench",
 "stable": {"model": "bench-stable", "endpoint": "http://127.0.0.1:$MOCK_PORT/v1"},
 "canary": {"model": "bench-canary", "endpoint": "http://127.0.0.1:$MOCK_PORT/v1"},
 "canaryWeight": 25, "stickiness": {"headers": ["X-Session-ID"], "bodyField": "user"},
 "phase": "Progressing"}
EOF
  spawn "$WORK/proxy.log" $(on_cpu "$PROXY_CPU") "$BIN/modelrollout-proxy" \
    --listen "127.0.0.1:$PROXY_PORT" --admin-listen "127.0.0.1:$PROXY_ADMIN_PORT" \
    --routing-dir "$WORK/routing" --credentials-dir "$WORK/credentials" --log warn
  ARM_PIDS=("$SPAWNED")
  wait_started "$SPAWNED" "http://127.0.0.1:$PROXY_ADMIN_PORT/readyz"
}

start_nginx() {
  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx/nginx.conf" <<EOF
# A plain reverse proxy, as it would sit in front of a model API: one worker (one core),
# keep-alive to the upstream, no response buffering so SSE streams flow.
worker_processes 1;
daemon off;
user root;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  # The same upstream keep-alive as modelrollout-proxy: up to 1 024 idle connections kept 90 s.
  upstream mock {
    server 127.0.0.1:$MOCK_PORT;
    keepalive 1024;
    keepalive_timeout 90s;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }
  }
}
EOF
  spawn "$WORK/nginx.log" $(on_cpu "$PROXY_CPU") "$NGINX" -p "$WORK/nginx" \
    -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log"
  ARM_PIDS=("$SPAWNED")
  wait_started "$SPAWNED" "http://127.0.0.1:$NGINX_PORT/healthz"
}

start_litellm() {
  cat >"$WORK/litellm.yaml" <<EOF
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: sk-bench
litellm_settings:
  telemetry: false
  drop_params: true
EOF
  # It refuses to start without a master key; exported, so the key stays out of the command log.
  export LITELLM_MASTER_KEY=$BENCH_API_KEY
  # Offline: the cost map comes from the package, no telemetry, no UI, quiet logs.
  spawn "$WORK/litellm.log" env LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False \
    DISABLE_ADMIN_UI=True LITELLM_LOG=ERROR NO_DOCS=True \
    $(on_cpu "$PROXY_CPU") "$VENV/bin/litellm" --config "$WORK/litellm.yaml" \
    --host 127.0.0.1 --port "$LITELLM_PORT" --num_workers 1
  ARM_PIDS=("$SPAWNED")
  wait_started "$SPAWNED" "http://127.0.0.1:$LITELLM_PORT/health/liveliness" 180
}

arm_url() {
  case $1 in
    direct) echo "http://127.0.0.1:$MOCK_PORT" ;;
    proxy) echo "http://127.0.0.1:$PROXY_PORT" ;;
    nginx) echo "http://127.0.0.1:$NGINX_PORT" ;;
    litellm) echo "http://127.0.0.1:$LITELLM_PORT" ;;
  esac
}

# === measurements ===

# The arms in a fresh random order: no arm always runs first (cold caches) or last (a build that
# started mid-repetition).
shuffled_arms() { printf '%s\n' $ARMS | shuf | tr '\n' ' '; }

# CPU time in ns used so far by a process, its threads and its children (/proc/*/task/*/schedstat:
# nanosecond resolution, unlike the 10 ms ticks of /proc/*/stat).
cpu_ns() { # PID...
  local total=0 pid task ns
  for pid in "$@" $(for p in "$@"; do pgrep -P "$p" 2>/dev/null || true; done); do
    for task in /proc/"$pid"/task/*; do
      read -r ns _ <"$task/schedstat" 2>/dev/null || continue
      total=$((total + ns))
    done
  done
  echo "$total"
}

wrk_run() { # ARM CONNECTIONS SECONDS -> the BENCH_JSON object
  local url
  url="$(arm_url "$1")/v1/chat/completions"
  run_logged $(on_cpu "$LOAD_CPU") wrk -t1 -c"$2" -d"$3s" --timeout 10s -s bench/chat.lua "$url" \
    | sed -n 's/^BENCH_JSON //p'
}

probe() { # ARM ARGS...
  local arm=$1
  shift
  run_logged $(on_cpu "$LOAD_CPU") "$BIN/mockllm-probe" \
    --url "$(arm_url "$arm")/v1/chat/completions" --model bench "$@"
}

declare -A ARM_PID

# The arms not being measured are stopped (SIGSTOP) so that their background work (LiteLLM has
# some) cannot steal the shared proxy core; the arm being measured is resumed.
only_arm_running() { # ARM
  local arm pid
  for arm in "${!ARM_PID[@]}"; do
    [[ $arm == direct ]] && continue
    for pid in ${ARM_PID[$arm]} $(pgrep -P "${ARM_PID[$arm]}" 2>/dev/null || true); do
      if [[ $arm == "$1" ]]; then kill -CONT "$pid" 2>/dev/null || true; else kill -STOP "$pid" 2>/dev/null || true; fi
    done
  done
}

start_arm() { # ARM
  local arm=$1
  case $arm in
    direct) ARM_PIDS=("$MOCK_PID") ;;
    proxy) start_proxy ;;
    nginx) start_nginx ;;
    litellm) start_litellm ;;
    *) die "unknown arm $arm in BENCH_ARMS (use direct, proxy, nginx, litellm)" ;;
  esac
  ARM_PID[$arm]=${ARM_PIDS[0]}
  curl -fsS -o /dev/null -H 'content-type: application/json' -H "authorization: Bearer $BENCH_API_KEY" \
    --data '{"model":"bench","messages":[{"role":"user","content":"hi"}]}' \
    "$(arm_url "$arm")/v1/chat/completions" || die "$arm does not answer a chat completion"
  sleep 1
  result "\"arm\":\"$arm\",\"kind\":\"rss_idle\",\"kb\":$(memory_kb VmRSS "${ARM_PID[$arm]}")"
}

# Every measurement runs the arms back to back within one repetition, so that whatever else the
# machine does at that moment affects them alike; medians over the repetitions are reported.
measure_all() {
  local arm rep json idle connections warmup
  mock_config '{}'
  for arm in $ARMS; do
    only_arm_running "$arm"
    # LiteLLM imports and compiles lazily on its first requests: give it longer.
    warmup=$WARMUP
    [[ $arm == litellm ]] && ((warmup < 15)) && warmup=15
    log "$arm: warm-up ${warmup}s"
    wrk_run "$arm" 64 "$warmup" >/dev/null
  done
  for rep in $(seq "$REPS"); do
    for connections in 1 64; do
      for arm in $(shuffled_arms); do
        only_arm_running "$arm"
        idle=$(wait_quiet)
        log "$arm: c=$connections rep $rep/${REPS} (machine ${idle}% idle before)"
        json=$(wrk_run "$arm" "$connections" "$DURATION")
        [[ -n $json ]] || die "wrk printed no result for $arm c=$connections"
        result "\"arm\":\"$arm\",\"kind\":\"wrk\",\"concurrency\":$connections,\"rep\":$rep,\"idle_before\":$idle,\"result\":$json"
      done
    done
  done
  for arm in $ARMS; do
    result "\"arm\":\"$arm\",\"kind\":\"rss_load\",\"kb\":$(memory_kb VmHWM "${ARM_PID[$arm]}")"
  done

  # LiteLLM takes tens of milliseconds per stream: fewer of them keep the run bounded.
  local -A ttft_requests=([litellm]=100) long_requests=([litellm]=5)
  for rep in $(seq "$REPS"); do
    for arm in $(shuffled_arms); do
      only_arm_running "$arm"
      idle=$(wait_quiet)
      log "$arm: TTFT rep $rep/${REPS} (machine ${idle}% idle before)"
      json=$(probe "$arm" stream --requests "${ttft_requests[$arm]:-500}" --warmup 10)
      result "\"arm\":\"$arm\",\"kind\":\"ttft\",\"rep\":$rep,\"result\":$json"
    done
  done
  mock_config '{"chunks": 1000}'
  for rep in $(seq "$REPS"); do
    for arm in $(shuffled_arms); do
      only_arm_running "$arm"
      log "$arm: 1000-chunk streams rep $rep/${REPS}"
      json=$(probe "$arm" stream --requests "${long_requests[$arm]:-30}" --warmup 2)
      result "\"arm\":\"$arm\",\"kind\":\"long_stream\",\"chunks\":1000,\"rep\":$rep,\"result\":$json"
    done
  done
  # Chunks spaced in time: each one crosses the arm alone, so frame merging cannot hide its cost.
  # The arm's own CPU time per chunk, from the kernel's per-thread accounting.
  mock_config '{"chunks": 500, "interChunkDelay": "1ms"}'
  local before after
  for rep in $(seq "$REPS"); do
    for arm in $(shuffled_arms); do
      [[ $arm == direct ]] && continue
      only_arm_running "$arm"
      log "$arm: spaced 500-chunk streams rep $rep/${REPS}"
      before=$(cpu_ns "${ARM_PID[$arm]}")
      json=$(probe "$arm" stream --requests "${long_requests[$arm]:-20}" --warmup 0)
      after=$(cpu_ns "${ARM_PID[$arm]}")
      result "\"arm\":\"$arm\",\"kind\":\"spaced_stream\",\"chunks\":500,\"streams\":${long_requests[$arm]:-20},\"rep\":$rep,\"cpu_ns\":$((after - before)),\"result\":$json"
    done
  done
  mock_config '{"chunks": 20, "interChunkDelay": "50ms"}'
  for arm in $(shuffled_arms); do
    only_arm_running "$arm"
    log "$arm: $STREAMS concurrent streams"
    json=$(probe "$arm" concurrent --streams "$STREAMS" --deadline 30s)
    result "\"arm\":\"$arm\",\"kind\":\"concurrent\",\"result\":$json"
    result "\"arm\":\"$arm\",\"kind\":\"rss_streams\",\"kb\":$(memory_kb VmHWM "${ARM_PID[$arm]}")"
  done
  mock_config '{}'
  # The memory worst case: many clients sending the largest body the proxy accepts at once. Its
  # in-flight body budget refuses what does not fit (503), so the peak stays bounded.
  if [[ " $ARMS " == *" proxy "* ]]; then
    only_arm_running proxy
    log "proxy: 64 clients sending 32 MiB bodies at once"
    json=$(run_logged $(on_cpu "$LOAD_CPU") python3 bench/big_bodies.py \
      --url "$(arm_url proxy)/v1/chat/completions" --clients 64 --bytes $((32 * 1024 * 1024)))
    result "\"arm\":\"proxy\",\"kind\":\"big_bodies\",\"result\":$json,\"kb\":$(memory_kb VmHWM "${ARM_PID[proxy]}")"
  fi
}

machine_json() {
  python3 - "$@" <<'EOF'
import json, os, platform, subprocess, sys
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip() + \
               subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stderr.strip()
    except Exception as error:  # a missing tool is reported, not fatal
        return f"unknown ({error})"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
print(json.dumps({
    "cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(int(mem) / 1024 / 1024, 1),
    "kernel": platform.release(),
    "rustc": sh("rustc --version"), "wrk": sh("wrk -v 2>&1 | head -1"),
    "nginx": sh("nginx -v"), "litellm": sh(f"{sys.argv[1]}/bin/python -c \"import importlib.metadata as m; print(m.version('litellm'))\""),
    "commit": os.environ.get("BENCH_BUILT_FROM") or sh("git rev-parse --short HEAD"),
    "loadavg_start": os.environ.get("BENCH_LOADAVG_START", "unknown"),
    "loadavg_end": open("/proc/loadavg").read().split()[:3],
}))
EOF
}

main() {
  # 1 024 streams need ~3 000 descriptors across probe, proxy and mock.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  # A fresh strong key per run: LiteLLM refuses to start without one; the others ignore it.
  BENCH_API_KEY=sk-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  export BENCH_API_KEY
  mkdir -p "$WORK"
  : >"$RESULTS"
  : >"$COMMANDS"
  ensure_tools
  [[ " $ARMS " == *" litellm "* ]] && ensure_litellm
  build
  log "machine: $(nproc) cores; proxy on CPU $PROXY_CPU, wrk + probe + mock on CPU $LOAD_CPU"
  local started=$SECONDS
  QUIET_DEADLINE=$((SECONDS + ${BENCH_QUIET_BUDGET:-300}))
  # Other work on the machine shows in the tails; the report states the load it ran under.
  BENCH_LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
  export BENCH_LOADAVG_START
  local port
  for port in $MOCK_PORT $PROXY_PORT $PROXY_ADMIN_PORT $NGINX_PORT $LITELLM_PORT; do
    require_free_port "$port"
  done
  start_mock
  local arm
  for arm in $ARMS; do
    start_arm "$arm"
  done
  measure_all
  for arm in $ARMS; do
    kill -CONT "${ARM_PID[$arm]}" 2>/dev/null || true
  done
  machine_json "$VENV" >"$WORK/machine.json"
  python3 bench/report.py --results "$RESULTS" --machine "$WORK/machine.json" \
    --commands "$COMMANDS" --duration "$DURATION" --reps "$REPS" --streams "$STREAMS" \
    --elapsed $((SECONDS - started)) --out "$OUT"
  mkdir -p "$RAW"
  cp "$RESULTS" "$RAW/results.jsonl"
  cp "$WORK/machine.json" "$RAW/machine.json"
  sed "s#$ROOT/##g" "$COMMANDS" >"$RAW/commands.txt"
  log "wrote $OUT and the raw results in $RAW/ in $((SECONDS - started))s"
}

main "$@"
