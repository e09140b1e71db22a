# lib.sh: shared set-up of the integration tests. Each test gets its own
# state dir and its own embedded stack (a real redis-server and ursa-broker
# started by `ursa up`), and tears it down on exit, pass or fail.
set -euo pipefail

: "${URSA_BIN:?URSA_BIN must point at build/bin}"
URSA="$URSA_BIN/ursa"
PROBE="$URSA_BIN/kq-probe"
T=$(mktemp -d "${TMPDIR:-/tmp}/ursa-it-XXXXXX")
export URSA_STATE_DIR="$T/state"
PIDS=()
CLEANUP=() # commands run after the stack is down (on_cleanup)
on_cleanup() { CLEANUP+=("$*"); }

log() { printf '# %s\n' "$*" >&2; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    for f in "$URSA_STATE_DIR"/log/*.log "$T"/*.log; do
        [ -f "$f" ] && { echo "--- $f (tail)" >&2; tail -n 20 "$f" >&2; }
    done
    exit 1
}

cleanup() {
    local rc=$?
    [ -z "${WATCHDOG:-}" ] || kill "$WATCHDOG" 2>/dev/null || true
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
    "$URSA" down >/dev/null 2>&1 || true
    for c in "${CLEANUP[@]:-}"; do [ -n "$c" ] && eval "$c" || true; done
    if [ -n "${URSA_TEST_KEEP:-}" ]; then echo "# kept $T" >&2; else rm -rf "$T"; fi
    exit $rc
}
trap cleanup EXIT
trap "exit 143" TERM INT # run the EXIT trap (ursa down) when ctest or a person stops us

# The watchdog: ctest SIGKILLs a test at its TIMEOUT (900 s) and prints
# nothing of where it stood. Before that, say what the test was running
# (its process tree, each with its age) and the logs' tails, then stop the
# command it waits on, so the EXIT trap still takes the stack down.
# URSA_TEST_DEADLINE_S: when (default 870 s; 0: no watchdog).
descendants() { # descendants PID: every process below PID, parents first
    ps -e -o pid=,ppid= | awk -v root="$1" '{kids[$2] = kids[$2] " " $1}
        END {n = split(kids[root], q, " "); for (i = 1; i <= n; i++) {print q[i];
             m = split(kids[q[i]], c, " "); for (j = 1; j <= m; j++) q[++n] = c[j]}}'
}
watchdog() {
    local main=$1 limit=$2 me p
    set +e +o pipefail # a process may end while it is being listed
    # a wait with no child process left behind when cleanup kills us: a read
    # that times out on a FIFO nobody writes
    mkfifo "$T/.watchdog" && read -r -t "$limit" <>"$T/.watchdog"
    me=$BASHPID
    {
        echo "WATCHDOG: the test has run ${limit} s; it was running:"
        for p in $(descendants "$main"); do
            [ "$p" = "$me" ] || ps -o pid=,etimes=,args= -p "$p" 2>/dev/null | cut -c1-200
        done
        for f in "$URSA_STATE_DIR"/log/*.log "$T"/*.log; do
            [ -f "$f" ] && { echo "--- $f (tail)"; tail -n 12 "$f"; }
        done
    } >&2
    kill -TERM "$main" 2>/dev/null
    for p in $(descendants "$main"); do [ "$p" = "$me" ] || kill -TERM "$p" 2>/dev/null; done
}
if [ "${URSA_TEST_DEADLINE_S:-870}" -gt 0 ]; then
    watchdog $$ "${URSA_TEST_DEADLINE_S:-870}" </dev/null >/dev/null &
    WATCHDOG=$!
fi

stack_up() {
    "$URSA" up >"$T/up.log" 2>&1 || { cat "$T/up.log" >&2; fail "ursa up failed"; }
    # shell variables, not exported: the stack's own processes must keep
    # finding the broker through the state dir, whose address changes when
    # the broker restarts
    local env_out
    env_out=$("$URSA" env)
    BOOTSTRAP=$(echo "$env_out" | sed -n 's/^URSA_KAFKA_BOOTSTRAP=//p')
    REDIS_URL=$(echo "$env_out" | sed -n 's/^URSA_REDIS_URL=//p')
    REDIS_PORT=${REDIS_URL##*:}
    # the stack's own Redis wants the password ursa up made (redis-cli
    # reads it from the environment, never from a flag)
    if [ -s "$URSA_STATE_DIR/redis.password" ]; then
        REDISCLI_AUTH=$(cat "$URSA_STATE_DIR/redis.password")
        export REDISCLI_AUTH
    fi
}

rcli() { redis-cli -p "$REDIS_PORT" --raw "$@"; }

# wait_for TIMEOUT_S DESCRIPTION COMMAND...: polls until COMMAND succeeds.
wait_for() {
    local t=$1 what=$2
    shift 2
    local end=$((SECONDS + t))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $end ] && fail "timed out after ${t}s waiting for: $what"
        sleep 0.2
    done
}

# Starts a kq-probe consumer in the background; its pid goes to PIDS and to
# the variable named by the first argument.
start_consumer() {
    local var=$1
    shift
    "$PROBE" consume "$@" >>"$T/consumer-$var.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    printf -v "$var" '%s' "$pid"
}

stat_of() { rcli HGET probe:stats "$1" | tr -d '\n' | sed 's/^$/0/'; }
stat_at_least() { [ "$(stat_of "$1")" -ge "$2" ]; }
check_eq() { [ "$2" = "$3" ] || fail "$1: expected '$3', got '$2'"; }
# dead PID: the process is gone or a zombie.
dead() { ! kill -0 "$1" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }
# term_ms PID TIMEOUT_S WHAT: SIGTERM to PID, then waits until it is gone;
# prints how many milliseconds that took.
term_ms() {
    local t0
    t0=$(date +%s%N)
    kill -TERM "$1"
    wait_for "$2" "$3" dead "$1"
    echo $((($(date +%s%N) - t0) / 1000000))
}

# The fault server of tests/tools on 127.0.0.1, serving the images of
# tests/fixtures/make_images.sh; sets FS (its base URL) and IMG (the dir).
start_fault_server() {
    IMG="$T/img"
    bash "$(dirname "${BASH_SOURCE[0]}")/../fixtures/make_images.sh" "$IMG" >/dev/null
    "$URSA_BIN/fault-server" "$IMG" "$T/fs.port" >"$T/fs.log" 2>&1 &
    PIDS+=("$!")
    wait_for 10 "the fault server" test -s "$T/fs.port"
    FS="http://127.0.0.1:$(cat "$T/fs.port")"
}

# A real S3 server (a one-node Ceph RGW, ops/s3-server.sh) in $T/s3, stopped
# after the test; exports S3_ENDPOINT, S3_BUCKET and the AWS_* keys, sets
# S3SH (the script, for stop-gateway and start-gateway) and points the
# blob store of every ursa process at s3://$S3_BUCKET/PREFIX.
start_s3_server() {
    S3SH="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/ops/s3-server.sh"
    "$S3SH" start "$T/s3" >"$T/s3.env" 2>"$T/s3.log" || fail "s3 server: $(tail -5 "$T/s3.log")"
    on_cleanup "'$S3SH' stop '$T/s3' >/dev/null 2>&1"
    set -a
    . "$T/s3.env"
    set +a
    export URSA_BLOB_URL="s3://$S3_BUCKET/$1" URSA_BLOB_S3_ENDPOINT="$S3_ENDPOINT"
}

# Daemon settings for tests: let the crawler reach 127.0.0.1, fail fast.
export URSA_FETCH_ALLOW=127.0.0.1/32
export URSA_FETCH_TIMEOUT_MS=3000
export URSA_FETCH_LOW_SPEED_SECS=2
export URSA_CRAWLER_RETRY_MS=100
# ursa-inference and ursa-console on free ports (written to run/*.port),
# never 8080 and 8090, which a running stack may hold
export URSA_INFERENCE_PORT=0 URSA_CONSOLE_PORT=0

# counts_of DATASET: its raw counters, "label|state[|reason] TAB n" lines
# (ursa status --counts; Redis holds them per hash tag, in binary).
counts_of() { "$URSA" status --dataset "$1" --counts 2>/dev/null || true; }
# count_of DATASET FIELD: one counter (0 if unset), FIELD as in counts_of.
count_of() { counts_of "$1" | awk -F'\t' -v f="$2" '$1 == f {n = $2} END {print n + 0}'; }
all_final() {
    local ds=$1 total
    total=$(count_of "$ds" total)
    [ "$total" -gt 0 ] && [ "$(counts_of "$ds" |
        awk -F'\t' '$1 ~ /\|(queued|downloaded)$/ {s += $2} END {print s + 0}')" -eq 0 ]
}
# Sum of a dataset's counters for STATE over all labels.
state_sum() {
    counts_of "$1" |
        awk -F'\t' -v s="$2" '{n = split($1, p, "|")} n == 2 && p[2] == s {t += $2} END {print t + 0}'
}
# Counters below zero (a state counted out twice): must be 0.
negative_counters() { counts_of "$1" | awk -F'\t' '$2 < 0' | wc -l; }

# A Fashion-MNIST subset (the first N test images, 28x28 JPEGs, a directory
# a class) served by a second fault server under /ds/; sets FM (the served
# dir, with urls_<class>.txt lists) and lets the verifier take 28 px images.
start_fmnist_server() {
    local n=$1 d=/usr/share/datasets/fashion-mnist
    FM="$T/fm"
    mkdir -p "$FM"
    "$URSA_BIN/fault-server" "$FM" "$T/fm.port" >"$T/fm.log" 2>&1 &
    PIDS+=("$!")
    wait_for 10 "the dataset server" test -s "$T/fm.port"
    "$URSA_BIN/idx2jpeg" "$d/t10k-images-idx3-ubyte.gz" "$d/t10k-labels-idx1-ubyte.gz" "$FM" \
        "http://127.0.0.1:$(cat "$T/fm.port")/ds" --limit "$n" >/dev/null ||
        fail "idx2jpeg (apt-get install dataset-fashion-mnist)"
    export URSA_IMG_MIN_SIDE=16
}

# job_field JOB FIELD: a field of the job's hash.
job_field() { rcli HGET "ursa:job:$1" "$2" | tr -d '\n'; }
job_state() { job_field "$1" state; }
job_rows() { rcli HLEN "ursa:job:$1:rows" | tr -d '\n'; }
# the job id in `ursa train` output ("job jXXXX queued: ...")
job_id_of() { sed -n '/^job j[0-9a-f]* queued/{s/^job \(j[0-9a-f]*\) queued.*/\1/p;q}' "$1"; }

# metrics_to URL FILE: a /metrics page into FILE. A failed fetch is logged
# with curl's exit status and HTTP code, then tried once more a second later
# (seen twice in loaded sanitizer runs: a fetch right after a flood came back
# empty; not reproduced alone).
metrics_to() {
    local code rc
    code=$(curl -s -m 10 -o "$2" -w '%{http_code}' "$1"); rc=$?
    [ "$rc" = 0 ] && [ "$code" = 200 ] && return 0
    log "metrics fetch failed (curl $rc, HTTP $code): trying once more"
    sleep 1
    curl -sf -m 10 -o "$2" "$1"
}
