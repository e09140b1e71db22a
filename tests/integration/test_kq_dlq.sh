# A message that always fails is retried, then lands in the group's
# dead-letter topic with its reason and attempt count; the messages behind
# it in its partition are processed.
. "$(dirname "$0")/lib.sh"
stack_up

"$PROBE" produce --topic ursa.probe --count 30 --poison 3 >"$T/produce.log" 2>&1 || fail "produce"
start_consumer c1 --topic ursa.probe --worker w1 --kq.max-attempts 3 --kq.backoff-ms 50
wait_for 60 "29 good messages applied" stat_at_least applied 29
wait_for 30 "a dead letter" bash -c \
    "kcat -b $BOOTSTRAP -C -t ursa.dlq.probe -e -q -f '%k\n' | grep -q ."
dl=$(kcat -b "$BOOTSTRAP" -C -t ursa.dlq.probe -e -q -J)
log "dead letter: $dl"
check_eq "dead letters" "$(echo "$dl" | grep -c .)" 1
echo "$dl" | grep -q '"key":"m-3"' || fail "wrong message dead-lettered"
echo "$dl" | grep -q '"payload":"poison m-3"' || fail "payload not kept as is"
echo "$dl" | grep -q '"ursa.dlq.reason","poison message m-3: always fails"' || fail "reason missing"
echo "$dl" | grep -q '"ursa.dlq.attempts","3"' || fail "attempt count missing"
echo "$dl" | grep -q '"ursa.dlq.topic","ursa.probe"' || fail "source topic missing"
# the poison message's partition had messages after it; all were applied
p3=$(kcat -b "$BOOTSTRAP" -C -t ursa.probe -e -q -f '%k %p %o\n' | awk '$1=="m-3"{print $2" "$3}')
after=$(kcat -b "$BOOTSTRAP" -C -t ursa.probe -e -q -f '%k %p %o\n' | awk -v p="${p3% *}" -v o="${p3#* }" '$2==p && $3>o' | wc -l)
log "partition ${p3% *}: $after messages behind the poison one"
[ "$after" -gt 0 ] || fail "test needs messages behind the poison one"
check_eq "applied" "$(stat_of applied)" 29
check_eq "handler calls (29 + 3 attempts)" "$(stat_of handled)" 32
echo "test_kq_dlq: ok"
