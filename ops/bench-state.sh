#!/usr/bin/env bash
# bench-state.sh: what a dataset costs in Redis, and how fast the commands
# that read a whole dataset are, a benchmark command (not a test).
#
#   ops/bench-state.sh [N]          (default 1000000 URLs)
#
# Fills one dataset of N URLs through common/state/dataset (bench-state: 88%
# verified, 3% duplicates, 1% label conflicts, 5% failed, 3% queued), then
# times `ursa status` (text and -o json), `ursa status --failed` and `ursa retry --pending`
# over it on the embedded stack (its daemons stopped, so nothing competes).
# Targets (issue 17): 150 bytes of Redis a URL or less; 100,000 URLs/s for
# status --failed and retry --pending. The layout before it: 761 bytes a URL.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
ops/install-deps.sh >/dev/null
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
BIN=$PWD/build/bin
W=${TMPDIR:-/tmp}/ursa-bench-state
export URSA_STATE_DIR=$W/state
"$BIN/ursa" down >/dev/null 2>&1 || true
rm -rf "$W"
mkdir -p "$W"
trap '"$BIN/ursa" down >/dev/null 2>&1 || true' EXIT
"$BIN/ursa" up >"$W/up.log"
for d in crawler verifier trainer inference; do
    [ -f "$W/state/run/$d.pid" ] && kill "$(cat "$W/state/run/$d.pid")" 2>/dev/null || true
done
REDIS_URL=$("$BIN/ursa" env | sed -n 's/^URSA_REDIS_URL=//p')
PORT=${REDIS_URL##*:}
# ursa up sets a password on its Redis; redis-cli takes it from here
[ -f "$W/state/redis.password" ] && export REDISCLI_AUTH="$(cat "$W/state/redis.password")"

echo "== CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, avx512f: $(grep -c avx512f /proc/cpuinfo || true)"
echo "== filling dataset 'bench' with $N URLs"
"$BIN/bench-state" "$REDIS_URL" "$W/state/blobs" bench "$N" | tee "$W/fill.txt"
enc=$(redis-cli -p "$PORT" --raw OBJECT ENCODING "$(redis-cli -p "$PORT" --raw --scan --pattern 'ursa:ds:{bench:*}:u:*' | head -1)")
keys=$(redis-cli -p "$PORT" --raw DBSIZE)
echo "bucket_encoding $enc"
echo "redis_keys $keys"

timed() { # NAME COMMAND...: runs it, prints NAME seconds URLs/s
    local name=$1 t0 t1
    shift
    t0=$(date +%s%N)
    "$@" >"$W/$name.out" 2>"$W/$name.err" || { cat "$W/$name.err" >&2; exit 1; }
    t1=$(date +%s%N)
    awk -v n="$N" -v ns=$((t1 - t0)) -v name="$name" \
        'BEGIN {printf "%-16s %7.2f s  %9.0f URLs/s\n", name, ns / 1e9, n / (ns / 1e9)}'
}
echo "== whole-dataset commands over $N URLs"
timed status "$BIN/ursa" status --dataset bench
timed status-json "$BIN/ursa" status --dataset bench -o json
timed status-failed "$BIN/ursa" status --dataset bench --failed
timed retry-pending "$BIN/ursa" retry --dataset bench --pending
echo "status --failed listed $(($(wc -l <"$W/status-failed.out") - 1)) URLs; $(cat "$W/retry-pending.out")"
bpu=$(sed -n 's/^bytes_per_url //p' "$W/fill.txt")
awk -v b="$bpu" 'BEGIN {printf "== Redis bytes a URL: %.1f (target 150; the layout before: 761, %.1fx smaller)\n", b, 761 / b}'
