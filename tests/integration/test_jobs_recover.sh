# Issue 28, defect 1: jobs outlive the embedded broker. Its messages die
# with it, but Redis knows every job: a job that is not final and that no
# worker holds a lease on is sent again by the trainers' sweep. Drills:
#  - the broker SIGKILLed with a job running, then `ursa up` (which
#    SIGKILLs every daemon): the job runs again within 30 s and ends done,
#    every epoch's row once, its model published once;
#  - `ursa down` with a job running says so, and after `ursa up` the job
#    runs again;
#  - a job whose worker is dead (no lease) is cancelled at once.
# Before the fix the first drill failed: the job stayed "running" on the
# dead worker and never ran again.
. "$(dirname "$0")/lib.sh"
start_fmnist_server 600
stack_up
"$URSA" ingest --dataset fm "$FM"/urls_*.txt >"$T/ingest.out" 2>&1 || fail "ingest: $(cat "$T/ingest.out")"
"$URSA" train --dataset fm --arch small --size 28 --bs 16 --stage 10:1e-2 --stage 10:1e-3:1e-2 \
    --no-wait >"$T/train.out" || fail "submit"
J=$(job_id_of "$T/train.out")
rows_at_least() { [ "$(job_rows "$1")" -ge "$2" ]; }
wait_for 300 "a first epoch" rows_at_least "$J" 1


# ---- the broker dies with a job running ----
broker=$(cat "$URSA_STATE_DIR/run/broker.pid")
log "killing the broker with job $J at $(job_rows "$J") epochs"
kill -9 "$broker"
wait_for 10 "the broker to die" dead "$broker"
"$URSA" up >"$T/up2.log" 2>&1 || fail "ursa up: $(cat "$T/up2.log")"
t0=$SECONDS
# the trainer trained on without the broker until up killed it
[ "$(job_rows "$J")" -lt 20 ] || fail "the job ended before the kill; make it longer"
BOOTSTRAP=$("$URSA" env | sed -n 's/^URSA_KAFKA_BOOTSTRAP=//p')
running_again() { [ "$(job_field "$1" starts | sed 's/^$/0/')" -ge "$2" ]; }
wait_for 30 "job $J running again after the broker's restart" running_again "$J" 2
log "job $J running again $((SECONDS - t0)) s after ursa up"
grep -q "event=job_requeued job=$J" "$URSA_STATE_DIR/log/trainer.log" || fail "no requeue logged"
ended() { case "$(job_state "$1")" in done | failed | cancelled) return 0 ;; esac; return 1; }
wait_for 300 "job $J to end" ended "$J"
check_eq "state" "$(job_state "$J")" done
check_eq "rows" "$(job_rows "$J")" 20
check_eq "models" "$(rcli ZCARD ursa:models | tr -d '\n')" 1
sleep 2
check_eq "announcements" "$(kcat -b "$BOOTSTRAP" -C -t ursa.models.published -e -q -f '%k\n' |
    grep -cx "fm-$J")" 1

# ---- ursa down with a job running, then up ----
"$URSA" train --dataset fm --arch small --size 28 --bs 16 --stage 300:1e-2 \
    --no-wait >"$T/train2.out" || fail "submit 2"
K=$(job_id_of "$T/train2.out")
wait_for 120 "job $K running" running_again "$K" 1
"$URSA" down >"$T/down.out" 2>&1 || fail "down: $(cat "$T/down.out")"
grep -q "job $K is running; it resumes when the stack is up again" "$T/down.out" ||
    fail "ursa down said nothing of the job: $(cat "$T/down.out")"
"$URSA" up >"$T/up3.log" 2>&1 || fail "ursa up: $(cat "$T/up3.log")"
t0=$SECONDS
wait_for 30 "job $K running again after down and up" running_again "$K" 2
log "job $K running again $((SECONDS - t0)) s after ursa up"

# ---- its worker dies; the cancel takes effect at once ----
PID=$(cat "$URSA_STATE_DIR/run/trainer.pid")
kill -9 "$PID"
wait_for 10 "the trainer to die" dead "$PID"
no_lease() { [ "$(rcli EXISTS "ursa:job:$K:lease" | tr -d '\n')" = 0 ]; }
wait_for 20 "the dead worker's lease to lapse" no_lease
"$URSA" job "$K" >"$T/job.out"
grep -q "but no worker holds it" "$T/job.out" || fail "ursa job: $(cat "$T/job.out")"
"$URSA" job cancel "$K" >"$T/cancel.out" || fail "cancel"
grep -q "job $K cancelled: no worker was running it" "$T/cancel.out" || fail "cancel: $(cat "$T/cancel.out")"
check_eq "state after the cancel" "$(job_state "$K")" cancelled
echo "test_jobs_recover: ok"
