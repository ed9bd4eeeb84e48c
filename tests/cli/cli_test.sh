#!/usr/bin/env bash
# Integration test of the `reap` CLI against a real reapd and reap-worker on
# loopback:
#
#   REAPD=build/cmd/reapd REAP_WORKER=build/cmd/reap-worker REAP=build/cmd/reap \
#       tests/cli/cli_test.sh
#
# upload a tree (nested folders, an executable, a symlink, an empty file, a
# file over 4 MiB) and download it with --dir (same content, modes and
# links); upload/cat/download of one file; execute a command with an input
# file, a failing command (its exit code), an output fetched back; action
# show of the executed action; status lists the worker; auth keygen, token
# and inspect round trip; exit codes for not found, unreachable and usage.
#
# Exit status: 0 on success, 1 on failure, 77 when a prerequisite is missing.

set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_TAG=cli
# shellcheck source-path=SCRIPTDIR source=../e2e/lib.sh
source "$SELF_DIR/../e2e/lib.sh"

CALL_TIMEOUT=60 # seconds, each reap invocation

command -v bwrap >/dev/null 2>&1 || skip "bwrap not found (apt-get install bubblewrap)"
command -v timeout >/dev/null 2>&1 || skip "timeout(1) not found"
need_binary REAPD reapd
need_binary REAP_WORKER reap-worker
need_binary REAP reap

TMP=$(mktemp -d "${TMPDIR:-/tmp}/reap-cli.XXXXXX")
lib_init

start_reapd
start_worker w1 2
export REAP_SERVER=127.0.0.1:$PORT
unset REAP_TOKEN

# r ARGS...: run reap, bounded; RC gets its exit status.
r() {
    RC=0
    timeout "$CALL_TIMEOUT" "$REAP" "$@" || RC=$?
}

# rw ARGS...: r in the work folder (execute's input root).
rw() {
    pushd "$WORK" >/dev/null
    r "$@"
    popd >/dev/null
}

expect_rc() { # expect_rc WANT WHAT
    [[ $RC == "$1" ]] || fail "$2: exit status $RC, expected $1"
}

# ---- upload and download a tree --------------------------------------------
SRC=$TMP/src
mkdir -p "$SRC/a/b/c" "$SRC/empty-dir"
echo "top" >"$SRC/top.txt"
echo "nested" >"$SRC/a/b/c/deep.txt"
echo "nested" >"$SRC/a/same-content.txt"
printf '#!/bin/sh\necho run\n' >"$SRC/a/tool.sh"
chmod 755 "$SRC/a/tool.sh"
: >"$SRC/a/b/empty.txt"
ln -s ../top.txt "$SRC/a/link-to-top"
ln -s b/c "$SRC/a/dirlink"
head -c $((5 * 1024 * 1024 + 123)) /dev/urandom >"$SRC/big.bin"

r upload "$SRC" >"$TMP/up.out"
expect_rc 0 "upload of a tree"
ROOT=$(cat "$TMP/up.out")
[[ $ROOT =~ ^[0-9a-f]{64}/[0-9]+$ ]] || fail "upload printed '$ROOT', not a digest"
log "tree uploaded: $ROOT"

r upload "$SRC" >"$TMP/up2.out"
expect_rc 0 "second upload"
[[ $(cat "$TMP/up2.out") == "$ROOT" ]] || fail "a second upload gave another digest"

r download "$ROOT" --dir -o "$TMP/dst"
expect_rc 0 "download --dir"
diff -r --no-dereference "$SRC" "$TMP/dst" || fail "downloaded tree differs"
listing() { (cd "$1" && find . -printf '%y %m %p %l\n' | sort); }
diff <(listing "$SRC") <(listing "$TMP/dst") || fail "downloaded tree's types/modes/links differ"
log "tree round trip ok"

r download "$ROOT" --dir -o "$TMP/dst"
[[ $RC != 0 ]] || fail "download --dir into a non-empty folder succeeded"

# ---- one file: upload, cat, download ---------------------------------------
r upload "$SRC/big.bin" >"$TMP/big.out"
expect_rc 0 "upload of a file"
BIG=$(cat "$TMP/big.out")
[[ $BIG == "$(sha256sum "$SRC/big.bin" | cut -d' ' -f1)/$((5 * 1024 * 1024 + 123))" ]] ||
    fail "file digest $BIG is not sha256/size"
r cat "$BIG" >"$TMP/big.cat"
expect_rc 0 "cat"
cmp "$SRC/big.bin" "$TMP/big.cat" || fail "cat gave other bytes"
r download "$BIG" -o "$TMP/big.dl"
expect_rc 0 "download -o"
cmp "$SRC/big.bin" "$TMP/big.dl" || fail "download gave other bytes"
r --json upload "$SRC/top.txt" >"$TMP/top.json"
grep -q '"type": "file"' "$TMP/top.json" || fail "upload --json: $(cat "$TMP/top.json")"

