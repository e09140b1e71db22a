# One process produces, another consumes in a group and forwards; kcat and
# redis-cli read what ursa wrote; SIGTERM stops the consumer cleanly (exit 0)
# with its offsets committed, so a restart handles nothing again.
. "$(dirname "$0")/lib.sh"
stack_up

"$PROBE" produce --topic ursa.probe --count 20 >"$T/produce.log" 2>&1 || fail "produce"
start_consumer c1 --topic ursa.probe --worker w1 --forward ursa.probe.out
wait_for 60 "20 effects applied" stat_at_least applied 20

# standard clients read what ursa wrote
keys=$(kcat -b "$BOOTSTRAP" -C -t ursa.probe -e -q -f '%k\n' | sort -V | tr '\n' ' ')
check_eq "keys read by kcat" "$keys" "$(seq -f 'm-%g' 0 19 | tr '\n' ' ')"
wait_for 30 "20 forwarded messages" bash -c \
    "[ \$(kcat -b $BOOTSTRAP -C -t ursa.probe.out -e -q -f '%s\n' | grep -c '^value m-') -eq 20 ]"
check_eq "effects listed by redis-cli" "$(rcli LLEN probe:log)" 20
check_eq "handler calls" "$(stat_of handled)" 20

kill -TERM "$c1"
wait "$c1" && rc=0 || rc=$?
check_eq "consumer exit code after SIGTERM" "$rc" 0
grep -q "event=consumer_stopped" "$T/consumer-c1.log" || fail "no clean stop logged"

# restart: the committed offsets mean nothing is handled again
start_consumer c2 --topic ursa.probe --worker w1
wait_for 30 "consumer to get partitions" grep -q partitions_assigned "$T/consumer-c2.log"
sleep 2
check_eq "handler calls after restart" "$(stat_of handled)" 20
echo "test_kq_basic: ok"
