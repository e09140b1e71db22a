# Two members of one group split the four partitions between them; every
# message is applied exactly once.
. "$(dirname "$0")/lib.sh"
stack_up

"$PROBE" produce --topic ursa.probe --count 400 >"$T/produce.log" 2>&1 || fail "produce"
start_consumer a --topic ursa.probe --worker wa --sleep-ms 10
start_consumer b --topic ursa.probe --worker wb --sleep-ms 10
wait_for 120 "400 effects applied" stat_at_least applied 400
sleep 1
check_eq "applied" "$(stat_of applied)" 400
check_eq "distinct effects" "$(rcli LRANGE probe:log 0 -1 | sort -u | wc -l)" 400
pa=$(rcli SMEMBERS probe:parts:wa | sort | tr '\n' ' ')
pb=$(rcli SMEMBERS probe:parts:wb | sort | tr '\n' ' ')
log "wa owned: $pa; wb owned: $pb"
[ -n "$pa" ] && [ -n "$pb" ] || fail "one member got no partition (wa: $pa, wb: $pb)"
check_eq "partitions covered" "$(printf '%s%s' "$pa" "$pb" | tr ' ' '\n' | grep . | sort | tr '\n' ' ')" "0 1 2 3 "
echo "test_kq_group: ok"