r cat "$(printf '%064d' 0)/5" >/dev/null 2>"$TMP/nf.err"
expect_rc 2 "cat of a missing blob"
log "file round trip ok"

# ---- execute ---------------------------------------------------------------
WORK=$TMP/work
mkdir -p "$WORK"
echo "input-content" >"$WORK/input.txt"
rw execute -- sh -c 'echo hi; cat input.txt' >"$TMP/exec.out" 2>"$TMP/exec.err"
expect_rc 0 "execute (stderr: $(cat "$TMP/exec.err"))"
grep -qx hi "$TMP/exec.out" || fail "execute output lacks 'hi': $(cat "$TMP/exec.out")"
grep -qx input-content "$TMP/exec.out" || fail "execute output lacks the input file"

rw execute -- sh -c 'echo to-stderr >&2; exit 7' >"$TMP/fail.out" 2>"$TMP/fail.err"
expect_rc 7 "a failing command"
grep -q to-stderr "$TMP/fail.err" || fail "the failing command's stderr was not shown"

rw execute --output gen/made.txt -- sh -c 'mkdir -p gen; echo made > gen/made.txt'
expect_rc 0 "execute with an output"
[[ $(cat "$WORK/gen/made.txt") == made ]] || fail "the output file was not fetched back"

rw --json execute -- sh -c 'exit 3' >"$TMP/exec.json"
expect_rc 3 "execute --json"
ACTION=$(sed -n 's/.*"action_digest": "\([0-9a-f]*\/[0-9]*\)".*/\1/p' "$TMP/exec.json")
[[ -n $ACTION ]] || fail "execute --json gave no action_digest: $(cat "$TMP/exec.json")"
log "execute ok"

# A cached action: run it twice, then show it.
rw --json execute -- sh -c 'echo cached' >"$TMP/cached.json"
expect_rc 0 "execute (to cache)"
ACTION=$(sed -n 's/.*"action_digest": "\([0-9a-f]*\/[0-9]*\)".*/\1/p' "$TMP/cached.json")
r action show "$ACTION" >"$TMP/show.out"
expect_rc 0 "action show"
grep -q 'arguments: sh -c echo cached' "$TMP/show.out" || fail "action show: $(cat "$TMP/show.out")"
grep -q 'exit code:   0' "$TMP/show.out" || fail "action show has no cached result: $(cat "$TMP/show.out")"
grep -q 'input.txt\|files' "$TMP/show.out" || fail "action show has no input summary"
r --json action show "$ACTION" >"$TMP/show.json"
expect_rc 0 "action show --json"
grep -q '"exit_code": 0' "$TMP/show.json" || fail "action show --json: $(cat "$TMP/show.json")"
log "action show ok"

# ---- status ----------------------------------------------------------------
r status >"$TMP/status.out"
expect_rc 0 "status"
grep -q '^  w1 ' "$TMP/status.out" || fail "status does not list worker w1: $(cat "$TMP/status.out")"
r --json status >"$TMP/status.json"
grep -q '"name": "w1"' "$TMP/status.json" || fail "status --json: $(cat "$TMP/status.json")"
log "status ok"

# ---- metrics: the /metrics endpoint moves as requests are made --------------
MPORT=$(sed -n 's/.*msg="metrics" listen=[^ ]* port=\([0-9][0-9]*\).*/\1/p' "$TMP/reapd.log" | head -n 1)
[[ -n $MPORT ]] || fail "reapd logged no metrics port"
# scrape: GET /metrics over bash's /dev/tcp (no curl needed)
scrape() {
    exec 3<>"/dev/tcp/127.0.0.1/$MPORT" || fail "cannot connect to /metrics"
    printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    timeout 10 cat <&3
    exec 3<&-
}
# status_calls: how many GetStatus calls ended OK so far
status_calls() {
    scrape | sed -n 's|^reap_rpc_requests_total{method="/reap.v1.Admin/GetStatus",code="OK"} \([0-9]*\).*|\1|p'
}
before=$(status_calls)
r status >/dev/null
r status >/dev/null
after=$(status_calls)
[[ -n $before && -n $after ]] || fail "no GetStatus counter in /metrics"
((after == before + 2)) || fail "GetStatus counter went from $before to $after, not +2"
scrape | grep -q '^reap_workers_connected 1' || fail "/metrics does not show the one worker"
scrape | grep -q '^reap_cas_blobs [1-9]' || fail "/metrics does not count the stored blobs"
log "metrics ok (GetStatus $before -> $after)"

