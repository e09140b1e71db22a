# A message whose work takes long (a download from a slow host) holds its
# own place only: with kq.max-inflight 4 the other 59 are handled while it
# is held, where counting every message that waited for its offset paused
# the whole intake behind it. Once it ends, its offset and those after it
# are committed: a restarted consumer handles nothing again.
. "$(dirname "$0")/lib.sh"
stack_up

"$PROBE" produce --topic ursa.probe --count 60 >"$T/produce.log" 2>&1 || fail "produce"
start_consumer c1 --topic ursa.probe --worker w1 --hold-key m-0 --hold-ms 12000 --kq.max-inflight 4
wait_for 60 "m-0 held" grep -q "event=holding key=m-0" "$T/consumer-c1.log"
wait_for 10 "the other 59 applied while m-0 is held" stat_at_least applied 59
check_eq "m-0 applied already" "$(rcli EXISTS probe:done:m-0)" 0
grep -q "event=released" "$T/consumer-c1.log" && fail "m-0 released before the others were done"
wait_for 30 "m-0 applied after its hold" stat_at_least applied 60
check_eq "handler calls" "$(stat_of handled)" 60
sleep 2 # the offsets' auto-commit
kill -TERM "$c1"
wait "$c1" || fail "consumer exit code after SIGTERM"

start_consumer c2 --topic ursa.probe --worker w1
wait_for 30 "consumer to get partitions" grep -q partitions_assigned "$T/consumer-c2.log"
sleep 2
check_eq "handler calls after restart" "$(stat_of handled)" 60
echo "test_kq_hold: ok"
