# shellcheck shell=bash
# Shared helpers for the Bazel end-to-end scripts (bazel_remote_cache.sh,
# bazel_remote_exec.sh, worker_kill.sh). Source it after setting LOG_TAG; it
# only defines variables and functions.

BAZEL=${BAZEL:-bazel}
BAZEL_TIMEOUT=${REAP_E2E_BAZEL_TIMEOUT:-600}  # seconds, each bazel invocation
DEBIAN_RULES=/usr/share/bazel/rules
START_TIMEOUT=30                               # seconds for reapd / a worker to come up
LOG_TAG=${LOG_TAG:-e2e}

log()  { printf '[%s] %s\n' "$LOG_TAG" "$*"; }
fail() { printf '[%s] FAIL: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }
skip() { printf '[%s] SKIP: %s\n' "$LOG_TAG" "$*" >&2; exit 77; }

# ---------------------------------------------------------------------------
# Bazel 4.2.3's process summary, one line per build (observed), e.g.
#   INFO: 21 processes: 10 internal, 11 remote.
#   INFO: 21 processes: 11 remote cache hit, 10 internal.
#   INFO: 21 processes: 10 internal, 11 linux-sandbox.
#   INFO: 1 process: 1 internal.
# summary_line LOG: prints the last such line of LOG.

summary_line() {
    grep -E '^INFO: [0-9]+ process(es)?[.:]' "$1" | tail -n 1
}

# parse_summary LOG: LOG's last summary line into SUM_LINE, SUM_TOTAL and
# SUM_KINDS (kind -> count). Fails with a message if absent or inconsistent.
# SUM_LENIENT=1 accepts items that do not add up to the total: Bazel 4.2.3
# counts a remote test as 1 process but 2 "remote" spawns (the test and its
# test.xml generation), e.g. "INFO: 3 processes: 4 remote." for two tests.
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
    if ((sum != SUM_TOTAL)) && [[ ${SUM_LENIENT:-0} != 1 ]]; then
        echo "items add up to $sum, not $SUM_TOTAL: $SUM_LINE" >&2
        return 1
    fi
}

# count_spawns LOG: the number of non-"internal" processes.
count_spawns() {
    parse_summary "$1" || return 1
    echo $((SUM_TOTAL - ${SUM_KINDS[internal]:-0}))
}

# check_all_kind LOG KIND [EXPECTED]: every non-internal process of LOG's
# summary was of KIND ("remote", "remote cache hit", "disk cache hit"), at
# least one, and exactly EXPECTED if given. Any other kind (linux-sandbox,
# processwrapper-sandbox, local, remote, worker, ...) fails.
check_all_kind() {
    local logf=$1 want=$2 expected=${3:-} kind other="" n
    parse_summary "$logf" || return 1
    for kind in "${!SUM_KINDS[@]}"; do
        if [[ $kind != "$want" && $kind != internal ]]; then
            other+="${other:+, }${SUM_KINDS[$kind]} $kind"
        fi
    done
    n=${SUM_KINDS[$want]:-0}
    if [[ -n $other ]]; then
        echo "not all spawns were '$want' ($other): $SUM_LINE" >&2
        return 1
    fi
    if ((n == 0)); then
        echo "no '$want' at all: $SUM_LINE" >&2
        return 1
    fi
    if [[ -n $expected ]] && ((n != expected)); then
        echo "expected $expected '$want', got $n: $SUM_LINE" >&2
        return 1
    fi
}

