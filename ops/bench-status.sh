#!/usr/bin/env bash
# bench-status.sh: how long `ursa status` takes against a deployment of 20
# daemon instances, asked from a host with no state dir (an empty one and
# the addresses only). A private redis-server holds 20 heartbeats written
# with redis-cli in the layout of common/state/heartbeats.h (8 crawlers, 6
# verifiers, 3 trainers, 3 inference servers over 5 hosts), and ursa-broker
# is the Kafka whose topics, watermarks and committed offsets it reads.
# Prints every run's time and the median, for text and for -o json.
#   ops/bench-status.sh [RUNS]     (default 11; build first: URSA_BIN or build/bin)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${URSA_BIN:-$ROOT/build/bin}
RUNS=${1:-11}
T=$(mktemp -d "${TMPDIR:-/tmp}/ursa-bench-status-XXXXXX")
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$T"' EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$T/redis.log" 2>&1 &
PIDS+=("$!")
"$BIN/ursa-broker" --state-dir "$T/broker" >"$T/broker.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do
    redis-cli -p "$port" PING >/dev/null 2>&1 && [ -s "$T/broker/broker.bootstrap" ] && break
    sleep 0.1
done
BOOTSTRAP=$(cat "$T/broker/broker.bootstrap")

# 20 live instances: the hash each beat writes (kept for 10 minutes, not
# the daemons' 15 s, so they stay live through every run) and its index entry
now=$(($(date +%s%N) / 1000000))
i=0
for spec in crawler:8 verifier:6 trainer:3 inference:3; do
    svc=${spec%:*}
    for _ in $(seq "${spec#*:}"); do
        i=$((i + 1))
        host=host$((i % 5 + 1)) inst=host$((i % 5 + 1)):$((1000 + i))
        key="ursa:{svc}:$svc:$inst"
        redis-cli -p "$port" HSET "$key" service "$svc" instance "$inst" host "$host" pid $((1000 + i)) \
            started_ms $((now - 60000)) version bench ts_ms "$now" metrics_port 9100 \
            handled $((i * 100)) failed 0 >/dev/null
        redis-cli -p "$port" PEXPIRE "$key" 600000 >/dev/null
        redis-cli -p "$port" ZADD "ursa:{svc}:index" "$now" "$svc $host $inst" >/dev/null
    done
done

mkdir -p "$T/empty"
run() {
    URSA_STATE_DIR="$T/empty" URSA_REDIS_URL="redis://127.0.0.1:$port" URSA_KAFKA_BOOTSTRAP="$BOOTSTRAP" \
        "$BIN/ursa" status "$@"
}
run >"$T/status.txt" || { cat "$T/status.txt"; echo "bench-status: status is not healthy" >&2; exit 1; }
live=$(grep -cE '^  (crawler|verifier|trainer|inference) ' "$T/status.txt")
[ "$live" = 20 ] || { cat "$T/status.txt"; echo "bench-status: $live instances listed, not 20" >&2; exit 1; }

# median of RUNS timed runs, in ms
bench() {
    local times=() t0
    for _ in $(seq "$RUNS"); do
        t0=$(date +%s%N)
        run "$@" >/dev/null
        times+=($((($(date +%s%N) - t0) / 1000000)))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk -v label="$2" '{a[NR] = $1} END {
        printf "ursa status -o %-4s runs=%d median_ms=%d min_ms=%d max_ms=%d\n", label, NR, a[int((NR + 1) / 2)], a[1], a[NR]}'
}
echo "20 instances, $(grep -c . "$T/status.txt") lines of status; cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
bench -o text
bench -o json
