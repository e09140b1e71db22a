# A 10,000-URL ingest survives a SIGKILLed crawler, a SIGKILLed verifier and
# a SIGKILLed Redis, each restarted by `ursa up` in the middle of the run:
# at the end every URL is verified exactly once and the counts add up, and
# the restarted verifier counted what it verified, not the messages it was
# handed again.
. "$(dirname "$0")/lib.sh"
start_fault_server
stack_up
N=10000
seq 0 $((N - 1)) | sed "s|^|$FS/gen/|; s|\$|.jpg|" >"$T/urls_gen.txt"
"$URSA" ingest --dataset gen --no-wait "$T/urls_gen.txt" >"$T/ingest.out" 2>&1 || fail "ingest"
grep -q "$N queued" "$T/ingest.out" || fail "ingest: $(cat "$T/ingest.out")"

kill_and_restart() { # NAME: SIGKILL it, then `ursa up` starts it again
    local pid
    pid=$(cat "$URSA_STATE_DIR/run/$1.pid")
    log "killing $1 (pid $pid) at $(state_sum gen verified) verified"
    kill -9 "$pid"
    wait_for 10 "$1 to die" dead "$pid"
    BEFORE=$(state_sum gen verified) # nothing verifies until it is back
    "$URSA" up >>"$T/up2.log" 2>&1 || fail "ursa up after killing $1: $(cat "$T/up2.log")"
    grep -q "started $1" "$T/up2.log" || fail "$1 not restarted"
}
verified_at_least() { [ "$(state_sum gen verified)" -ge "$1" ]; }

wait_for 120 "1500 verified" verified_at_least 1500
kill_and_restart crawler
wait_for 120 "4000 verified" verified_at_least 4000
kill_and_restart verifier
V0=$BEFORE
VM=$(sed -n 's/^started verifier .*metrics=\([^ ]*\).*/\1/p' "$T/up2.log" | tail -n 1)
wait_for 120 "6000 verified" verified_at_least 6000
kill_and_restart redis
wait_for 200 "every URL final" all_final gen

check_eq "total" "$(count_of gen total)" $N
check_eq "verified" "$(state_sum gen verified)" $N
check_eq "verified per label" "$(count_of gen 'gen|verified')" $N
for s in queued downloaded duplicate rejected failed; do
    check_eq "$s" "$(state_sum gen $s)" 0
done
check_eq "states recorded" "$(count_of gen total)" $N
check_eq "verified states" "$(state_sum gen verified)" $N
check_eq "manifest" "$(state_sum gen verified)" $N
check_eq "negative counters" "$(negative_counters gen)" 0
# (a Redis SIGKILL can cost the count the messages of the batch in flight,
# whose states were stored but whose answers were lost: such a message is
# counted by no one. A batch holds at most DS_BATCH_ITEMS, 256; one CI run
# lost 161 that way)
metrics_to "$VM" "$T/vm.txt" || fail "the verifier's metrics"
counted=$(awk '$1 == "ursa_verifier_images_verified_total" {print $2}' "$T/vm.txt")
log "verified by the restarted verifier: $counted counted, $((N - V0)) done"
[ "$counted" -le $((N - V0)) ] && [ "$counted" -ge $((N - V0 - 256)) ] ||
    fail "the restarted verifier counted $counted verified; it verified $((N - V0))"
echo "test_ingest_crash: ok"
