#!/usr/bin/env bash
# Runs `tidings bench` presets against four servers in one sitting, rounds alternated:
# Tidings with durable history, Tidings --no-history, the hand-written baseline
# (benches/baseline: axum + tokio::sync::broadcast) and nginx + nchan (Debian's
# libnginx-mod-nchan, installed here when missing, run with its own prefix and config on
# a free port; /etc/nginx is never touched). Each run gets a fresh server; every run
# stops by itself. Results: one JSON summary per run in $OUT, then scripts/chart.py
# draws docs/img/bench.svg from them.
#
# Usage: scripts/bench.sh [PRESET...]      (default: idle fanout throughput throughput8
#                                           channels resume latency)
# Environment: ROUNDS (2), OUT (target/bench-results), SERVERS ("durable nohistory
# baseline nchan"), IDLE_SUBSCRIBERS (19900), EXTRA (more `tidings bench` flags).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
OUT=${OUT:-target/bench-results}
SERVERS=${SERVERS:-"durable nohistory baseline nchan"}
IDLE_SUBSCRIBERS=${IDLE_SUBSCRIBERS:-19900}
EXTRA=${EXTRA:-}
if [ "$#" -gt 0 ]; then PRESETS="$*"; else PRESETS="idle fanout throughput throughput8 channels resume latency"; fi
KEY="tidings bench key, not a secret, 32+ bytes long"
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so

step() { printf '\n==> %s\n' "$*" >&2; }

case " $SERVERS " in
*" nchan "*)
  if [ ! -f "$NCHAN_MODULE" ] || ! command -v nginx >/dev/null 2>&1; then
    step "installing nginx and nchan (Debian's libnginx-mod-nchan)"
    if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq nginx-core libnginx-mod-nchan >/dev/null
  fi
  ;;
esac

step "release build of tidings and the baseline"
cargo build --release --quiet -p tidings -p tidings-baseline
TIDINGS=target/release/tidings
BASELINE=target/release/tidings-baseline
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/tidings-bench.XXXXXX)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # PORT: waits until something listens there (at most 30 s)
  for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# start_server NAME: sets SERVER_PID, PIDS (the processes to sample) and FLAGS (how
# `tidings bench` talks to it).
start_server() {
  local port
  port=$(free_port)
  local hub="http://127.0.0.1:$port"
  case "$1" in
  durable | nohistory)
    local history=(--db "$WORK/history.db")
    [ "$1" = nohistory ] && history=(--no-history)
    rm -f "$WORK/history.db"
    RUST_LOG=warn TIDINGS_JWT_KEY="$KEY" "$TIDINGS" serve --addr "127.0.0.1:$port" "${history[@]}" \
      --no-demo --max-connections 19990 >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    PIDS=("$SERVER_PID")
    FLAGS=(--hub "$hub" --jwt-key "$KEY")
    ;;
  baseline)
    "$BASELINE" "127.0.0.1:$port" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    PIDS=("$SERVER_PID")
    FLAGS=(--hub "$hub")
    ;;
  nchan)
    local prefix="$WORK/nchan"
    rm -rf "$prefix"
    mkdir -p "$prefix/temp"
    chmod -R a+rwx "$prefix"
    sed -e "s|@PORT@|$port|" -e "s|@PREFIX@|$prefix|" -e "s|@MODULE@|$NCHAN_MODULE|" \
      scripts/bench-nchan.conf >"$prefix/nginx.conf"
    nginx -p "$prefix" -e "$prefix/error.log" -c "$prefix/nginx.conf" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    FLAGS=(--sub-url "$hub/sub?id={topic}" --pub-url "$hub/pub?id={topic}" --pub-body '{data}'
      --pub-content-type text/plain)
    ;;
  esac
  wait_port "$port"
  if [ "$1" = nchan ]; then
    sleep 0.3 # the workers start after the master listens
    mapfile -t PIDS < <(echo "$SERVER_PID"; pgrep -P "$SERVER_PID")
  fi
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# The flags of each preset (beyond the server's).
preset_flags() {
  case "$1" in
  idle) echo "--preset idle --subscribers $IDLE_SUBSCRIBERS --ramp 5000 --settle 3s --duration 5s" ;;
  fanout) echo "--preset fanout --processes 2" ;;
  throughput) echo "--preset throughput" ;;
  throughput8) echo "--preset throughput --publishers 8" ;;
  channels) echo "--preset channels --processes 2" ;;
  resume) echo "--preset resume" ;;
  latency) echo "--preset latency" ;;
  *) echo "unknown preset $1" >&2; return 1 ;;
  esac
}

for round in $(seq "$ROUNDS"); do
  # Alternate the servers' order from round to round, so that none always runs first.
  read -r -a servers <<<"$SERVERS"
  if [ $((round % 2)) -eq 0 ]; then
    reversed=()
    for ((i = ${#servers[@]} - 1; i >= 0; i--)); do reversed+=("${servers[i]}"); done
    servers=("${reversed[@]}")
  fi
  for preset in $PRESETS; do
    for server in "${servers[@]}"; do
      step "round $round: $preset against $server (load average $(cut -d' ' -f1-3 /proc/loadavg))"
      start_server "$server"
      read -r -a flags <<<"$(preset_flags "$preset")"
      if [ "$preset" = resume ] && [ "$server" = baseline ]; then
        stop_server
        continue # no history to resume from
      fi
      if [ "$preset" = resume ] && [ "$server" = nchan ]; then
        # nchan's ids are not in its publish answer: /sub-oldest sends a new subscriber
        # the whole buffer, which is the same replay.
        FLAGS[1]="${FLAGS[1]/\/sub?/\/sub-oldest?}"
        flags+=(--resume-from none)
      fi
      pid_flags=()
      for pid in "${PIDS[@]}"; do pid_flags+=(--server-pid "$pid"); done
      # shellcheck disable=SC2086
      "$TIDINGS" bench "${FLAGS[@]}" "${flags[@]}" "${pid_flags[@]}" --label "$server" --quiet \
        --json "$OUT/$preset-$server-$round.json" $EXTRA || echo "(the run above was not OK)" >&2
      stop_server
    done
  done
done
step "results in $OUT"
python3 scripts/chart.py "$OUT" docs/img/bench.svg
