# Issue 28, defect 2: cleaning decisions sent while ursa-verifier is down,
# then lost with the embedded broker, are applied anyway, once each: the
# sender records them in Redis as pending before sending, the verifier's
# sweep sends again those still pending after verifier.edit-resend-ms.
# Before the fix none was ever applied and nothing said so.
. "$(dirname "$0")/lib.sh"
export URSA_VERIFIER_EDIT_RESEND_MS=5000
start_fmnist_server 160
stack_up
"$URSA" ingest --dataset fm "$FM"/urls_*.txt >"$T/ingest.out" 2>&1 || fail "ingest: $(cat "$T/ingest.out")"
N=$(state_sum fm verified)
[ "$N" -ge 150 ] || fail "only $N verified"
PID=$(cat "$URSA_STATE_DIR/run/verifier.pid")
kill -TERM "$PID"
wait_for 20 "the verifier to stop" dead "$PID"
printf 'name,label\n' >"$T/none.csv" # keep nothing: every image is deleted
"$URSA" clean --dataset fm --apply "$T/none.csv" --delete-missing --wait-s 1 >"$T/clean.out" 2>&1 &&
    fail "clean said every edit was applied: $(cat "$T/clean.out")"
grep -q "^$N edits sent: 0 relabel, $N delete" "$T/clean.out" || fail "clean: $(cat "$T/clean.out")"
grep -q "^0 of $N applied so far" "$T/clean.out" || fail "clean: $(cat "$T/clean.out")"
"$URSA" edits --dataset fm >"$T/edits1.out"
grep -q "^$N more sent and not applied yet" "$T/edits1.out" || fail "edits: $(cat "$T/edits1.out")"
broker=$(cat "$URSA_STATE_DIR/run/broker.pid")
kill -9 "$broker"
wait_for 10 "the broker to die" dead "$broker"
"$URSA" up >"$T/up2.log" 2>&1 || fail "ursa up: $(cat "$T/up2.log")"
grep -q "started verifier" "$T/up2.log" || fail "verifier not started: $(cat "$T/up2.log")"
applied() { [ "$(rcli LLEN 'ursa:ds:{fm:ed}:log' | tr -d '\n')" -ge "$N" ]; }
wait_for 60 "the $N edits applied" applied
grep -q "event=edits_sent_again dataset=fm edits=$N" "$URSA_STATE_DIR/log/verifier.log" ||
    fail "no resend logged"
sleep 7 # a later sweep finds nothing pending, and nothing applies twice
check_eq "edits in the log" "$(rcli LLEN 'ursa:ds:{fm:ed}:log' | tr -d '\n')" "$N"
check_eq "message ids applied" "$(rcli SCARD 'ursa:ds:{fm:ed}:seen' | tr -d '\n')" "$N"
check_eq "pending" "$(rcli ZCARD 'ursa:ds:{fm:ed}:pendt' | tr -d '\n')" 0
"$URSA" edits --dataset fm --limit 1 >"$T/edits2.out"
grep -q "^dataset fm: $N edits" "$T/edits2.out" || fail "edits: $(cat "$T/edits2.out")"
grep -q "not applied yet" "$T/edits2.out" && fail "edits: $(cat "$T/edits2.out")"
echo "test_edits_recover: ok"
