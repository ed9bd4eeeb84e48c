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
LOG_TAG=bazel-e2e
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SELF_DIR/lib.sh"

CACHE_MODE=${REAP_E2E_CACHE:-remote}
HIT_WORD=${REAP_E2E_HIT_WORD:-remote cache hit}

if [[ ${1:-} == --parser-selftest ]]; then
    if lib_parser_selftest; then
        log "parser selftest: ok"
        exit 0
    fi
    fail "parser selftest failed"
fi

# ---------------------------------------------------------------------------
# Prerequisites.

check_bazel_prereqs
check_cc_prereqs
[[ -f $WS_SRC/WORKSPACE ]] || fail "example workspace not found at $WS_SRC"
case $CACHE_MODE in
remote) need_binary REAPD reapd ;;
disk) ;;
*) fail "REAP_E2E_CACHE must be 'remote' or 'disk', not '$CACHE_MODE'" ;;
esac

# ---------------------------------------------------------------------------
# Temp dir, cleanup, workspace copy (no bazel-* symlinks: --symlink_prefix=/).

TMP=$(mktemp -d "${TMPDIR:-/tmp}/reap-bazel-e2e.XXXXXX")
lib_init

WS=$TMP/ws
BAZEL_WS=$WS
mkdir -p "$WS"
(cd "$WS_SRC" && tar --exclude='./bazel-*' -cf - .) | (cd "$WS" && tar -xf -)
prepare_debian_overrides

# ---------------------------------------------------------------------------
# Cache server: reapd; only a "writer" token (e.g. CI's) may write its
# ActionCache. A plain client token's builds still succeed but upload nothing.

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [[ $CACHE_MODE == remote ]]; then
    if [[ -n ${REAP_E2E_PORT:-} ]]; then
        [[ $REAP_E2E_PORT =~ ^[0-9]+$ ]] || fail "bad port '$REAP_E2E_PORT'"
        if port_open "$REAP_E2E_PORT"; then
            fail "something already listens on 127.0.0.1:$REAP_E2E_PORT"
        fi
        REAPD_PORT=$REAP_E2E_PORT
    fi
    need_binary REAP reap
    start_reapd
    CACHE_FLAG=""
else
    CACHE_FLAG="--disk_cache=$TMP/disk_cache"
fi

# ---------------------------------------------------------------------------
# Bazel.

BAZELRC=$TMP/e2e.bazelrc
# cache_bazelrc: the bazelrc for the current CLIENT_TOKEN.
cache_bazelrc() {
    write_bazelrc_base "$BAZELRC"
    if [[ $CACHE_MODE == remote ]]; then
        remote_flags "$BAZELRC" --remote_cache
    else
        echo "build $CACHE_FLAG" >>"$BAZELRC"
    fi
    echo "build --remote_timeout=60" >>"$BAZELRC"
}

# bzc ROOT LOG ARGS...: bz in the workspace copy; shows the log on failure.
bzc() {
    bz "$WS" "$@" && return 0
    bz_show "$2"
    if grep -qi 'update_enabled\|upload_local_results' "$2"; then
        echo "hint: the server does not let this client write the action cache" \
            "(only a writer token may upload results)" >&2
    fi
    return "$BZ_RC"
}

ROOT0=$TMP/out0
ROOT1=$TMP/out1
ROOT2=$TMP/out2
USER_ROOTS=("$ROOT0" "$ROOT1" "$ROOT2")
TARGETS=(//...)

if [[ $CACHE_MODE == remote ]]; then
    # A client token: update_enabled is false for it, so Bazel must not
    # upload; its build succeeds and leaves the cache empty (build #1 below
    # proves that: it still has to run everything).
    CLIENT_TOKEN=$(issue_token dev client)
    cache_bazelrc
    echo "build --noremote_upload_local_results" >>"$BAZELRC"
    log "build #0 (client token: may read, may not write the action cache)"
    bzc "$ROOT0" "$TMP/build0.log" build "${TARGETS[@]}" || fail "build #0 failed"
    log "build #0: $(summary_line "$TMP/build0.log") [${BZ_SECS}s]"
    bzc "$ROOT0" "$TMP/shutdown0.log" shutdown || true
    CLIENT_TOKEN=$(issue_token ci writer)
fi
cache_bazelrc

log "build #1 ($CACHE_MODE cache, cold)"
bzc "$ROOT1" "$TMP/build1.log" build "${TARGETS[@]}" || fail "build #1 failed"
log "build #1: $(summary_line "$TMP/build1.log") [${BZ_SECS}s]"
SPAWNS=$(count_spawns "$TMP/build1.log") || fail "cannot parse build #1 summary"
((SPAWNS > 0)) || fail "build #1 ran no spawns; is the cache not empty?"

bzc "$ROOT1" "$TMP/clean1.log" clean || fail "bazel clean failed"

log "build #2 (after bazel clean)"
bzc "$ROOT1" "$TMP/build2.log" build "${TARGETS[@]}" || fail "build #2 failed"
log "build #2: $(summary_line "$TMP/build2.log") [${BZ_SECS}s]"
msg=$(check_all_kind "$TMP/build2.log" "$HIT_WORD" "$SPAWNS" 2>&1) ||
    fail "build #2 was not fully served from the cache: $msg"

bzc "$ROOT1" "$TMP/clean2.log" clean --expunge || fail "bazel clean --expunge failed"
bzc "$ROOT1" "$TMP/shutdown1.log" shutdown || fail "bazel shutdown failed"
chmod -R u+w "$ROOT1" 2>/dev/null || true
rm -rf "$ROOT1"

log "build #3 (after clean --expunge, new output_user_root and server)"
bzc "$ROOT2" "$TMP/build3.log" build "${TARGETS[@]}" || fail "build #3 failed"
log "build #3: $(summary_line "$TMP/build3.log") [${BZ_SECS}s]"
msg=$(check_all_kind "$TMP/build3.log" "$HIT_WORD" "$SPAWNS" 2>&1) ||
    fail "build #3 was not fully served from the cache: $msg"

# Outputs came from the cache: check their contents.
bzc "$ROOT2" "$TMP/info.log" info bazel-bin || fail "bazel info failed"
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

bzc "$ROOT2" "$TMP/shutdown2.log" shutdown || true

if [[ $CACHE_MODE == remote ]]; then
    kill -0 "$REAPD_PID" 2>/dev/null || fail "reapd died during the test"
fi
log "PASS: builds #2 and #3 got all $SPAWNS spawned actions from the $CACHE_MODE cache"
