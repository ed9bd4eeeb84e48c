#!/usr/bin/env bash
# End-to-end test: real Bazel (Debian's bazel-bootstrap 4.2.3) using reapd
# for remote execution, with one reap-worker (2 slots).
#
#   REAPD=build/cmd/reapd REAP_WORKER=build/cmd/reap-worker \
#       tests/e2e/bazel_remote_exec.sh
#
# Steps, on a copy of the example workspace in bazel/:
#   (a) bazel build //... --noremote_accept_cached: every spawned action is
#       executed remotely ("N remote", nothing local, no cache hit); outputs
#       are checked and //:hello is run;
#   (b) bazel test //:greet_test //:hello_test (cc_test and sh_test): the
#       test actions run remotely and pass;
#   (c) bazel build //:fails (exit 3, "oops-from-remote" on stderr) fails,
#       with that stderr in Bazel's output; again with cache lookups on (a
#       failed result must not have been cached);
#   (d) bazel clean, bazel build //...: every spawn is a "remote cache hit"
#       (results the scheduler wrote to the ActionCache), same count as (a).
#
# Over TLS (grpcs://localhost, --tls_certificate); reapd refuses anonymous
# callers; Bazel sends a client token (--remote_header), the worker its own
# worker token. Only the scheduler writes the ActionCache.
#
# Environment:
#   REAPD, REAP_WORKER      the binaries (required)
#   REAP_E2E_KEEP=1         keep the temp dir (printed) for debugging
#   REAP_E2E_BAZEL_TIMEOUT  seconds allowed to each bazel command (default 600)
#   BAZEL                   bazel binary (default: bazel)
#
# Arguments:
#   --parser-selftest       only test the summary-line parser on canned lines
#
# Exit status: 0 on success, 1 on failure, 77 when a prerequisite is missing.

set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SELF_DIR/../.." && pwd)
WS_SRC="$REPO_ROOT/bazel"
LOG_TAG=bazel-rexec
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SELF_DIR/lib.sh"

if [[ ${1:-} == --parser-selftest ]]; then
    lib_parser_selftest || fail "parser selftest failed"
    log "parser selftest: ok"
    exit 0
fi

check_prereqs
check_cc_prereqs
[[ -f $WS_SRC/WORKSPACE ]] || fail "example workspace not found at $WS_SRC"

T_START=$SECONDS
TMP=$(mktemp -d "${TMPDIR:-/tmp}/reap-bazel-rexec.XXXXXX")
lib_init

WS=$TMP/ws
BAZEL_WS=$WS
mkdir -p "$WS"
(cd "$WS_SRC" && tar --exclude='./bazel-*' -cf - .) | (cd "$WS" && tar -xf -)
prepare_debian_overrides

# TLS, and no anonymous access: Bazel checks reapd's certificate against a
# throw-away CA and proves itself with a client token, the worker with its
# own worker token. Clients never write the AC. (bazel_remote_cache.sh
# covers plaintext.)
REAPD_TLS=1
bazel_tls_setup
start_reapd --anonymous none
CLIENT_TOKEN=$(issue_token bazel-user client)
start_worker w1 2
BAZELRC=$TMP/e2e.bazelrc
write_bazelrc "$BAZELRC"
grep -q "remote_executor=grpcs://localhost:$PORT" "$BAZELRC" || fail "the bazelrc does not use grpcs://"
grep -q 'transport=tls' "$TMP/reapd.log" || fail "reapd is not serving TLS"

ROOT=$TMP/out
USER_ROOTS=("$ROOT")
NOCACHE=(--noremote_accept_cached)

# ---- (a) everything executed remotely ------------------------------------
log "(a) build //... (remote execution, cache lookups off)"
bz "$WS" "$ROOT" "$TMP/build1.log" build "${NOCACHE[@]}" //... ||
    { bz_show "$TMP/build1.log"; fail "(a) build failed"; }
log "(a) $(summary_line "$TMP/build1.log") [${BZ_SECS}s]"
SPAWNS=$(count_spawns "$TMP/build1.log") || fail "cannot parse the (a) summary"
msg=$(check_all_kind "$TMP/build1.log" remote "$SPAWNS" 2>&1) ||
    fail "(a) not every spawn ran remotely: $msg"

bz "$WS" "$ROOT" "$TMP/info.log" info bazel-bin || { bz_show "$TMP/info.log"; fail "bazel info failed"; }
BIN=$(grep -E '^/' "$TMP/info.log" | tail -n 1)
[[ -d $BIN ]] || fail "bazel-bin '$BIN' is not a directory"

check_outputs() {
    local what=$1 got want_sum got_sum
    got=$(cat "$BIN/shout.txt") || fail "$what: shout.txt missing"
    [[ $got == "HELLO FROM REAP_EXAMPLE" ]] || fail "$what: shout.txt: got '$got'"
    want_sum=$(seq 1 400000 | cksum)
    got_sum=$(cksum <"$BIN/blob.txt") || fail "$what: blob.txt missing"
    [[ $got_sum == "$want_sum" ]] || fail "$what: blob.txt corrupted: cksum '$got_sum', want '$want_sum'"
    got=$(cat "$BIN/blob_digest.txt")
    [[ $got == 2688895 ]] || fail "$what: blob_digest.txt: got '$got'"
    [[ -x $BIN/hello ]] || fail "$what: hello is not executable"
    got=$("$BIN/hello") || fail "$what: hello exited non-zero"
    [[ $got == "Hello, reap!" ]] || fail "$what: hello printed '$got'"
    got=$("$BIN/greet_test") || fail "$what: greet_test failed: $got"
}
check_outputs "(a)"
# "remote" could also be the scheduler answering from the AC: skip_cache_lookup
# was set, so the worker must have run every one of them.
n_started=$(grep -c 'action started' "$TMP/worker-w1.log" || true)
((n_started >= SPAWNS)) || fail "(a) the worker logged $n_started started actions, expected $SPAWNS"
log "(a) ok: $SPAWNS spawns, all remote ($n_started run by w1); hello printed '$("$BIN/hello")'"