lib_parser_selftest() {
    local d f rc=0
    d=$(mktemp -d)
    f=$d/log
    # t EXPECT(0|1) KIND EXPECTED_COUNT LINE...
    t() {
        local want=$1 kind=$2 cnt=$3; shift 3
        printf '%s\n' "$@" >"$f"
        local got=0
        check_all_kind "$f" "$kind" "$cnt" 2>/dev/null || got=1
        if [[ $got != "$want" ]]; then
            echo "parser selftest: want $want got $got for: $*" >&2
            rc=1
        fi
    }
    t 0 remote 11 "INFO: 21 processes: 10 internal, 11 remote."
    t 0 remote "" "INFO: 4 processes: 4 remote."
    t 1 remote "" "INFO: 21 processes: 10 internal, 10 remote, 1 remote cache hit."
    t 1 remote "" "INFO: 21 processes: 10 internal, 10 remote, 1 linux-sandbox."
    t 1 remote 12 "INFO: 21 processes: 10 internal, 11 remote."
    t 1 remote "" "INFO: 1 process: 1 internal."
    t 0 "remote cache hit" 11 "INFO: 21 processes: 11 remote cache hit, 10 internal."
    t 1 remote 4 "INFO: 3 processes: 4 remote."
    SUM_LENIENT=1 t 0 remote 4 "INFO: 3 processes: 4 remote."
    SUM_LENIENT=1 t 1 remote "" "INFO: 3 processes: 3 remote, 1 linux-sandbox."
    t 1 "remote cache hit" 11 "INFO: 21 processes: 10 remote cache hit, 10 internal, 1 remote."
    t 0 "remote cache hit" "" "INFO: 21 processes: 11 remote cache hit, 10 internal."
    t 0 "remote cache hit" 3  "INFO: 3 processes: 3 remote cache hit."
    t 0 "disk cache hit"   11 "INFO: 21 processes: 10 internal, 11 disk cache hit."
    t 0 "remote cache hit" 2  "INFO: 9 processes: 9 internal." \
                              "INFO: 5 processes: 2 remote cache hit, 3 internal."
    t 1 "remote cache hit" 11 "INFO: 21 processes: 10 remote cache hit, 10 internal, 1 linux-sandbox."
    t 1 "remote cache hit" "" "INFO: 21 processes: 10 internal, 11 linux-sandbox."
    t 1 "remote cache hit" "" "INFO: 4 processes: 2 remote cache hit, 2 processwrapper-sandbox."
    t 1 "remote cache hit" "" "INFO: 4 processes: 4 local."
    t 1 "remote cache hit" 12 "INFO: 21 processes: 11 remote cache hit, 10 internal."
    t 1 "remote cache hit" "" "INFO: 1 process: 1 internal."
    t 1 "remote cache hit" "" "INFO: 0 processes."
    t 1 "remote cache hit" "" "INFO: Build completed successfully, 1 total action"
    t 1 "disk cache hit"   "" "INFO: 21 processes: 11 remote cache hit, 10 internal."
    t 1 "remote cache hit" "" "INFO: 22 processes: 11 remote cache hit, 10 internal."
    printf 'INFO: 21 processes: 10 internal, 11 linux-sandbox.\n' >"$f"
    [[ $(count_spawns "$f") == 11 ]] || { echo "count_spawns: got $(count_spawns "$f")" >&2; rc=1; }
    printf 'INFO: 4 processes: 4 linux-sandbox.\n' >"$f"
    [[ $(count_spawns "$f") == 4 ]] || { echo "count_spawns(2): got $(count_spawns "$f")" >&2; rc=1; }
    printf 'INFO: 1 process: 1 internal.\n' >"$f"
    [[ $(count_spawns "$f") == 0 ]] || { echo "count_spawns(3): got $(count_spawns "$f")" >&2; rc=1; }
    rm -rf "$d"
    return $rc
}

# ---------------------------------------------------------------------------
# Prerequisites.

check_bazel_prereqs() {
    command -v "$BAZEL" >/dev/null 2>&1 || skip "bazel not found (apt-get install bazel-bootstrap)"
    command -v timeout >/dev/null 2>&1 || skip "timeout(1) not found"
}

# need_binary VAR NAME: $VAR must name an executable (NAME, for the
# message); makes it absolute.
need_binary() {
    local var=$1 name=$2 path
    path=${!var:-}
    [[ -n $path ]] || fail "set $var to the $name binary"
    [[ -x $path ]] || fail "$var=$path is not executable"
    printf -v "$var" '%s' "$(cd "$(dirname "$path")" && pwd)/$(basename "$path")"
}

# check_prereqs: remote execution (reapd and reap-worker).
check_prereqs() {
    check_bazel_prereqs
    command -v bwrap >/dev/null 2>&1 || skip "bwrap not found (apt-get install bubblewrap)"
    need_binary REAPD reapd
    need_binary REAP reap
    need_binary REAP_WORKER reap-worker
}

check_cc_prereqs() {
    command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || skip "no C compiler"
    [[ -d $DEBIAN_RULES/cc && -d $DEBIAN_RULES/java ]] ||
        skip "$DEBIAN_RULES/{cc,java} missing (apt-get install bazel-rules-cc bazel-rules-java)"
}

