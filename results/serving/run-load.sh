#!/usr/bin/env bash
# The load figures of results/serving/load.jsonl: each server configuration started on its
# own, 1/4/16/64 concurrent clients × 4 requests each (the built-in LJSpeech clips, 1.9-5.1 s),
# then stopped. Usage: results/serving/run-load.sh [OUT.jsonl]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-results/serving/load.jsonl}
PORT=8090
TK=.venv/bin/toolkit
run() {  # label, serve options...
  local label=$1; shift
  $TK serve --port $PORT "$@" > "/tmp/serve-$PORT.log" 2>&1 &
  local pid=$!
  for _ in $(seq 240); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break; sleep 1; done
  $TK load-test --url "http://127.0.0.1:$PORT" --clients 1,4,16,64 --requests 4 \
      --label "$label" --out "$OUT"
  kill -TERM $pid; wait $pid || true
  sleep 3
}
run "serve, batching off (--max-batch 1)" --max-batch 1
run "serve, batching on (--max-batch 8)" --max-batch 8
run "ray, 1 replica × 2 CPUs" --engine ray --replicas 1 --cpus-per-replica 2 --max-batch 8
run "ray, 2 replicas × 1 CPU" --engine ray --replicas 2 --cpus-per-replica 1 --max-batch 8
$TK load-test --report "$OUT"
