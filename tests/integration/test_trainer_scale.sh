# Two trainers and three jobs: all three finish, none runs twice (each job
# started once, never resumed; one model each). The second trainer joins
# while the first is in the middle of a job, so the rebalance hands that
# job's message over while it runs: the lease keeps the newcomer waiting.
. "$(dirname "$0")/lib.sh"
start_fmnist_server 600
stack_up
"$URSA" ingest --dataset fm "$FM"/urls_*.txt >"$T/ingest.out" 2>&1 || fail "ingest: $(cat "$T/ingest.out")"
IDS=()
for s in 1 2 3; do
    "$URSA" train --dataset fm --arch small --size 28 --bs 32 --seed "$s" --stage 5:1e-2 \
        --no-wait >"$T/train$s.out" || fail "submit $s"
    IDS+=("$(job_id_of "$T/train$s.out")")
done
any_running() {
    for j in "${IDS[@]}"; do [ "$(job_state "$j")" = running ] && return 0; done
    return 1
}
wait_for 120 "a job to run" any_running
"$URSA_BIN/ursa-trainer" >"$T/trainer2.log" 2>&1 &
PIDS+=("$!")
all_done() {
    for j in "${IDS[@]}"; do [ "$(job_state "$j")" = done ] || return 1; done
}
wait_for 400 "three jobs done" all_done
for j in "${IDS[@]}"; do
    check_eq "$j starts" "$(job_field "$j" starts)" 1
    check_eq "$j resumes" "$(job_field "$j" resumes)" 0
    check_eq "$j rows" "$(job_rows "$j")" 5
done
check_eq "models" "$(rcli ZCARD ursa:models | tr -d '\n')" 3
# each job message handled to its end once: "job_started" logged once a job
for j in "${IDS[@]}"; do
    n=$(cat "$URSA_STATE_DIR/log/trainer.log" "$T/trainer2.log" | grep -c "event=job_started job=$j")
    check_eq "$j started in the logs" "$n" 1
done
log "workers: $(for j in "${IDS[@]}"; do job_field "$j" worker; echo -n ' '; done)"
echo "test_trainer_scale: ok"
