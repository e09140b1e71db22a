# An audit sized to its data, on 200 Fashion-MNIST images: by default it
# fits heads on the body of the dataset's newest model (that model's blob in
# the job, the features computed once, one head stage and never the model's
# own stages); an audit whose models get most images wrong says its
# suggestions are unreliable; and a fold that would train fewer than
# --min-steps optimizer steps gets its epochs scaled up, which the log, the
# job's hash and `ursa job` say, with the epochs counted right.
. "$(dirname "$0")/lib.sh"
start_fmnist_server 200
stack_up
"$URSA" ingest --dataset fm "$FM"/urls_*.txt >"$T/ingest.out" 2>&1 || fail "ingest: $(cat "$T/ingest.out")"
check_eq "verified" "$(state_sum fm verified)" 200
TLOG="$URSA_STATE_DIR/log/trainer.log"

# ---- the newest model's body: head-only folds ----
# two stages, so that the model's own recipe is told from the audit's
"$URSA" train --dataset fm --arch small --size 28 --bs 32 --stage 1:1e-2 --stage 1:1e-3 \
    >"$T/train.out" 2>&1 || fail "train: $(cat "$T/train.out")"
M=$(job_field "$(job_id_of "$T/train.out")" model)
MB=$(rcli HGET "ursa:model:$M" blob | tr -d '\n')
[ ${#MB} = 64 ] || fail "no blob for model $M"
"$URSA" audit --dataset fm --folds 2 >"$T/body.out" 2>&1 || fail "audit: $(cat "$T/body.out")"
grep -q "each small for 6 epochs in 1 stage, 28 px, batch 32 (the body of its newest model $M); a pretrained body: the folds fit the head alone" \
    "$T/body.out" || fail "audit on the model's body: $(head -3 "$T/body.out")"
B=$(job_id_of "$T/body.out")
check_eq "body audit state" "$(job_state "$B")" done
"$URSA" job "$B" >"$T/body.job" || fail "ursa job $B"
grep -q "^settings: .*, pretrained ${MB:0:12}$" "$T/body.job" || fail "the model's blob is not the body: $(cat "$T/body.job")"
grep -q "^folds: the head alone, on the features of the pretrained body ${MB:0:12} (256 an image, computed once)$" \
    "$T/body.job" || fail "ursa job: $(cat "$T/body.job")"
check_eq "feature dimension in the job" "$(job_field "$B" fdim)" 256
grep -q "event=audit_features job=$B images=200 dim=256 ms=" "$TLOG" || fail "features not computed once"
# 2 folds of about 100 images at batch 32: 2 or 3 steps an epoch, so the
# default --min-steps 300 wants 100 or more epochs, capped at 50
grep -Eq "^each fold trains 50 epochs \(1[05]0 steps\): the recipe's 6 epochs \(1[28] steps\) are fewer than --min-steps 300 \(capped at 50 epochs a fold\)$" \
    "$T/body.job" || fail "head-only budget: $(cat "$T/body.job")"
check_eq "head-only epochs run" "$(job_rows "$B")" 100

# ---- models that are mostly wrong: unreliable suggestions ----
# one epoch of three steps from random weights, on ten classes
"$URSA" audit --dataset fm --recipe flags --arch small --size 28 --bs 32 --folds 2 --stage 1:1e-2 \
    --min-steps 0 >"$T/weak.out" 2>&1 || fail "audit: $(cat "$T/weak.out")"
W=$(job_id_of "$T/weak.out")
check_eq "weak audit state" "$(job_state "$W")" done
grep -Eq "^out-of-fold error [0-9]+%: the suggestions are unreliable \(train longer, or a better model first\)$" \
    "$T/weak.out" || fail "not called unreliable: $(tail -4 "$T/weak.out")"
"$URSA" job "$W" | grep -q "the suggestions are unreliable" || fail "ursa job does not say unreliable"
grep -q "event=job_ended job=$W .*the suggestions are unreliable" "$TLOG" || fail "the job's reason does not say unreliable"
check_eq "the weak audit's epochs (--min-steps 0)" "$(job_rows "$W")" 2
grep -q "^each fold trains" "$T/weak.out" && fail "--min-steps 0 scaled the folds"

# ---- too few steps: the folds scaled up to --min-steps ----
"$URSA" audit --dataset fm --recipe flags --arch small --size 28 --bs 32 --folds 2 --stage 1:1e-2 \
    --min-steps 12 >"$T/steps.out" 2>&1 || fail "audit: $(cat "$T/steps.out")"
S=$(job_id_of "$T/steps.out")
check_eq "scaled audit state" "$(job_state "$S")" done
"$URSA" job "$S" >"$T/steps.job" || fail "ursa job $S"
L=$(grep "^each fold trains" "$T/steps.job") || fail "no budget in ursa job: $(cat "$T/steps.job")"
read -r N ST PER <<<"$(sed -n 's/^each fold trains \([0-9]*\) epochs (\([0-9]*\) steps): the recipe.s 1 epoch (\([0-9]*\) steps) is fewer than --min-steps 12$/\1 \2 \3/p' <<<"$L")"
[ -n "${PER:-}" ] || fail "budget line: $L"
check_eq "steps of a fold" "$ST" $((N * PER))
check_eq "epochs of a fold" "$N" $(((12 + PER - 1) / PER))
check_eq "fold_epochs in the job" "$(job_field "$S" fold_epochs)" "$N"
check_eq "epochs run" "$(job_rows "$S")" $((2 * N))
check_eq "the job's last epoch" "$(job_field "$S" epoch)" $((2 * N))
grep -q "^$L$" "$T/steps.out" || fail "ursa audit did not say the folds were scaled: $(head -5 "$T/steps.out")"
grep -q "event=audit_budget job=$S fold_epochs=$N fold_steps=$ST recipe_epochs=1 " "$TLOG" ||
    fail "budget not logged: $(grep "job=$S" "$TLOG" | head -3)"
log "audit: body of $M ($(job_field "$B" error_rate) out of fold), weak $(job_field "$W" error_rate), $N epochs a fold for --min-steps 12"
echo "test_audit: ok"
