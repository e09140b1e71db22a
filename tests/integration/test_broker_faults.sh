# Broker faults on the embedded 3-broker cluster: topics get 3 replicas; a
# broker is taken down mid-ingest (`ursa broker down 2`, which moves its
# partition leaders and group coordinators to the live brokers) and the
# ingest keeps going, with the longest stall printed; it comes back up;
# injected produce errors are retried; injected commit errors (a rebalance
# each) do not hand out done work again; every count ends exact.
. "$(dirname "$0")/lib.sh"
export URSA_BROKER_BROKERS=3
N=1500
start_fault_server
stack_up
grep -q 'brokers=3 replicas=3' "$URSA_STATE_DIR/log/broker.log" || fail "broker not started with 3 replicas"
kcat -b "$BOOTSTRAP" -L -t ursa.crawl.requests >"$T/md.txt" 2>&1 || fail "kcat metadata"
grep -q 'replicas: [0-9],[0-9],[0-9]' "$T/md.txt" || fail "ursa.crawl.requests has not 3 replicas: $(cat "$T/md.txt")"
"$URSA" broker status >"$T/bs.txt" || fail "ursa broker status"
grep -q '^ok 1:up 2:up 3:up' "$T/bs.txt" || fail "broker status: $(cat "$T/bs.txt")"
"$URSA" broker down 9 2>"$T/bad.txt" && fail "ursa broker down 9 accepted"
grep -q 'no broker' "$T/bad.txt" || fail "no clear error for a broker that does not exist"

seq 0 $((N - 1)) | sed "s|^|$FS/gen/|; s|\$|.jpg|" >"$T/urls_gen.txt"
"$URSA" ingest --dataset gen --no-wait "$T/urls_gen.txt" >"$T/ingest.log" 2>&1 || fail "ingest"
finals() { counts_of gen | awk -F'\t' '$1 ~ /\|(verified|duplicate|rejected|failed)$/ {s += $2} END {print s + 0}'; }
under_way() { [ "$(finals)" -ge 100 ]; }
wait_for 60 "the ingest under way" under_way
"$URSA" broker down 2 >"$T/down.txt" || fail "broker down 2: $(cat "$T/down.txt")"
log "$(cat "$T/down.txt") at $(finals) final"
grep -q '^ok broker 2 down, [1-9][0-9]* leaders moved' "$T/down.txt" || fail "no leader moved off broker 2"

# watch the ingest with broker 2 down: the longest time without progress
prev=-1 stall=0 since=$(date +%s%N) end=$((SECONDS + 180))
while :; do
    cur=$(finals)
    now=$(date +%s%N)
    if [ "$cur" != "$prev" ]; then prev=$cur since=$now; fi
    s=$(((now - since) / 1000000))
    [ "$s" -gt "$stall" ] && stall=$s
    [ "$cur" -ge "$N" ] && break
    [ $SECONDS -ge $end ] && fail "ingest stopped at $cur of $N with broker 2 down (stalled ${stall} ms)"
    sleep 0.2
done
log "longest stall with broker 2 down: ${stall} ms"
"$URSA" broker up 2 >/dev/null || fail "broker up 2"
check_eq "verified" "$(state_sum gen verified)" $N
check_eq "total" "$(count_of gen total)" $N
check_eq "negative counters" "$(negative_counters gen)" 0

# injected errors: the next 30 produce requests fail with NOT_LEADER (6)
"$URSA" broker error 0 6 30 >/dev/null || fail "broker error"
seq $N $((N + 99)) | sed "s|^|$FS/gen/|; s|\$|.jpg|" >"$T/urls_more.txt"
"$URSA" ingest --dataset gen --label gen --wait-timeout-s 120 "$T/urls_more.txt" \
    >"$T/ingest2.log" 2>&1 || fail "ingest with produce errors injected"
check_eq "verified after the injected errors" "$(state_sum gen verified)" $((N + 100))

# injected offset-commit errors: ILLEGAL_GENERATION (22) makes each failed
# commit cost the group a rebalance, and the next commit fails again. What
# a consumer had done is not handed out again: a URL is downloaded again
# only if its download was under way at a rebalance.
M=1000
"$URSA" broker error 8 22 8 >/dev/null || fail "broker error 8"
seq 5000 $((5000 + M - 1)) | sed "s|^|$FS/delay/20/gen/|; s|\$|.jpg|" >"$T/urls_commit.txt"
"$URSA" ingest --dataset gen --label gen --wait-timeout-s 240 "$T/urls_commit.txt" \
    >"$T/ingest3.log" 2>&1 || fail "ingest with commit errors injected: $(tail -3 "$T/ingest3.log")"
check_eq "verified after the commit errors" "$(state_sum gen verified)" $((N + 100 + M))
gets=$(grep -c 'GET /delay/20/gen/' "$T/fs.log")
rebalances=$(grep -c 'event=partitions_revoked' "$URSA_STATE_DIR/log/crawler.log")
log "commit errors: $gets downloads for $M URLs, $rebalances crawler rebalances in all"
grep -q 'COMMITFAIL' "$URSA_STATE_DIR/log/crawler.log" || fail "no commit failed: the drill did nothing"
[ "$gets" -le $((M + 300)) ] || fail "$gets downloads for $M URLs: the backlog was handed out again"
echo "test_broker_faults: ok stall_ms=$stall"
