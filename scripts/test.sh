#!/usr/bin/env bash
# Install what is missing, build, and run the whole test suite twice: a
# normal build, then an AddressSanitizer + UndefinedBehaviorSanitizer build.
# Unit tests (criterion), fuzz replays, the kill -9 crash test and the
# Bazel end-to-end test all run in both. ctest prints the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

jobs=$(nproc)
run_suite() {
  local dir=$1; shift
  echo "=== build: $dir ($*)"
  cmake -S . -B "$dir" "$@" >/dev/null
  if ! cmake --build "$dir" -j"$jobs" >"$dir/build.log" 2>&1; then
    cat "$dir/build.log"
    echo "=== build failed: $dir"
    exit 1
  fi
  echo "=== test: $dir"
  (cd "$dir" && ctest --output-on-failure --timeout 1500)
}

run_suite build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo
# Sanitizers: leaks are checked too; any report fails the test that saw it.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DREAP_SANITIZE=ON
