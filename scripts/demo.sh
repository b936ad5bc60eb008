#!/usr/bin/env bash
# make demo: start a worker on the embedded NATS server, submit the example
# jobs, print the rankings, stop the worker.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=bin/rerank
PORT="${RERANK_DEMO_PORT:-14222}"
DATA="$(mktemp -d)"
LOG="$DATA/serve.log"
# No metrics or HTTP listener: the demo must run beside a `make run`.
$BIN serve --listen "127.0.0.1:$PORT" --data-dir "$DATA/nats" --log-format text --metrics-addr "" --http "" >"$LOG" 2>&1 &
PID=$!
cleanup() { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
for _ in $(seq 1 300); do
  grep -q "worker started" "$LOG" && break
  kill -0 "$PID" 2>/dev/null || { cat "$LOG"; exit 1; }
  sleep 0.1
done
echo "(demo model: random weights — the order below is meaningless; see README for real models)"
for job in examples/*.json; do
  echo; echo "== $job"
  $BIN submit --nats-url "nats://127.0.0.1:$PORT" "$job" || true
done
