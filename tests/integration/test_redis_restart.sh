# Redis is killed and restarted while a consumer works: the consumer waits
# and retries (an outage never dead-letters), and every message's effect is
# there exactly once at the end.
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
echo "test_redis_restart: ok"
