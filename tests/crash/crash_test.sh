#!/usr/bin/env bash
# crash_test.sh - kill -9 reapd while several clients upload; after a restart
# every blob it serves must hash to its digest and every blob it
# acknowledged (or reports present) must read back intact.
#
#   REAPD=build/cmd/reapd REAP_LOAD=build/tests/e2e/reap-load tests/crash/crash_test.sh
#
# Two crash cycles on one data folder: start reapd (port 0, fsync on), run
# `reap-load upload` (4 threads), kill -9 the server after a random 2-4 s,
# let the load notice and exit. Then start reapd once more, run
# `reap-load verify`, and stop the server with SIGTERM: it must exit 0
# within 15 s. Loopback only; every wait is bounded.
#
# Environment:
#   REAPD, REAP_LOAD    the binaries (required)
#   REAP_CRASH_SEED     seed for the kill delays (default: random, printed)
#   REAP_CRASH_KEEP=1   keep the temp folder (printed) for debugging
#
# Exit status: 0 on success, 1 on failure.

set -euo pipefail

: "${REAPD:?set REAPD to the reapd binary}"
: "${REAP_LOAD:?set REAP_LOAD to the reap-load binary}"

SEED=${REAP_CRASH_SEED:-$(( $(date +%s) % 32768 ))}
RANDOM=$SEED
TMP=$(mktemp -d "${TMPDIR:-/tmp}/reap-crash.XXXXXX")
LOG="$TMP/acked.log"
SERVER_PID=""
LOAD_PID=""
PORT=""
RUN=0

log() { printf 'crash_test: %s\n' "$*"; }

fail() {
	log "FAIL: $*"
	for f in "$TMP"/reapd.*.err; do
		[[ -f $f ]] || continue
		log "--- tail of $f"
		tail -n 20 "$f" || true
	done
	exit 1
}

cleanup() {
	local pid
	for pid in $LOAD_PID $SERVER_PID; do
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [[ ${REAP_CRASH_KEEP:-0} == 1 ]]; then
		log "kept $TMP"
	else
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Start reapd on the shared data folder; sets SERVER_PID and PORT.
start_server() {
	local out line
	RUN=$((RUN + 1))
	out="$TMP/reapd.$RUN.out"
	"$REAPD" --listen 127.0.0.1:0 --data "$TMP/data" --anonymous-role writer --metrics off \
		>"$out" 2>"$TMP/reapd.$RUN.err" &
	SERVER_PID=$!
	PORT=""
	for _ in $(seq 1 200); do
		line=$(grep -m1 '^reapd listening on port ' "$out" 2>/dev/null || true)
		if [[ -n $line ]]; then
			PORT=${line##* }
			break
		fi
		kill -0 "$SERVER_PID" 2>/dev/null || fail "reapd (run $RUN) exited during startup"
		sleep 0.1
	done
	[[ $PORT =~ ^[0-9]+$ && $PORT != 0 ]] || fail "reapd (run $RUN) not ready within 20 s"
	log "reapd run $RUN: pid $SERVER_PID port $PORT"
}

# Wait up to $2 seconds for pid $1 to exit; its status in WAIT_RC.
wait_bounded() {
	local pid=$1 secs=$2 i
	for ((i = 0; i < secs * 10; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			WAIT_RC=0
			wait "$pid" || WAIT_RC=$?
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# One crash cycle: server up, load, kill -9 after a random delay, load exits.
crash_cycle() {
	local cycle=$1 delay out acked
	start_server
	out="$TMP/load.$cycle.out"
	"$REAP_LOAD" upload --target "127.0.0.1:$PORT" --threads 4 --seconds 20 \
		--seed "$cycle" --log "$LOG" >"$out" 2>"$TMP/load.$cycle.err" &
	LOAD_PID=$!
	delay="$((2 + RANDOM % 2)).$((RANDOM % 10))"
	sleep "$delay"
	kill -0 "$SERVER_PID" 2>/dev/null || fail "reapd died by itself during cycle $cycle"
	kill -9 "$SERVER_PID"
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=""
	log "cycle $cycle: killed reapd with SIGKILL after ${delay} s"
	if ! wait_bounded "$LOAD_PID" 30; then
		fail "reap-load (cycle $cycle) still running 30 s after the kill"
	fi
	LOAD_PID=""
	cat "$out"
	if [[ $WAIT_RC != 0 ]]; then
		cat "$TMP/load.$cycle.err" >&2
		fail "reap-load upload (cycle $cycle) exited $WAIT_RC"
	fi
	acked=$(sed -n 's/^upload: [0-9]* attempted, \([0-9]*\) acked.*/\1/p' "$out")
	[[ -n $acked && $acked -gt 0 ]] || fail "cycle $cycle: no blob was acknowledged"
}

log "seed $SEED, temp folder $TMP"
crash_cycle 1
crash_cycle 2

start_server
if ! timeout -s KILL 120 "$REAP_LOAD" verify --target "127.0.0.1:$PORT" --threads 4 \
	--log "$LOG"; then
	fail "verify failed"
fi

kill -TERM "$SERVER_PID"
if ! wait_bounded "$SERVER_PID" 15; then
	fail "reapd did not exit within 15 s of SIGTERM"
fi
SERVER_PID=""
[[ $WAIT_RC == 0 ]] || fail "reapd exited $WAIT_RC after SIGTERM (want 0)"
log "reapd stopped cleanly"
log "PASS"
