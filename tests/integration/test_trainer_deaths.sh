# Issue 28, defect 4: a trainer that dies at every start of a job (the
# kernel's OOM killer in a small memory cgroup) does not start it forever:
# after trainer.max-starts deaths the job fails with the reason, and `ursa
# job` says so. A memory cgroup is not available to the tests, so the
# trainer is SIGKILLed right after each start, which is what the kernel
# does to it. Before the fix the job started a fourth time and went on.
. "$(dirname "$0")/lib.sh"
export URSA_TRAINER_LEASE_MS=3000 URSA_TRAINER_MAX_STARTS=3
start_fmnist_server 300
stack_up
"$URSA" ingest --dataset fm "$FM"/urls_*.txt >"$T/ingest.out" 2>&1 || fail "ingest: $(cat "$T/ingest.out")"
"$URSA" train --dataset fm --arch small --size 28 --bs 16 --stage 50:1e-2 \
    --no-wait >"$T/train.out" || fail "submit"
J=$(job_id_of "$T/train.out")
starts_at_least() { [ "$(job_field "$J" starts | sed 's/^$/0/')" -ge "$1" ]; }
for k in 1 2 3; do
    wait_for 60 "start $k" starts_at_least "$k"
    PID=$(cat "$URSA_STATE_DIR/run/trainer.pid")
    kill -9 "$PID"
    wait_for 10 "the trainer to die" dead "$PID"
    log "trainer killed after start $k"
    "$URSA" up >"$T/up$k.log" 2>&1 || fail "ursa up: $(cat "$T/up$k.log")"
done
is_final() { case "$(job_state "$J")" in done | failed | cancelled) return 0 ;; esac; return 1; }
wait_for 60 "the job to end" is_final
check_eq "state" "$(job_state "$J")" failed
check_eq "starts" "$(job_field "$J" starts)" 3
job_field "$J" error | grep -q "the trainer died 3 times while running it: out of memory?" ||
    fail "error: $(job_field "$J" error)"
"$URSA" job "$J" >"$T/job.out" || true
grep -q "job failed: the trainer died 3 times while running it" "$T/job.out" || fail "ursa job: $(cat "$T/job.out")"
grep -q "its worker died 3 times while running it" "$T/job.out" || fail "ursa job: $(cat "$T/job.out")"
echo "test_trainer_deaths: ok"
