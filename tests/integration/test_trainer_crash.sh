# A trainer SIGKILLed in the middle of a job and started again finishes the
# job from its last checkpoint: every epoch's row once, one model, the job
# started twice and resumed once, and the schedule picked up where it was.
. "$(dirname "$0")/lib.sh"
start_fmnist_server 1000
export URSA_TRAINER_LEASE_MS=3000 # a killed worker's lease lapses in 3 s
stack_up
"$URSA" ingest --dataset fm "$FM"/urls_*.txt >"$T/ingest.out" 2>&1 || fail "ingest: $(cat "$T/ingest.out")"
"$URSA" train --dataset fm --arch small --size 28 --bs 16 --stage 3:1e-2 --stage 3:1e-3:1e-2 \
    --no-wait >"$T/train.out" || fail "submit"
J=$(job_id_of "$T/train.out")
rows_at_least() { [ "$(job_rows "$J")" -ge "$1" ]; }
wait_for 300 "two epochs" rows_at_least 2
PID=$(cat "$URSA_STATE_DIR/run/trainer.pid")
log "killing the trainer (pid $PID) after $(job_rows "$J") epochs"
kill -9 "$PID"
wait_for 10 "the trainer to die" dead "$PID"
[ "$(job_rows "$J")" -lt 6 ] || fail "the job ended before the kill; make it longer"
check_eq "state after the kill" "$(job_state "$J")" running
"$URSA" up >"$T/up2.log" 2>&1 || fail "ursa up after the kill: $(cat "$T/up2.log")"
grep -q "started trainer" "$T/up2.log" || fail "trainer not restarted"
"$URSA" job "$J" >/dev/null || fail "ursa job"
done_or_failed() { case "$(job_state "$J")" in done | failed | cancelled) return 0 ;; esac; return 1; }
wait_for 300 "the job to end" done_or_failed
check_eq "state" "$(job_state "$J")" done
check_eq "rows" "$(job_rows "$J")" 6
check_eq "starts" "$(job_field "$J" starts)" 2
check_eq "resumes" "$(job_field "$J" resumes)" 1
grep -q "event=resumed job=$J" "$URSA_STATE_DIR/log/trainer.log" || fail "no resume logged"
# rows 0..5 are stage 1 epochs 0..2 then stage 2 epochs 0..2, each once
rcli HGETALL "ursa:job:$J:rows" | paste - - | sort -n | cut -f1-3 >"$T/rows"
printf '0\t1\t0\n1\t1\t1\n2\t1\t2\n3\t2\t0\n4\t2\t1\n5\t2\t2\n' | cmp -s - "$T/rows" ||
    fail "rows: $(cat "$T/rows")"
check_eq "models" "$(rcli ZCARD ursa:models | tr -d '\n')" 1
wait_for 20 "the announcement" bash -c \
    "kcat -b $BOOTSTRAP -C -t ursa.models.published -e -q -f '%k\n' | grep -qx 'fm-$J'"
[ ! -e "$URSA_STATE_DIR/checkpoints/$J.ckpt" ] || fail "checkpoint left behind"
"$URSA" job "$J" >"$T/job.out"
grep -q "resumed from a checkpoint 1" "$T/job.out" || fail "ursa job: $(cat "$T/job.out")"
echo "test_trainer_crash: ok"
