#!/usr/bin/env bash
# Two throw-away Redis servers standing in for two regions:
#   us-east on 127.0.0.1:6379, eu-west on 127.0.0.1:6380 (no persistence).
# ./run_redis.sh start | stop | kill us-east | start us-east | status
set -euo pipefail
DIR=${TMPDIR:-/tmp}/hitcounter-redis
mkdir -p "$DIR"
port_of() { case "$1" in us-east) echo 6379 ;; eu-west) echo 6380 ;; *) echo "unknown region $1" >&2; exit 2 ;; esac; }
start_one() {
  local port; port=$(port_of "$1")
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --pidfile "$DIR/$1.pid" --logfile "$DIR/$1.log" --dir "$DIR"
  echo "$1 started on 127.0.0.1:$port"
}
kill_one() {
  if [ -f "$DIR/$1.pid" ]; then kill -9 "$(cat "$DIR/$1.pid")" 2>/dev/null || true; rm -f "$DIR/$1.pid"; echo "$1 killed"; fi
}
case "${1:-}" in
  start) if [ -n "${2:-}" ]; then start_one "$2"; else start_one us-east; start_one eu-west; fi ;;
  kill)  kill_one "${2:?which region? us-east or eu-west}" ;;
  stop)  kill_one us-east; kill_one eu-west ;;
  status) for r in us-east eu-west; do p=$(port_of $r); redis-cli -p "$p" ping >/dev/null 2>&1 && echo "$r up" || echo "$r down"; done ;;
  *) echo "usage: $0 start [REGION] | kill REGION | stop | status" >&2; exit 2 ;;
esac
