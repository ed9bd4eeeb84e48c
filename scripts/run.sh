#!/usr/bin/env bash
# Install what is missing, build, and run reapd all-in-one on
# 127.0.0.1:8980 with its data in ./reap-data (git-ignored). Extra
# arguments go to reapd (e.g. --ac-writers anonymous). Ctrl-C stops it
# cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target reapd
exec build/cmd/reapd --listen 127.0.0.1:8980 --data reap-data "$@"
