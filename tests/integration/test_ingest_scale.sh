# Two crawlers and two verifiers in the same groups share one ingest: each
# instance handles part of it, and every URL is verified exactly once.
. "$(dirname "$0")/lib.sh"
start_fault_server
stack_up
"$URSA_BIN/ursa-crawler" >"$T/crawler2.log" 2>&1 &
c2=$!
PIDS+=("$c2")
"$URSA_BIN/ursa-verifier" >"$T/verifier2.log" 2>&1 &
v2=$!
PIDS+=("$v2")
# let both members of each group join before the work arrives
wait_for 30 "second crawler assigned" grep -q partitions_assigned "$T/crawler2.log"
wait_for 30 "second verifier assigned" grep -q partitions_assigned "$T/verifier2.log"
sleep 2

N=4000
seq 0 $((N - 1)) | sed "s|^|$FS/gen/|; s|\$|.jpg|" >"$T/urls_gen.txt"
"$URSA" ingest --dataset gen --wait-timeout-s 240 "$T/urls_gen.txt" >"$T/ingest.out" 2>&1 \
    || fail "ingest: $(tail -3 "$T/ingest.out")"
check_eq "verified" "$(state_sum gen verified)" $N
check_eq "manifest" "$(state_sum gen verified)" $N

# stop the extra instances cleanly; each says how much it did
kill -TERM "$c2" "$v2"
wait "$c2" || fail "second crawler exit code"
wait "$v2" || fail "second verifier exit code"
d2=$(grep -o 'event=stopped downloaded=[0-9]*' "$T/crawler2.log" | grep -o '[0-9]*$')
w2=$(grep -o 'event=stopped verified=[0-9]*' "$T/verifier2.log" | grep -o '[0-9]*$')
log "second crawler downloaded $d2 of $N, second verifier verified $w2 of $N"
[ "$d2" -gt 0 ] && [ "$d2" -lt $N ] || fail "second crawler did not share the work ($d2)"
[ "$w2" -gt 0 ] && [ "$w2" -lt $N ] || fail "second verifier did not share the work ($w2)"
echo "test_ingest_scale: ok"
