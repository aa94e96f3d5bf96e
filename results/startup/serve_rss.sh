#!/usr/bin/env bash
# Issue 22: resident memory of `toolkit serve` once /health answers 200 (models loaded).
# usage: results/startup/serve_rss.sh LABEL PORT TOOLKIT_COMMAND ARGS...
set -uo pipefail
label=$1 port=$2; shift 2
"$@" --port "$port" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 600); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" || true)
  [ "$code" = 200 ] && break
  sleep 0.2
done
sleep 1
# the server may be a child of a wrapper: take the process listening on the port's tree
rss=0
for p in $pid $(pgrep -P $pid); do
  r=$(awk '/VmRSS/{print $2}' /proc/$p/status 2>/dev/null || echo 0); rss=$((rss + r))
done
echo "$label: /health $code, RSS after start-up $((rss / 1024)) MB"
kill $pid 2>/dev/null; wait $pid 2>/dev/null