# ---------------------------------------------------------------------------
# Temp dir and cleanup. Scripts set TMP, then call lib_init.

REAPD_PID=""
WORKER_PIDS=()
USER_ROOTS=()
BAZEL_WS=""

stop_pid() { # stop_pid PID: TERM, up to 5 s, then KILL; reaps it
    local pid=$1
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    return 0
}

lib_cleanup() {
    local rc=$?
    set +e
    local root pidf pid f
    for root in "${USER_ROOTS[@]}"; do
        if [[ -d $root ]]; then
            (cd "${BAZEL_WS:-$TMP}" 2>/dev/null || cd "$TMP" || exit
             timeout 60 "$BAZEL" --nohome_rc "${BZ_STARTUP[@]}" --output_user_root="$root" shutdown \
                 >/dev/null 2>&1)
            # A server still busy with a build ignores shutdown: kill it (ours,
            # by its pid file).
            for pidf in "$root"/*/server/server.pid.txt; do
                [[ -f $pidf ]] || continue
                pid=$(cat "$pidf" 2>/dev/null)
                [[ $pid =~ ^[0-9]+$ ]] && kill -9 "$pid" 2>/dev/null
            done
        fi
    done
    for pid in "${WORKER_PIDS[@]}"; do
        stop_pid "$pid"
    done
    stop_pid "$REAPD_PID"
    if [[ $rc -ne 0 ]]; then
        for f in "$TMP"/worker-*.log "$TMP/reapd.log"; do
            [[ -s $f ]] || continue
            echo "----- $(basename "$f") (last 40 lines) -----" >&2
            tail -n 40 "$f" >&2
        done
    fi
    if [[ ${REAP_E2E_KEEP:-0} == 1 ]]; then
        log "kept $TMP"
    else
        chmod -R u+w "$TMP" 2>/dev/null
        rm -rf "$TMP"
    fi
    exit $rc
}

lib_init() {
    trap lib_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# ---------------------------------------------------------------------------
# reapd and workers.

# make_tls DIR: a throw-away CA and a server certificate for localhost and
# 127.0.0.1 (DIR/ca.pem, DIR/server.pem, DIR/server.key), made with openssl.
make_tls() {
    local d=$1
    mkdir -p "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=reap e2e CA" \
        -keyout "$d/ca.key" -out "$d/ca.pem" >/dev/null 2>&1 || fail "openssl: CA"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$d/server.key" -out "$d/server.csr" >/dev/null 2>&1 || fail "openssl: CSR"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$d/ext.cnf"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
        -CAcreateserial -days 2 -extfile "$d/ext.cnf" -out "$d/server.pem" >/dev/null 2>&1 ||
        fail "openssl: server certificate"
    chmod 600 "$d"/*.key
}

# issue_token SUBJECT ROLE: a token signed with reapd's key (needs $REAP).
issue_token() {
    "$REAP" auth token --key "$TMP/data/token.key" --subject "$1" --role "$2" --ttl 2h ||
        fail "reap auth token $1 $2 failed"
}

# start_reapd EXTRA_ARGS...: reapd on 127.0.0.1, port $REAPD_PORT if set,
# else a kernel-picked one (read from its readiness line), data in
# $TMP/data. Sets REAPD_PID and PORT. With REAPD_TLS=1 it serves TLS with a
# certificate from make_tls (in $TMP/tls) and clients connect to localhost.
start_reapd() {
    local deadline
    local -a tls=()
    mkdir -p "$TMP/data"
    if [[ ${REAPD_TLS:-0} == 1 ]]; then
        make_tls "$TMP/tls"
        tls=(--tls-cert "$TMP/tls/server.pem" --tls-key "$TMP/tls/server.key")
    fi
    "$REAPD" --listen "127.0.0.1:${REAPD_PORT:-0}" --data "$TMP/data" --metrics 127.0.0.1:0 \
        "${tls[@]}" "$@" \
        >"$TMP/reapd.out" 2>"$TMP/reapd.log" &
    REAPD_PID=$!
    deadline=$((SECONDS + START_TIMEOUT))
    PORT=""
    until [[ -n $PORT ]]; do
        PORT=$(sed -n 's/^reapd listening on port \([0-9][0-9]*\)$/\1/p' "$TMP/reapd.out" | head -n 1)
        [[ -n $PORT ]] && break
        if ! kill -0 "$REAPD_PID" 2>/dev/null; then
            local st=0
            wait "$REAPD_PID" || st=$?
            REAPD_PID=""
            tail -n 5 "$TMP/reapd.log" >&2
            fail "reapd exited during startup (status $st)"
        fi
        ((SECONDS < deadline)) || fail "reapd not ready after ${START_TIMEOUT}s"
        sleep 0.1
    done
    [[ -s $TMP/data/worker.token ]] || fail "reapd did not create $TMP/data/worker.token"
    [[ $(stat -c %a "$TMP/data/token.key") == 600 ]] || fail "token.key is not mode 600"
    log "reapd up on 127.0.0.1:$PORT (pid $REAPD_PID) ${tls[*]:+TLS }$*"
}

# start_worker NAME SLOTS: a reap-worker against reapd; waits for its
# "reap-worker ready" line. Sets WORKER_PID; logs to $TMP/worker-NAME.log.
start_worker() {
    local name=$1 slots=$2 deadline logf=$TMP/worker-$1.log
    local -a tls=()
    local host=127.0.0.1
    mkdir -p "$TMP/$name/work" "$TMP/$name/cache"
    # Each worker has its own token, bound to its name.
    issue_token "$name" worker >"$TMP/$name.token"
    chmod 600 "$TMP/$name.token"
    if [[ ${REAPD_TLS:-0} == 1 ]]; then
        tls=(--tls-ca "$TMP/tls/ca.pem")
        host=localhost
    fi
    "$REAP_WORKER" --scheduler "$host:$PORT" --cas "$host:$PORT" "${tls[@]}" \
        --name "$name" --slots "$slots" \
        --work "$TMP/$name/work" --cache "$TMP/$name/cache" --cache-size 1GiB \
        --platform OSFamily=Linux --token-file "$TMP/$name.token" \
        --default-timeout 300 >"$logf" 2>&1 &
    WORKER_PID=$!
    WORKER_PIDS+=("$WORKER_PID")
    deadline=$((SECONDS + START_TIMEOUT))
    until grep -q 'reap-worker ready' "$logf"; do
        if ! kill -0 "$WORKER_PID" 2>/dev/null; then
            local st=0
            wait "$WORKER_PID" || st=$?
            tail -n 20 "$logf" >&2
            fail "worker $name exited during startup (status $st)"
        fi
        ((SECONDS < deadline)) || fail "worker $name not ready after ${START_TIMEOUT}s"
        sleep 0.1
    done
    log "worker $name up (pid $WORKER_PID, $slots slots)"
}

# ---------------------------------------------------------------------------
# Bazel.

# prepare_debian_overrides: the patched rules_cc copy and the empty
# remote_coverage_tools stand-in Debian's offline Bazel 4.2.3 needs
# (see bazel/reap.bazelrc).
prepare_debian_overrides() {
    local f
    cp -R "$DEBIAN_RULES/cc" "$TMP/rules_cc"
    chmod -R u+w "$TMP/rules_cc"
    grep -rl 'use_cpp_toolchain' "$TMP/rules_cc" | while read -r f; do
        sed -i -e 's/,[[:space:]]*"use_cpp_toolchain"//' \
            -e 's#use_cpp_toolchain()#["@bazel_tools//tools/cpp:toolchain_type"]#g' "$f"
    done
    if grep -rq 'use_cpp_toolchain' "$TMP/rules_cc"; then
        fail "could not patch use_cpp_toolchain out of rules_cc copy"
    fi
    mkdir -p "$TMP/remote_coverage_tools"
    : >"$TMP/remote_coverage_tools/WORKSPACE"
    cat >"$TMP/remote_coverage_tools/BUILD" <<'EOF'
filegroup(name = "coverage_report_generator", visibility = ["//visibility:public"])
filegroup(name = "lcov_merger", visibility = ["//visibility:public"])
EOF
}

# write_bazelrc_base FILE [--no-overrides]: the settings every script uses;
# --no-overrides leaves out the rules_* overrides (a genrule-only workspace
# needs none).
write_bazelrc_base() {
    cat >"$1" <<EOF
# Generated by tests/e2e/lib.sh
build --symlink_prefix=/
build --color=no --curses=no --noshow_progress
# Debian's /etc/bazel/bazelrc turns --sandbox_debug on; it floods the log.
build --nosandbox_debug
build --incompatible_strict_action_env
EOF
    if [[ ${2:-} != --no-overrides ]]; then
        cat >>"$1" <<EOF
# Offline Debian bazel-bootstrap 4.2.3: never download rules_*.
build --override_repository=rules_java=$DEBIAN_RULES/java
build --override_repository=rules_cc=$TMP/rules_cc
build --override_repository=remote_coverage_tools=$TMP/remote_coverage_tools
EOF
    fi
}

# BZ_STARTUP: extra Bazel startup options, the same for every command (a
# change would restart the server).
BZ_STARTUP=()

# bazel_tls_setup: lets Debian's Bazel open grpcs:// channels. Debian's netty
# has no JDK ALPN support ("JDK provider does not support ALPN protocol"), so
# Bazel needs netty-tcnative's OpenSSL engine: the libnetty-tcnative-jni
# package, under the file name netty loads (libnetty_tcnative.so; the library
# checks its own real path, so a symlink is refused), on the JVM's
# java.library.path.
bazel_tls_setup() {
    local lib=/usr/lib/x86_64-linux-gnu/jni/libnetty-tcnative.so
    [[ -f $lib ]] || fail "$lib missing: install libnetty-tcnative-jni (scripts/deps.sh does)"
    mkdir -p "$TMP/jni"
    cp "$lib" "$TMP/jni/libnetty_tcnative.so"
    BZ_STARTUP=("--host_jvm_args=-Djava.library.path=$TMP/jni")
}

# remote_flags FILE FLAG: FLAG=grpc(s)://...:PORT, plus the CA and the
# client's token (CLIENT_TOKEN) when set.
remote_flags() {
    if [[ ${REAPD_TLS:-0} == 1 ]]; then
        printf 'build %s=grpcs://localhost:%s\nbuild --tls_certificate=%s\n' \
            "$2" "$PORT" "$TMP/tls/ca.pem" >>"$1"
    else
        printf 'build %s=grpc://127.0.0.1:%s\n' "$2" "$PORT" >>"$1"
    fi
    if [[ -n ${CLIENT_TOKEN:-} ]]; then
        printf 'build "--remote_header=authorization=Bearer %s"\n' "$CLIENT_TOKEN" >>"$1"
    fi
}

# write_bazelrc FILE [--no-overrides]: write_bazelrc_base plus remote
# execution against reapd, nothing run locally.
write_bazelrc() {
    write_bazelrc_base "$@"
    remote_flags "$1" --remote_executor
    cat >>"$1" <<EOF
# Remote execution: every spawn goes to reapd's scheduler, no local
# fallback; reapd's scheduler writes the ActionCache, clients do not.
build --spawn_strategy=remote
build --remote_local_fallback=false
build --noremote_upload_local_results
build --remote_timeout=60
EOF
}

# bz WS ROOT LOG ARGS...: run bazel in WS with its own output_user_root,
# bounded. BZ_SECS gets the duration, BZ_RC the exit status.
bz() {
    local ws=$1 root=$2 logf=$3; shift 3
    local t0=$SECONDS
    BZ_RC=0
    (cd "$ws" && timeout "$BAZEL_TIMEOUT" "$BAZEL" --nohome_rc "${BZ_STARTUP[@]}" --bazelrc="$BAZELRC" \
        --output_user_root="$root" --max_idle_secs=900 "$@") >"$logf" 2>&1 || BZ_RC=$?
    # shellcheck disable=SC2034  # read by the scripts
    BZ_SECS=$((SECONDS - t0))
    return $BZ_RC
}

# bz_show LOG: the tail of a failed bazel run.
bz_show() {
    echo "----- $(basename "$1") (exit ${BZ_RC:-?}), last 60 lines -----" >&2
    tail -n 60 "$1" >&2
    if [[ ${BZ_RC:-0} == 124 ]]; then
        echo "(timed out after ${BAZEL_TIMEOUT}s)" >&2
    fi
    if grep -q 'Remote execution is not supported by the remote server' "$1"; then
        echo "hint: reapd's GetCapabilities must return execution_capabilities" \
            "{exec_enabled: true, digest_function: SHA256}; Bazel checks it first" >&2
    fi
}
