# Redis is killed and restarted while a consumer works: the consumer waits
# and retries (an outage never dead-letters), and every message's effect is
# there exactly once at the end. Then Redis stalled (SIGSTOP) under `ursa
# ingest` and downloads in flight (below).
. "$(dirname "$0")/lib.sh"
stack_up

"$PROBE" produce --topic ursa.probe --count 300 >"$T/produce.log" 2>&1 || fail "produce"
start_consumer c1 --topic ursa.probe --worker w1 --sleep-ms 10 --redis.timeout-ms 300
wait_for 60 "50 applied" stat_at_least applied 50
redis_pid=$(cat "$URSA_STATE_DIR/run/redis.pid")
log "killing redis at $(stat_of applied) applied"
kill -9 "$redis_pid"
sleep 3
"$URSA" up >"$T/up2.log" 2>&1 || fail "ursa up after the redis kill: $(cat "$T/up2.log")"
grep -q "started redis" "$T/up2.log" || fail "redis not restarted: $(cat "$T/up2.log")"
wait_for 120 "300 applied" stat_at_least applied 300
sleep 1
kill -0 "$c1" || fail "the consumer died during the Redis outage"
check_eq "applied" "$(stat_of applied)" 300
check_eq "effects listed" "$(rcli LLEN probe:log)" 300
check_eq "distinct effects" "$(rcli LRANGE probe:log 0 -1 | sort -u | wc -l)" 300
grep -q "event=redis_reconnected\|event=handler_retry" "$T/consumer-c1.log" || fail "no reconnect logged"
if kcat -b "$BOOTSTRAP" -C -t ursa.dlq.probe -e -q -f '%k\n' 2>/dev/null | grep -q .; then
    fail "an outage sent messages to the dead-letter topic"
fi

# A Redis stall (SIGSTOP) while downloads are under way: `ursa ingest` waits
# through it and says what is happening, and the crawler, whose loop the
# stall holds, does not count the timers it missed against the URLs (one
# attempt per URL, so none is saved by a retry). With --outage-timeout-s
# shorter than the stall, ingest gives up with the reason; nothing is lost.
start_fault_server
crawler_pid=$(cat "$URSA_STATE_DIR/run/crawler.pid")
kill "$crawler_pid"
wait_for 20 "the crawler to stop" dead "$crawler_pid"
URSA_CRAWLER_MAX_ATTEMPTS=1 "$URSA" up >"$T/up3.log" 2>&1 || fail "ursa up: $(cat "$T/up3.log")"
redis_pid=$(cat "$URSA_STATE_DIR/run/redis.pid")
stall_ingest() { # stall_ingest DATASET N0 SECONDS [ingest args]: SIGSTOP Redis mid-download
    local ds=$1 n0=$2 secs=$3 i
    shift 3
    # 20 images, answered over 1.9 s (the tests' fetch timeout is 3 s)
    for i in $(seq 0 19); do echo "$FS/delay/$((i * 100))/gen/$((n0 + i)).jpg"; done >"$T/urls_$ds.txt"
    "$URSA" ingest --dataset "$ds" --label gen "$@" "$T/urls_$ds.txt" >"$T/ingest-$ds.out" \
        2>"$T/ingest-$ds.err" &
    local ing=$!
    wait_for 20 "$ds downloads under way" grep -q "GET /delay/0/gen/$n0.jpg" "$T/fs.log"
    kill -STOP "$redis_pid"
    sleep "$secs"
    kill -CONT "$redis_pid"
    wait "$ing"
}
stall_ingest stall 1000 8 || fail "ingest through an 8 s stall: $(cat "$T/ingest-stall.err")"
grep -q "Redis does not answer" "$T/ingest-stall.err" || fail "no word of the outage"
grep -q "Redis answers again" "$T/ingest-stall.err" || fail "no word of the end of the outage"
check_eq "verified after the stall" "$(state_sum stall verified)" 20
grep -q "event=loop_stalled" "$URSA_STATE_DIR/log/crawler.log" || fail "no stall logged"
stall_ingest short 2000 8 --outage-timeout-s 2 && fail "ingest waited past --outage-timeout-s"
grep -q "has not answered for [0-9]* s .*gave up waiting" "$T/ingest-short.err" ||
    fail "no reason given: $(cat "$T/ingest-short.err")"
wait_for 60 "every URL of the abandoned wait final" all_final short
check_eq "verified after giving up" "$(state_sum short verified)" 20
echo "test_redis_restart: ok"