# ---- (b) tests executed remotely ------------------------------------------
log "(b) test //:greet_test //:hello_test (remote execution, cache lookups off)"
bz "$WS" "$ROOT" "$TMP/test1.log" test "${NOCACHE[@]}" --nocache_test_results \
    --test_output=errors //:greet_test //:hello_test ||
    { bz_show "$TMP/test1.log"; fail "(b) bazel test failed"; }
log "(b) $(summary_line "$TMP/test1.log") [${BZ_SECS}s]"
# Two tests: each is a test spawn plus a test.xml generation spawn.
SUM_LENIENT=1 check_all_kind "$TMP/test1.log" remote 2>"$TMP/msg" ||
    fail "(b) not every test spawn ran remotely: $(cat "$TMP/msg")"
((SUM_KINDS[remote] >= 2)) || fail "(b) fewer than 2 remote spawns for 2 tests: $SUM_LINE"
for t in //:greet_test //:hello_test; do
    grep -Eq "^$t +PASSED in" "$TMP/test1.log" ||
        { bz_show "$TMP/test1.log"; fail "(b) no '$t PASSED' line (cached or not run?)"; }
done
grep -q 'Executed 2 out of 2 tests: 2 tests pass' "$TMP/test1.log" ||
    { bz_show "$TMP/test1.log"; fail "(b) expected 'Executed 2 out of 2 tests: 2 tests pass'"; }
log "(b) ok: $(grep -E '^//:(greet|hello)_test ' "$TMP/test1.log" | tr -s ' ' | paste -sd ';' -)"

# ---- (c) a failing action --------------------------------------------------
check_fails() { # check_fails WHAT LOG N: N = exit-3 runs the worker must have logged so far
    local what=$1 logf=$2
    if ((BZ_RC == 0)); then
        bz_show "$logf"
        fail "$what: bazel build //:fails succeeded"
    fi
    if ((BZ_RC != 1)); then
        bz_show "$logf"
        fail "$what: bazel exited $BZ_RC, expected 1 (build failure)"
    fi
    # A line of its own: the ERROR line quotes the command, which holds it too.
    grep -qx 'oops-from-remote' "$logf" ||
        { bz_show "$logf"; fail "$what: the action's stderr 'oops-from-remote' is not in bazel's output"; }
    grep -q 'Exit 3' "$logf" ||
        { bz_show "$logf"; fail "$what: the action's exit code 3 is not in bazel's output"; }
    # Bazel's summary does not count a failed spawn: the worker's log shows
    # that it ran there.
    local ran
    ran=$(grep -c 'action completed.* exit=3' "$TMP/worker-w1.log" || true)
    ((ran >= $3)) ||
        fail "$what: the worker log shows $ran completed action(s) with exit=3, expected $3"
    log "$what ok: bazel exit $BZ_RC; $(grep -m1 -E '^ERROR: .*//:fails' "$logf" | cut -c1-160)"
}
log "(c) build //:fails (must fail remotely)"
bz "$WS" "$ROOT" "$TMP/fails1.log" build "${NOCACHE[@]}" //:fails || true
check_fails "(c)" "$TMP/fails1.log" 1
log "(c) build //:fails again, cache lookups on (a failure is never cached)"
bz "$WS" "$ROOT" "$TMP/fails2.log" build //:fails || true
check_fails "(c2)" "$TMP/fails2.log" 2
grep -q 'remote cache hit' <(summary_line "$TMP/fails2.log") &&
    fail "(c2) a failed action was served from the cache: $(summary_line "$TMP/fails2.log")"

# ---- (d) after bazel clean, everything from the ActionCache ----------------
bz "$WS" "$ROOT" "$TMP/clean.log" clean || { bz_show "$TMP/clean.log"; fail "bazel clean failed"; }
log "(d) build //... after bazel clean (cache lookups on)"
bz "$WS" "$ROOT" "$TMP/build2.log" build //... ||
    { bz_show "$TMP/build2.log"; fail "(d) build failed"; }
log "(d) $(summary_line "$TMP/build2.log") [${BZ_SECS}s]"
msg=$(check_all_kind "$TMP/build2.log" "remote cache hit" "$SPAWNS" 2>&1) ||
    fail "(d) not served from the ActionCache: $msg"
check_outputs "(d)"

bz "$WS" "$ROOT" "$TMP/shutdown.log" shutdown || true
kill -0 "$REAPD_PID" 2>/dev/null || fail "reapd died during the test"
kill -0 "$WORKER_PID" 2>/dev/null || fail "the worker died during the test"
log "PASS: $SPAWNS actions executed remotely, tests passed remotely, failure reported," \
    "all $SPAWNS served from the ActionCache after clean [$((SECONDS - T_START))s total]"