# ---- auth ------------------------------------------------------------------
r auth keygen "$TMP/key"
expect_rc 0 "auth keygen"
[[ $(stat -c %a "$TMP/key") == 600 ]] || fail "the key file is not mode 0600"
r auth keygen "$TMP/key" 2>/dev/null
[[ $RC != 0 ]] || fail "auth keygen overwrote a key"
r auth token --key "$TMP/key" --subject alice --role client --instances a,b/c --ttl 1h >"$TMP/tok"
expect_rc 0 "auth token"
r auth inspect --key "$TMP/key" "$(cat "$TMP/tok")" >"$TMP/insp.out"
expect_rc 0 "auth inspect --key"
grep -q 'subject:   alice' "$TMP/insp.out" || fail "inspect: $(cat "$TMP/insp.out")"
grep -q 'role:      client' "$TMP/insp.out" || fail "inspect: $(cat "$TMP/insp.out")"
grep -q 'instances: a b/c' "$TMP/insp.out" || fail "inspect: $(cat "$TMP/insp.out")"
grep -q 'valid:     yes' "$TMP/insp.out" || fail "inspect: $(cat "$TMP/insp.out")"
r auth keygen "$TMP/key2"
r auth inspect --key "$TMP/key2" - <"$TMP/tok" >"$TMP/insp2.out"
expect_rc 3 "auth inspect with the wrong key"
grep -q 'valid:     no' "$TMP/insp2.out" || fail "inspect (wrong key): $(cat "$TMP/insp2.out")"
r auth inspect not-a-token >/dev/null 2>&1
expect_rc 3 "auth inspect of garbage"
log "auth ok"

# ---- TLS -------------------------------------------------------------------
# A second reapd serving TLS with a throw-away CA; reap verifies it with
# --tls-ca and the certificate's name, and a plaintext client is refused.
if command -v openssl >/dev/null 2>&1; then
    PKI=$TMP/pki
    mkdir -p "$PKI" "$TMP/tls-data"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=reap-test-ca \
        -keyout "$PKI/ca.key" -out "$PKI/ca.pem" >/dev/null 2>&1 || fail "openssl: CA"
    openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout "$PKI/srv.key" \
        -out "$PKI/srv.csr" >/dev/null 2>&1 || fail "openssl: server key"
    printf 'subjectAltName=DNS:localhost\n' >"$PKI/ext"
    openssl x509 -req -in "$PKI/srv.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" \
        -CAcreateserial -days 1 -extfile "$PKI/ext" -out "$PKI/srv.pem" >/dev/null 2>&1 ||
        fail "openssl: server certificate"
    "$REAPD" --listen 127.0.0.1:0 --data "$TMP/tls-data" --tls-cert "$PKI/srv.pem" \
        --tls-key "$PKI/srv.key" --metrics off >"$TMP/tls.out" 2>"$TMP/tls.log" &
    TLS_PID=$!
    WORKER_PIDS+=("$TLS_PID") # stopped by lib_cleanup
    TLS_PORT=""
    for _ in $(seq 1 100); do
        TLS_PORT=$(sed -n 's/^reapd listening on port \([0-9][0-9]*\)$/\1/p' "$TMP/tls.out")
        [[ -n $TLS_PORT ]] && break
        kill -0 "$TLS_PID" 2>/dev/null || fail "the TLS reapd exited: $(tail -n 5 "$TMP/tls.log")"
        sleep 0.1
    done
    [[ -n $TLS_PORT ]] || fail "the TLS reapd did not come up"
    r --server "127.0.0.1:$TLS_PORT" --tls-ca "$PKI/ca.pem" --tls-server-name localhost \
        upload "$SRC/top.txt" >"$TMP/tls-up.out"
    expect_rc 0 "upload over TLS"
    [[ $(cat "$TMP/tls-up.out") == "$(sha256sum "$SRC/top.txt" | cut -d' ' -f1)/4" ]] ||
        fail "upload over TLS printed $(cat "$TMP/tls-up.out")"
    r --server "127.0.0.1:$TLS_PORT" upload "$SRC/top.txt" >/dev/null 2>&1
    expect_rc 4 "plaintext upload to a TLS port"
    r --server "127.0.0.1:$TLS_PORT" --tls-ca "$SRC/top.txt" upload "$SRC/top.txt" \
        >/dev/null 2>&1
    [[ $RC != 0 ]] || fail "a CA file without a certificate was accepted"
    log "TLS ok"
else
    log "openssl not found: TLS part skipped"
fi

# ---- exit codes ------------------------------------------------------------
r --server 127.0.0.1:1 status >/dev/null 2>&1
expect_rc 4 "status against a closed port"
r frobnicate >/dev/null 2>&1
expect_rc 1 "an unknown command"
r download >/dev/null 2>&1
expect_rc 1 "download without a digest"
log "all ok"
