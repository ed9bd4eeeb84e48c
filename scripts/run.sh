#!/usr/bin/env bash
# Install what is missing, build, and run reap all-in-one: reapd on
# 127.0.0.1:8980 with its data in ./reap-data (git-ignored) and one
# reap-worker (one slot per core) pulling actions from it. Arguments go to
# reapd (e.g. --capacity 50GiB). Ctrl-C stops both cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target reapd reap-worker reap

DATA=reap-data
mkdir -p "$DATA"
build/cmd/reapd --listen 127.0.0.1:8980 --data "$DATA" "$@" &
reapd_pid=$!
worker_pid=""
stop() {
  trap - INT TERM EXIT
  [ -n "$worker_pid" ] && kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
  kill -TERM "$reapd_pid" 2>/dev/null && wait "$reapd_pid" 2>/dev/null
  exit 0
}
trap stop INT TERM EXIT

# reapd creates the workers' secret on first start; wait for it and the port.
for _ in $(seq 100); do
  if [ -s "$DATA/worker.token" ] && (exec 3<>/dev/tcp/127.0.0.1/8980) 2>/dev/null; then
    break
  fi
  kill -0 "$reapd_pid" 2>/dev/null || { echo "reapd exited" >&2; exit 1; }
  sleep 0.1
done
build/cmd/reap-worker --scheduler 127.0.0.1:8980 --token-file "$DATA/worker.token" \
  --work "$DATA/worker/work" --cache "$DATA/worker/cache" --platform OSFamily=linux &
worker_pid=$!
wait "$reapd_pid"
