# A consumer SIGKILLed after applying an effect but before storing the
# offset gets the message again after restart, and the effect is applied once.
. "$(dirname "$0")/lib.sh"
stack_up

"$PROBE" produce --topic ursa.probe --count 10 >"$T/produce.log" 2>&1 || fail "produce"
start_consumer c1 --topic ursa.probe --worker w1 --crash-after 5
wait_for 60 "the consumer to kill itself" dead "$c1"
check_eq "applied before the crash" "$(stat_of applied)" 5

start_consumer c2 --topic ursa.probe --worker w1
wait_for 60 "all 10 applied" stat_at_least applied 10
sleep 1
handled=$(stat_of handled)
log "handler calls: $handled for 10 messages"
[ "$handled" -ge 11 ] || fail "the unstored message was not delivered again (handled=$handled)"
check_eq "applied once each" "$(stat_of applied)" 10
check_eq "effects" "$(rcli LRANGE probe:log 0 -1 | sort | uniq -d | wc -l)" 0
check_eq "effects listed" "$(rcli LLEN probe:log)" 10
echo "test_kq_crash: ok"
