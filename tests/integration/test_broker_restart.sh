# The embedded broker keeps nothing: killed in the middle of an ingest, its
# queue is gone, but Redis still knows every URL, and
# `ursa retry --pending` queues again those without a final state. At the
# end every URL is verified once. Also: --max-per-label.
. "$(dirname "$0")/lib.sh"
start_fault_server
stack_up
N=3000
seq 0 $((N - 1)) | sed "s|^|$FS/gen/|; s|\$|.jpg|" >"$T/urls_gen.txt"
"$URSA" ingest --dataset gen --no-wait "$T/urls_gen.txt" >"$T/ingest.out" 2>&1 || fail "ingest"
verified_at_least() { [ "$(state_sum gen verified)" -ge "$1" ]; }
wait_for 60 "300 verified" verified_at_least 300
broker=$(cat "$URSA_STATE_DIR/run/broker.pid")
log "killing the broker at $(state_sum gen verified) verified"
kill -9 "$broker"
wait_for 10 "the broker to die" dead "$broker"
"$URSA" up >"$T/up2.log" 2>&1 || fail "ursa up: $(cat "$T/up2.log")"
grep -q "started broker" "$T/up2.log" || fail "broker not restarted"
grep -q "started crawler" "$T/up2.log" || fail "crawler not moved to the new broker"
sleep 3
pending=$(($(state_sum gen queued) + $(state_sum gen downloaded)))
log "$pending URLs without a final state after the broker restart"
[ "$pending" -gt 0 ] || fail "test needs URLs left pending"
"$URSA" retry --dataset gen --pending >"$T/retry.out" || fail "retry --pending"
grep -q "URLs queued again (every URL without a final state)" "$T/retry.out" || fail "$(cat "$T/retry.out")"
wait_for 120 "every URL final" all_final gen
check_eq "verified" "$(state_sum gen verified)" $N
check_eq "manifest" "$(state_sum gen verified)" $N
check_eq "negative counters" "$(negative_counters gen)" 0

# --max-per-label keeps the first N of each label
printf '%s\n' "$FS/img/good.jpg" "$FS/img/cmyk.jpg" "$FS/img/png16.png" >"$T/a.txt"
"$URSA" ingest --dataset few --max-per-label 2 "$T/a.txt" >"$T/few.out" 2>&1 || fail "few"
grep -q "2 queued, 0 already in the dataset, 0 listed twice, 1 over --max-per-label" "$T/few.out" \
    || fail "max-per-label: $(cat "$T/few.out")"
check_eq "few total" "$(count_of few total)" 2
echo "test_broker_restart: ok"
