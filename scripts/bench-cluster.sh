#!/usr/bin/env bash
# Cluster benchmark (docs/BENCHMARKS.md, "Cluster mode"): the throughput preset (100
# subscribers, 64 publisher connections, 10 s) once per node, against one node on the file log,
# then one, two and three nodes sharing one Redis. Each node gets its own `tidings bench`,
# which publishes to that node and subscribes there, on topics of its own; every node still
# reads (and matches) the whole stream. Needs redis-server and curl; every process it starts
# is stopped at the end.
# Usage: scripts/bench-cluster.sh [all|file|redis1|redis2|redis3]
# Environment: BIN (default target/release/tidings, built when missing), DUR (10s), OUT.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/tidings}
[ -x "$BIN" ] || cargo build --release --quiet -p tidings
BENCH=$BIN
WORK=$(mktemp -d /tmp/tidings-cluster.XXXXXX)
KEY='bench key, not a secret, at least 32 bytes'
OUT=${OUT:-$WORK/out}; mkdir -p "$OUT"
RP=6391
pids=()
cleanup() { for p in "${pids[@]}"; do kill $p 2>/dev/null; done; wait 2>/dev/null; pids=(); }
trap 'cleanup; rm -rf "$WORK"' EXIT
start_redis() {
  rm -rf $WORK/redis; mkdir -p $WORK/redis
  redis-server --port $RP --save '' --appendonly yes --appendfsync everysec --dir $WORK/redis --daemonize no >$WORK/redis.log 2>&1 &
  pids+=($!); sleep 1
}
start_node() { # port, extra args...
  local port=$1; shift
  TIDINGS_JWT_KEY="$KEY" $BIN serve --addr 127.0.0.1:$port --no-demo --max-connections 19990 --max-connections-per-ip 0 --max-requests-per-ip 0 "$@" >$WORK/node-$port.log 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
}
run() { # label nodes...
  local label=$1; shift
  local bp=()
  local i=0
  for port in "$@"; do
    spid=$(pgrep -f "serve --addr 127.0.0.1:$port" | head -1)
    $BENCH bench --preset throughput --hub http://127.0.0.1:$port --topic "n$i-{t}" --jwt-key "$KEY" \
      --server-pid $spid --duration ${DUR:-10s} --quiet --label "$label-node$i" --json $OUT/$label-node$i.json > $OUT/$label-node$i.txt 2>&1 &
    bp+=($!); i=$((i+1))
  done
  for p in "${bp[@]}"; do wait $p; done
  python3 - "$label" $OUT/$label-node*.json <<'PY'
import json,sys
label=sys.argv[1]; rs=[json.load(open(f)) for f in sys.argv[2:]]
acked=sum(r['publish']['rate'] for r in rs)
got=sum(r['events']['received'] for r in rs)
dur=max(r['publish']['seconds'] for r in rs)
miss=sum(r['events']['missing'] for r in rs); dup=sum(r['events']['duplicates'] for r in rs)
p99=max(r['latency_ms']['p99'] for r in rs)
ack_p50=max(r['publish']['ack_ms']['p50'] for r in rs)
cpu=sum(r['server']['cpu_s'] or 0 for r in rs)
print(f"{label}: acked publishes/s {acked:,.0f} (sum over nodes); deliveries/s {got/dur:,.0f}; missing {miss}; duplicates {dup}; foreign {sum(r['events']['foreign'] for r in rs)}; worst ack p50 {ack_p50} ms; worst latency p99 {p99} ms; hub CPU {cpu:.1f} s; load {rs[0]['load_average_start']}")
PY
}
mode=${1:-all}
if [ "$mode" = file ] || [ "$mode" = all ]; then
  rm -rf $WORK/db; mkdir -p $WORK/db
  start_node 3101 --db $WORK/db/t.db; run file1 3101; cleanup
fi
for n in 1 2 3; do
  if [ "$mode" = all ] || [ "$mode" = redis$n ]; then
    start_redis
    ports=(); for k in $(seq 1 $n); do start_node $((3100+k)) --redis redis://127.0.0.1:$RP --redis-stream bench; ports+=($((3100+k))); done
    run redis$n "${ports[@]}"; cleanup
  fi
done
