#!/usr/bin/env bash
# End-to-end test: real Bazel (Debian's bazel-bootstrap 4.2.3) against reapd
# used as a REAPI v2 remote cache.
#
#   REAPD=build/cmd/reapd tests/e2e/bazel_remote_cache.sh
#
# Steps: copy the example workspace in bazel/ to a temp dir, start reapd on
# 127.0.0.1, build //... with --remote_cache (build #1, executes everything
# locally and uploads), `bazel clean`, build again (build #2: every spawned
# action must be a remote cache hit), then `bazel clean --expunge`, shut the
# server down and build with a brand-new --output_user_root (build #3: again
# all hits), check the outputs' contents and run the cc_binary.
#
# Environment:
#   REAPD                  path to the reapd binary (required in remote mode)
#   REAP_E2E_PORT          port for reapd (default: a free one is picked)
#   REAP_E2E_CACHE         "remote" (default) or "disk": "disk" runs the same
#                          flow against bazel's --disk_cache instead of reapd
#                          (no REAPD needed; checks the test itself)
#   REAP_E2E_HIT_WORD      wording bazel prints for cache hits in its process
#                          summary (default "remote cache hit"; Bazel 4.2.3
#                          prints that for --disk_cache hits too, newer
#                          Bazels print "disk cache hit" there)
#   REAP_E2E_KEEP=1        keep the temp dir (printed) for debugging
#   REAP_E2E_BAZEL_TIMEOUT seconds allowed to each bazel command (default 600)
#   BAZEL                  bazel binary (default: bazel)
#
# Arguments:
#   --parser-selftest      only test the summary-line parser on canned lines
#
# Exit status: 0 on success, 1 on failure, 77 when a prerequisite (bazel,
# Debian's rules_cc/rules_java, a C compiler) is missing.

set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SELF_DIR/../.." && pwd)
WS_SRC="$REPO_ROOT/bazel"

BAZEL=${BAZEL:-bazel}
CACHE_MODE=${REAP_E2E_CACHE:-remote}
HIT_WORD=${REAP_E2E_HIT_WORD:-remote cache hit}
BAZEL_TIMEOUT=${REAP_E2E_BAZEL_TIMEOUT:-600}  # seconds, each bazel invocation
REAPD_START_TIMEOUT=30       # seconds to wait for reapd to accept connections
DEBIAN_RULES=/usr/share/bazel/rules

log()  { printf '[bazel-e2e] %s\n' "$*"; }
fail() { printf '[bazel-e2e] FAIL: %s\n' "$*" >&2; exit 1; }
skip() { printf '[bazel-e2e] SKIP: %s\n' "$*" >&2; exit 77; }

# ---------------------------------------------------------------------------
# Summary-line parser.
#
# Bazel 4.2.3 prints one line per build such as (observed):
#   INFO: 21 processes: 10 internal, 11 linux-sandbox.
#   INFO: 21 processes: 11 remote cache hit, 10 internal.
#   INFO: 1 process: 1 internal.
# summary_line LOG: prints the last such line of LOG.
summary_line() {
    grep -E '^INFO: [0-9]+ process(es)?[.:]' "$1" | tail -n 1
}

# parse_summary LOG: parses LOG's last summary line into SUM_LINE, SUM_TOTAL
# and SUM_KINDS (associative: kind -> count, e.g. [internal]=10
# [linux-sandbox]=11). Fails, with a message on stderr, if there is no such
# line or it does not add up.
declare -A SUM_KINDS=()
parse_summary() {
    local logf=$1 rest part n kind sum=0
    local -a parts=()
    SUM_KINDS=()
    SUM_LINE=$(summary_line "$logf") || true
    if [[ -z $SUM_LINE ]]; then
        echo "no 'INFO: N processes' summary line found" >&2
        return 1
    fi
    if ! [[ $SUM_LINE =~ ^INFO:\ ([0-9]+)\ process(es)?([.:])(.*)$ ]]; then
        echo "unparsable summary line: $SUM_LINE" >&2
        return 1
    fi
    SUM_TOTAL=${BASH_REMATCH[1]}
    rest=${BASH_REMATCH[4]}
    rest=${rest%.}
    if [[ -n ${rest//[[:space:]]/} ]]; then
        IFS=',' read -r -a parts <<<"$rest"
    fi
    for part in "${parts[@]}"; do
        part=$(printf '%s' "$part" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
        if ! [[ $part =~ ^([0-9]+)\ (.+)$ ]]; then
            echo "unparsable item '$part' in: $SUM_LINE" >&2
            return 1
        fi
        n=${BASH_REMATCH[1]}
        kind=${BASH_REMATCH[2]}
        SUM_KINDS[$kind]=$(( ${SUM_KINDS[$kind]:-0} + n ))
        sum=$((sum + n))
    done
    if ((sum != SUM_TOTAL)); then
        echo "items add up to $sum, not $SUM_TOTAL: $SUM_LINE" >&2
        return 1
    fi
}

# count_spawns LOG: prints the number of non-"internal" processes.
count_spawns() {
    parse_summary "$1" || return 1
    echo $((SUM_TOTAL - ${SUM_KINDS[internal]:-0}))
}

# check_all_cached LOG WORD [EXPECTED]
# Succeeds iff LOG's process summary says that every spawned (non-internal)
# process was a "WORD" (e.g. "remote cache hit"), that there was at least one,
# and, if EXPECTED is given, exactly EXPECTED of them. Any other kind
# (linux-sandbox, processwrapper-sandbox, local, remote, worker, ...) fails.
check_all_cached() {
    local logf=$1 word=$2 expected=${3:-} kind other="" hits
    parse_summary "$logf" || return 1
    for kind in "${!SUM_KINDS[@]}"; do
        if [[ $kind != "$word" && $kind != internal ]]; then
            other+="${other:+, }${SUM_KINDS[$kind]} $kind"
        fi
    done
    hits=${SUM_KINDS[$word]:-0}
    if [[ -n $other ]]; then
        echo "not all spawns were '$word' ($other): $SUM_LINE" >&2
        return 1
    fi
    if ((hits == 0)); then
        echo "no '$word' at all: $SUM_LINE" >&2
        return 1
    fi
    if [[ -n $expected ]] && ((hits != expected)); then
        echo "expected $expected '$word', got $hits: $SUM_LINE" >&2
        return 1
    fi
}

parser_selftest() {
    local d f rc=0
    d=$(mktemp -d)
    f=$d/log
    # t EXPECT(0|1) WORD EXPECTED_COUNT LINE...
    t() {
        local want=$1 word=$2 cnt=$3; shift 3
        printf '%s\n' "$@" >"$f"
        local got=0
        check_all_cached "$f" "$word" "$cnt" 2>/dev/null || got=1
        if [[ $got != "$want" ]]; then
            echo "parser selftest: want $want got $got for: $*" >&2
            rc=1
        fi
    }
    t 0 "remote cache hit" 11 "INFO: 21 processes: 11 remote cache hit, 10 internal."
    t 0 "remote cache hit" ""  "INFO: 21 processes: 11 remote cache hit, 10 internal."
    t 0 "remote cache hit" 3   "INFO: 3 processes: 3 remote cache hit."
    t 0 "disk cache hit"   11  "INFO: 21 processes: 10 internal, 11 disk cache hit."
    t 0 "remote cache hit" 2   "INFO: 9 processes: 9 internal." \
                               "INFO: 5 processes: 2 remote cache hit, 3 internal."
    t 1 "remote cache hit" 11  "INFO: 21 processes: 10 remote cache hit, 10 internal, 1 linux-sandbox."
    t 1 "remote cache hit" ""  "INFO: 21 processes: 10 internal, 11 linux-sandbox."
    t 1 "remote cache hit" ""  "INFO: 4 processes: 2 remote cache hit, 2 processwrapper-sandbox."
    t 1 "remote cache hit" ""  "INFO: 4 processes: 4 local."
    t 1 "remote cache hit" 12  "INFO: 21 processes: 11 remote cache hit, 10 internal."
    t 1 "remote cache hit" ""  "INFO: 1 process: 1 internal."
    t 1 "remote cache hit" ""  "INFO: 0 processes."
    t 1 "remote cache hit" ""  "INFO: Build completed successfully, 1 total action"
    t 1 "disk cache hit"   ""  "INFO: 21 processes: 11 remote cache hit, 10 internal."
    t 1 "remote cache hit" ""  "INFO: 22 processes: 11 remote cache hit, 10 internal."
    printf 'INFO: 21 processes: 10 internal, 11 linux-sandbox.\n' >"$f"
    [[ $(count_spawns "$f") == 11 ]] || { echo "count_spawns: got $(count_spawns "$f")" >&2; rc=1; }
    printf 'INFO: 4 processes: 4 linux-sandbox.\n' >"$f"
    [[ $(count_spawns "$f") == 4 ]] || { echo "count_spawns(2): got $(count_spawns "$f")" >&2; rc=1; }
    printf 'INFO: 1 process: 1 internal.\n' >"$f"
    [[ $(count_spawns "$f") == 0 ]] || { echo "count_spawns(3): got $(count_spawns "$f")" >&2; rc=1; }
    rm -rf "$d"
    return $rc
}

if [[ ${1:-} == --parser-selftest ]]; then
    if parser_selftest; then
        log "parser selftest: ok"
        exit 0
    fi
    fail "parser selftest failed"
fi

# ---------------------------------------------------------------------------
# Prerequisites.

command -v "$BAZEL" >/dev/null 2>&1 || skip "bazel not found (apt-get install bazel-bootstrap)"
command -v timeout >/dev/null 2>&1 || skip "timeout(1) not found"
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || skip "no C compiler"
[[ -d $DEBIAN_RULES/cc && -d $DEBIAN_RULES/java ]] ||
    skip "$DEBIAN_RULES/{cc,java} missing (apt-get install bazel-rules-cc bazel-rules-java)"
[[ -f $WS_SRC/WORKSPACE ]] || fail "example workspace not found at $WS_SRC"
case $CACHE_MODE in
remote)
    [[ -n ${REAPD:-} ]] || fail "set REAPD to the reapd binary"
    [[ -x $REAPD ]] || fail "REAPD=$REAPD is not executable"
    REAPD=$(cd "$(dirname "$REAPD")" && pwd)/$(basename "$REAPD")
    ;;
disk) ;;
*) fail "REAP_E2E_CACHE must be 'remote' or 'disk', not '$CACHE_MODE'" ;;
esac

# ---------------------------------------------------------------------------
# Temp dir, cleanup.

TMP=$(mktemp -d "${TMPDIR:-/tmp}/reap-bazel-e2e.XXXXXX")
WS=$TMP/ws
REAPD_PID=""
USER_ROOTS=()

cleanup() {
    local rc=$?
    set +e
    local root
    for root in "${USER_ROOTS[@]}"; do
        if [[ -d $root ]]; then
            (cd "$WS" 2>/dev/null || cd "$TMP"
             timeout 60 "$BAZEL" --nohome_rc --output_user_root="$root" shutdown \
                 >/dev/null 2>&1)
            # A server still busy with a timed-out build ignores shutdown
            # until that build ends: kill it (it is ours, by its pid file).
            local pidf pid
            for pidf in "$root"/*/server/server.pid.txt; do
                [[ -f $pidf ]] || continue
                pid=$(cat "$pidf" 2>/dev/null)
                [[ $pid =~ ^[0-9]+$ ]] && kill -9 "$pid" 2>/dev/null
            done
        fi
    done
    if [[ -n $REAPD_PID ]] && kill -0 "$REAPD_PID" 2>/dev/null; then
        kill "$REAPD_PID" 2>/dev/null
        for _ in $(seq 1 50); do
            kill -0 "$REAPD_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$REAPD_PID" 2>/dev/null && kill -9 "$REAPD_PID" 2>/dev/null
        wait "$REAPD_PID" 2>/dev/null
    fi
    if [[ $rc -ne 0 && -s $TMP/reapd.log ]]; then
        echo "----- reapd log (last 40 lines) -----" >&2
        tail -n 40 "$TMP/reapd.log" >&2
    fi
    if [[ ${REAP_E2E_KEEP:-0} == 1 ]]; then
        log "kept $TMP"
    else
        # Bazel leaves read-only directories behind.
        chmod -R u+w "$TMP" 2>/dev/null
        rm -rf "$TMP"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Workspace copy (no bazel-* symlinks are created: --symlink_prefix=/).
mkdir -p "$WS"
(cd "$WS_SRC" && tar --exclude='./bazel-*' -cf - .) | (cd "$WS" && tar -xf -)

# Debian's rules_cc 0.0.4 calls use_cpp_toolchain(), which Bazel 4.2.3's
# @bazel_tools does not have: patch a copy to use the toolchain type label.
cp -R "$DEBIAN_RULES/cc" "$TMP/rules_cc"
chmod -R u+w "$TMP/rules_cc"
grep -rl 'use_cpp_toolchain' "$TMP/rules_cc" | while read -r f; do
    sed -i -e 's/,[[:space:]]*"use_cpp_toolchain"//' \
        -e 's#use_cpp_toolchain()#["@bazel_tools//tools/cpp:toolchain_type"]#g' "$f"
done
if grep -rq 'use_cpp_toolchain' "$TMP/rules_cc"; then
    fail "could not patch use_cpp_toolchain out of rules_cc copy"
fi

# `bazel test` wants @remote_coverage_tools; an empty stand-in is enough.
mkdir -p "$TMP/remote_coverage_tools"
: >"$TMP/remote_coverage_tools/WORKSPACE"
cat >"$TMP/remote_coverage_tools/BUILD" <<'EOF'
filegroup(name = "coverage_report_generator", visibility = ["//visibility:public"])
filegroup(name = "lcov_merger", visibility = ["//visibility:public"])
EOF

# ---------------------------------------------------------------------------
# Cache server.

pick_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' \
            2>/dev/null && return 0
    fi
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [[ $CACHE_MODE == remote ]]; then
    PORT=${REAP_E2E_PORT:-$(pick_port)} || fail "could not pick a free port"
    [[ $PORT =~ ^[0-9]+$ ]] || fail "bad port '$PORT'"
    if port_open "$PORT"; then
        fail "something already listens on 127.0.0.1:$PORT"
    fi
    mkdir -p "$TMP/data"
    log "starting $REAPD on 127.0.0.1:$PORT"
    "$REAPD" --listen "127.0.0.1:$PORT" --data "$TMP/data" --ac-writers anonymous \
        >"$TMP/reapd.log" 2>&1 &
    REAPD_PID=$!
    deadline=$((SECONDS + REAPD_START_TIMEOUT))
    until port_open "$PORT"; do
        if ! kill -0 "$REAPD_PID" 2>/dev/null; then
            st=0; wait "$REAPD_PID" || st=$?
            REAPD_PID=""
            fail "reapd exited during startup (status $st)"
        fi
        ((SECONDS < deadline)) || fail "reapd not accepting connections on 127.0.0.1:$PORT after ${REAPD_START_TIMEOUT}s"
        sleep 0.1
    done
    log "reapd is up (pid $REAPD_PID)"
    CACHE_FLAG="--remote_cache=grpc://127.0.0.1:$PORT"
else
    CACHE_FLAG="--disk_cache=$TMP/disk_cache"
fi

# ---------------------------------------------------------------------------
# Bazel.

RC=$TMP/e2e.bazelrc
cat >"$RC" <<EOF
# Generated by tests/e2e/bazel_remote_cache.sh
build --symlink_prefix=/
build --color=no --curses=no --noshow_progress
# Debian's /etc/bazel/bazelrc turns --sandbox_debug on; it floods the log.
build --nosandbox_debug
build --incompatible_strict_action_env
# Offline Debian bazel-bootstrap 4.2.3: never download rules_*.
build --override_repository=rules_java=$DEBIAN_RULES/java
build --override_repository=rules_cc=$TMP/rules_cc
build --override_repository=remote_coverage_tools=$TMP/remote_coverage_tools
build $CACHE_FLAG
build --remote_timeout=60
EOF

# bz ROOT LOG ARGS...: run bazel with its own output_user_root, bounded.
bz() {
    local root=$1 logf=$2; shift 2
    local t0=$SECONDS rc=0
    (cd "$WS" && timeout "$BAZEL_TIMEOUT" "$BAZEL" --nohome_rc --bazelrc="$RC" \
        --output_user_root="$root" --max_idle_secs=900 "$@") >"$logf" 2>&1 || rc=$?
    BZ_SECS=$((SECONDS - t0))
    if ((rc != 0)); then
        echo "----- bazel $* (exit $rc) log, last 60 lines -----" >&2
        tail -n 60 "$logf" >&2
        if ((rc == 124)); then
            echo "(timed out after ${BAZEL_TIMEOUT}s)" >&2
        fi
        if grep -qi 'update_enabled\|upload_local_results' "$logf"; then
            echo "hint: the server does not let this client write the action cache" \
                "(reapd needs --ac-writers anonymous here)" >&2
        fi
    fi
    return $rc
}

ROOT1=$TMP/out1
ROOT2=$TMP/out2
USER_ROOTS=("$ROOT1" "$ROOT2")
TARGETS=(//...)

log "build #1 ($CACHE_MODE cache, cold)"
bz "$ROOT1" "$TMP/build1.log" build "${TARGETS[@]}" || fail "build #1 failed"
log "build #1: $(summary_line "$TMP/build1.log") [${BZ_SECS}s]"
SPAWNS=$(count_spawns "$TMP/build1.log") || fail "cannot parse build #1 summary"
((SPAWNS > 0)) || fail "build #1 ran no spawns; is the cache not empty?"

bz "$ROOT1" "$TMP/clean1.log" clean || fail "bazel clean failed"

log "build #2 (after bazel clean)"
bz "$ROOT1" "$TMP/build2.log" build "${TARGETS[@]}" || fail "build #2 failed"
log "build #2: $(summary_line "$TMP/build2.log") [${BZ_SECS}s]"
msg=$(check_all_cached "$TMP/build2.log" "$HIT_WORD" "$SPAWNS" 2>&1) ||
    fail "build #2 was not fully served from the cache: $msg"

bz "$ROOT1" "$TMP/clean2.log" clean --expunge || fail "bazel clean --expunge failed"
bz "$ROOT1" "$TMP/shutdown1.log" shutdown || fail "bazel shutdown failed"
chmod -R u+w "$ROOT1" 2>/dev/null || true
rm -rf "$ROOT1"

log "build #3 (after clean --expunge, new output_user_root and server)"
bz "$ROOT2" "$TMP/build3.log" build "${TARGETS[@]}" || fail "build #3 failed"
log "build #3: $(summary_line "$TMP/build3.log") [${BZ_SECS}s]"
msg=$(check_all_cached "$TMP/build3.log" "$HIT_WORD" "$SPAWNS" 2>&1) ||
    fail "build #3 was not fully served from the cache: $msg"

# Outputs came from the cache: check their contents.
bz "$ROOT2" "$TMP/info.log" info bazel-bin || fail "bazel info failed"
BIN=$(grep -E '^/' "$TMP/info.log" | tail -n 1)
[[ -d $BIN ]] || fail "bazel-bin '$BIN' is not a directory"

got=$(cat "$BIN/shout.txt") || fail "shout.txt missing"
[[ $got == "HELLO FROM REAP_EXAMPLE" ]] || fail "shout.txt: got '$got'"
want_sum=$(seq 1 400000 | cksum)
got_sum=$(cksum <"$BIN/blob.txt") || fail "blob.txt missing"
[[ $got_sum == "$want_sum" ]] || fail "blob.txt corrupted: cksum '$got_sum', want '$want_sum'"
got=$(cat "$BIN/blob_digest.txt")
[[ $got == 2688895 ]] || fail "blob_digest.txt: got '$got'"
got=$("$BIN/hello") || fail "hello exited non-zero"
[[ $got == "Hello, reap!" ]] || fail "hello printed '$got'"
got=$("$BIN/greet_test") || fail "greet_test failed: $got"
log "outputs ok: hello printed '$("$BIN/hello")', blob.txt $(wc -c <"$BIN/blob.txt") bytes"

bz "$ROOT2" "$TMP/shutdown2.log" shutdown || true

if [[ $CACHE_MODE == remote ]]; then
    kill -0 "$REAPD_PID" 2>/dev/null || fail "reapd died during the test"
fi
log "PASS: builds #2 and #3 got all $SPAWNS spawned actions from the $CACHE_MODE cache"
