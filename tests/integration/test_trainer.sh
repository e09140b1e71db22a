# ursa train end to end on a Fashion-MNIST subset served over local HTTP:
# ingest, train two stages, the model published (Redis, blob store, Kafka)
# with its interpretation, and `ursa predict` on the exported file agreeing
# image for image with the trainer's own validation; lr-find and its plot;
# fine-tuning a pretrained body frozen then unfrozen; cancel; and the bad
# jobs, each failing at once with its reason.
. "$(dirname "$0")/lib.sh"
start_fmnist_server 300
stack_up
grep -q "started trainer" "$T/up.log" || fail "ursa up did not start the trainer"
"$URSA" ingest --dataset fm "$FM"/urls_*.txt >"$T/ingest.out" 2>&1 || fail "ingest: $(cat "$T/ingest.out")"
check_eq "verified" "$(state_sum fm verified)" 300

# two stages, the second with discriminative learning rates
"$URSA" train --dataset fm --arch small --size 28 --bs 32 --stage 3:1e-2 \
    --stage 2:1e-3:1e-2 >"$T/train.out" 2>"$T/train.err" || fail "train: $(cat "$T/train.out" "$T/train.err")"
J=$(job_id_of "$T/train.out")
[ -n "$J" ] || fail "no job id in: $(cat "$T/train.out")"
grep -q "stage 1 of 2: 3 epochs, whole model, max_lr 0.01" "$T/train.out" || fail "stage 1 header: $(cat "$T/train.out")"
grep -q "stage 2 of 2: 2 epochs, whole model, max_lr slice(0.001, 0.01)" "$T/train.out" || fail "stage 2 header"
check_eq "table rows printed" "$(grep -Ec '^[0-9]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9]{2}:[0-9]{2}$' "$T/train.out")" 5
grep -q "^epoch  train_loss  valid_loss  error_rate  time" "$T/train.out" || fail "table header"
check_eq "job state" "$(job_state "$J")" done
check_eq "rows in Redis" "$(job_rows "$J")" 5
check_eq "starts" "$(job_field "$J" starts)" 1
M=$(job_field "$J" model)
check_eq "model id" "$M" "fm-$J"
NV=$(job_field "$J" n_valid)
NT=$(job_field "$J" n_train)
check_eq "train + valid" "$((NV + NT))" 300
[ "$NV" -ge 30 ] && [ "$NV" -le 90 ] || fail "validation set of $NV images for valid_pct 0.2"

# published: registry, blob store, Kafka
"$URSA" models --dataset fm >"$T/models.out"
grep -Eq "^$M +fm +small +28 +10 " "$T/models.out" || fail "models: $(cat "$T/models.out")"
check_eq "ursa:models" "$(rcli ZRANGE ursa:models 0 -1 | tr -d '\n')" "$M"
wait_for 20 "models.published" bash -c \
    "kcat -b $BOOTSTRAP -C -t ursa.models.published -e -q -f '%k\n' | grep -qx '$M'"
# the same for scripts: -o json
"$URSA" models --dataset fm -o json >"$T/models.json" || fail "models -o json"
"$URSA" job "$J" -o json >"$T/job.json" || fail "job -o json"
"$URSA" jobs -o json >"$T/jobs.json" || fail "jobs -o json"
python3 - "$T" "$M" "$J" <<'EOF' || fail "-o json: $(cat "$T/models.json" "$T/job.json" "$T/jobs.json")"
import json, sys
t, m, j = sys.argv[1:]
models = json.load(open(t + "/models.json"))["models"]
assert [x["model"] for x in models] == [m] and models[0]["classes"] == 10, models
job = json.load(open(t + "/job.json"))
assert job["job"] == j and job["state"] == "done" and job["model"] == m, job
assert len(job["rows"]) == 5 and abs(job["rows"][4]["error_rate"] - job["error_rate"]) < 1e-5, job
assert j in [x["job"] for x in json.load(open(t + "/jobs.json"))["jobs"]]
EOF
"$URSA" export "$M" "$T/m.onnx" >"$T/export.out" || fail "export"
[ "$(sha256sum <"$T/m.onnx" | cut -c1-64)" = "$(rcli HGET "ursa:model:$M" blob | tr -d '\n')" ] ||
    fail "exported file is not the model's blob"
"$URSA" export nope-model "$T/x.onnx" 2>"$T/export2.err" && fail "export of an unknown model succeeded"
grep -q "no model nope-model" "$T/export2.err" || fail "unknown model: $(cat "$T/export2.err")"

# interpretation, and predict agreeing with it image for image
"$URSA" interp "$M" --top-losses 1000 --plot "$T/cm.svg" >"$T/interp.out" || fail "interp"
grep -q "^confusion matrix (rows: actual, columns: predicted)" "$T/interp.out" || fail "no confusion matrix"
grep -q "^most confused (actual, predicted, count)" "$T/interp.out" || fail "no most confused"
grep -q "<svg" "$T/cm.svg" || fail "no confusion plot"
awk -F'\t' 'NF == 6 && $6 ~ /^\//' "$T/interp.out" >"$T/top.tsv"
check_eq "top losses listed" "$(wc -l <"$T/top.tsv")" "$NV"
sort -s -t$'\t' -k4,4gr -c "$T/top.tsv" 2>/dev/null || fail "top losses not sorted by loss"
# each with the URL it came from (.../ds/<class>/<n>.jpg: the class it was ingested under)
awk -F'\t' '{n = split($1, p, "/"); if ($1 !~ /^http:\/\/127\.0\.0\.1:/ || p[n - 1] != $2) bad++} END {exit bad > 0}' \
    "$T/top.tsv" || fail "top losses without their source URLs: $(head -3 "$T/top.tsv")"
cut -f6 "$T/top.tsv" | xargs "$URSA" predict --model "$T/m.onnx" >"$T/pred.tsv" 2>/dev/null || fail "predict"
paste <(cut -f2,3 "$T/pred.tsv") <(cut -f3 "$T/top.tsv") | awk -F'\t' '$1 != $3' >"$T/disagree"
check_eq "predictions that differ from the trainer's" "$(wc -l <"$T/disagree")" 0
ERR=$(job_field "$J" error_rate)
ACC=$(paste <(cut -f2 "$T/pred.tsv") <(cut -f2 "$T/top.tsv") | awk -F'\t' '$1 == $2 {r++} END {printf "%.6f", r / NR}')
awk -v a="$ACC" -v e="$ERR" 'BEGIN {d = a - (1 - e); exit !(d < 1e-6 && d > -1e-6)}' ||
    fail "predict accuracy $ACC vs the trainer's error_rate $ERR"
log "model $M: error_rate $ERR, predict accuracy $ACC on $NV images"

# lr-find with its plot
"$URSA" lr-find --dataset fm --arch small --size 28 --bs 16 --plot "$T/lr.svg" >"$T/lr.out" 2>&1 ||
    fail "lr-find: $(cat "$T/lr.out")"
grep -Eq "^suggested lr: [0-9.e+-]+ " "$T/lr.out" || fail "no suggestion: $(cat "$T/lr.out")"
grep -q "<polyline" "$T/lr.svg" || fail "no lr plot"

# the lesson's recipe on a pretrained body: frozen head first, then all
# (validated with flip TTA: the interpretation is predict --tta flip's)
"$URSA" train --dataset fm --arch small --size 28 --bs 32 --pretrained "$T/m.onnx" --stage 1 \
    --unfreeze --stage 1:1e-4:1e-3 --tta flip >"$T/ft.out" 2>&1 || fail "fine-tune: $(cat "$T/ft.out")"
grep -q "stage 1 of 2: 1 epoch, frozen (head only)" "$T/ft.out" || fail "frozen stage: $(cat "$T/ft.out")"
grep -q "stage 2 of 2: 1 epoch, unfrozen, max_lr slice(0.0001, 0.001)" "$T/ft.out" || fail "unfrozen stage"
J2=$(job_id_of "$T/ft.out")
M2=$(job_field "$J2" model)
"$URSA" job "$J2" | grep -q "^settings: .*, tta flip" || fail "tta in ursa job: $("$URSA" job "$J2")"
"$URSA" export "$M2" "$T/ft.onnx" >/dev/null || fail "export $M2"
"$URSA" interp "$M2" --top-losses 1000 | awk -F'\t' 'NF == 6 && $6 ~ /^\//' >"$T/ft-top.tsv"
check_eq "flip TTA: top losses listed" "$(wc -l <"$T/ft-top.tsv")" "$NV"
cut -f6 "$T/ft-top.tsv" | xargs "$URSA" predict --model "$T/ft.onnx" --tta flip >"$T/ft-pred.tsv" 2>/dev/null ||
    fail "predict --tta flip"
paste <(cut -f2,3 "$T/ft-pred.tsv") <(cut -f3 "$T/ft-top.tsv") | awk -F'\t' '$1 != $3' >"$T/ft-disagree"
check_eq "flip TTA: predictions that differ from the trainer's" "$(wc -l <"$T/ft-disagree")" 0
# a server told to use the model's own TTA serves it with flip
"$URSA_BIN/ursa-inference" --inference.model "$T/ft.onnx" --inference.port 0 \
    --inference.port-file "$T/ft.port" --inference.tta model >"$T/ft-inf.log" 2>&1 &
FTI=$!
PIDS+=("$FTI")
wait_for 10 "the server of $M2" test -s "$T/ft.port"
wait_for 10 "its readyz" curl -sf "http://127.0.0.1:$(cat "$T/ft.port")/readyz"
curl -sf "http://127.0.0.1:$(cat "$T/ft.port")/v1/models" | grep -q '"tta": "flip"' ||
    fail "inference.tta model: $(curl -s "http://127.0.0.1:$(cat "$T/ft.port")/v1/models")"
kill "$FTI"

# cancel: a long job stops within seconds
"$URSA" train --dataset fm --arch small --size 28 --bs 16 --stage 500 --no-wait -o json >"$T/long.json" ||
    fail "submit"
L=$(python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); assert j["state"] == "queued"; print(j["job"])' "$T/long.json") ||
    fail "train --no-wait -o json: $(cat "$T/long.json")"
wait_for 120 "the long job to run" bash -c "[ \"\$(redis-cli -p $REDIS_PORT HGET ursa:job:$L state)\" = running ]"
"$URSA" job delete "$L" >"$T/del-running.out" 2>&1 && fail "a running job was deleted"
grep -q "job $L is running: cancel it first" "$T/del-running.out" || fail "delete running: $(cat "$T/del-running.out")"
"$URSA" datasets delete fm --yes >"$T/ds-del.out" 2>&1 && fail "a dataset was deleted under a running job"
grep -q "job $L is running on dataset fm: cancel it first" "$T/ds-del.out" ||
    fail "datasets delete under a job: $(cat "$T/ds-del.out")"
"$URSA" job cancel "$L" >"$T/cancel.out" || fail "cancel"
grep -q "cancel requested" "$T/cancel.out" || fail "cancel: $(cat "$T/cancel.out")"
wait_for 60 "the job to be cancelled" bash -c "[ \"\$(redis-cli -p $REDIS_PORT HGET ursa:job:$L state)\" = cancelled ]"
"$URSA" job "$L" >"$T/job.out" || fail "ursa job"
grep -q "state: cancelled" "$T/job.out" || fail "ursa job: $(cat "$T/job.out")"
"$URSA" jobs >"$T/jobs.out"
grep -Eq "^$L +train +fm +small +cancelled" "$T/jobs.out" || fail "jobs: $(cat "$T/jobs.out")"

# delete: the ended job is gone from every list, and a replay of its
# message (a trainer restarted before committing it) does not make it again
"$URSA" jobs delete "$L" >"$T/del.out" 2>&1 || fail "jobs delete: $(cat "$T/del.out")"
"$URSA" job "$L" >"$T/gone.out" 2>&1 && fail "a deleted job is still shown"
grep -q "no job $L" "$T/gone.out" || fail "deleted job: $(cat "$T/gone.out")"
"$URSA" jobs --limit 1000 | grep -q "^$L " && fail "a deleted job is still listed"
check_eq "the deleted job's keys" "$(rcli --scan --pattern "ursa:job:$L*" | sort | tr '\n' ' ')" "ursa:job:$L:deleted "
read -r JP JO < <(kcat -b "$BOOTSTRAP" -C -t ursa.train.jobs -e -q -f '%k %p %o\n' | awk -v k="$L" '$1 == k {print $2, $3; exit}')
kcat -b "$BOOTSTRAP" -C -t ursa.train.jobs -p "$JP" -o "$JO" -c 1 -e -q -f '%s' >"$T/job-msg.bin"
kcat -b "$BOOTSTRAP" -P -t ursa.train.jobs -p "$JP" -k "$L" "$T/job-msg.bin"
wait_for 30 "the replay to be dropped" grep -q "event=job_deleted_replay job=$L" "$URSA_STATE_DIR/log/trainer.log"
check_eq "the deleted job after the replay" "$(rcli EXISTS "ursa:job:$L" | tr -d '\n')" 0

# bad jobs fail at once, with their reason in the job's state
bad() { # EXPECTED-REASON ARGS...
    local want=$1
    shift
    "$URSA" train "$@" >"$T/bad.out" 2>&1 && fail "job succeeded: $* ($(cat "$T/bad.out"))"
    grep -q "job failed: .*$want" "$T/bad.out" || fail "want \"$want\": $(cat "$T/bad.out")"
    local id
    id=$(job_id_of "$T/bad.out")
    check_eq "state of the bad job" "$(job_state "$id")" failed
    job_field "$id" error | grep -q "$want" || fail "reason not in the job's state"
}
bad 'unknown dataset "nope"' --dataset nope --arch small --size 28
printf 'not a model' >"$T/junk.onnx"
bad "the pretrained file is not a model ursa can read" --dataset fm --arch resnet18 --pretrained "$T/junk.onnx"
bad "the pretrained model is not a resnet18 body" --dataset fm --arch resnet18 --size 28 --pretrained "$T/m.onnx"
# hostile files (issue 27) fail the job once, with the reason; they crashed
# the worker, which took the job up again after each restart
"$URSA_BIN/onnx-hostile" deep "$T/deep.onnx"
bad "messages nested more than 16 deep" --dataset fm --arch small --size 28 --pretrained "$T/deep.onnx"
"$URSA_BIN/onnx-hostile" concat "$T/concat.onnx"
bad "Concat concat24: 33554432 channels" --dataset fm --arch small --size 28 --pretrained "$T/concat.onnx"
head -3 "$FM/urls_bag.txt" >"$T/bag.txt"
head -8 "$FM/urls_coat.txt" >"$T/coat.txt"
"$URSA" ingest --dataset tiny "$T/bag.txt" "$T/coat.txt" >/dev/null 2>&1 || fail "ingest tiny"
bad 'class "bag" has 3 images; at least 5 are needed' --dataset tiny --arch small --size 28
head -6 "$FM/urls_bag.txt" >"$T/bag.txt"
"$URSA" ingest --dataset tiny2 "$T/bag.txt" "$T/coat.txt" >/dev/null 2>&1 || fail "ingest tiny2"
bad 'has no validation image' --dataset tiny2 --arch small --size 28 --valid-pct 0.01
"$URSA" train --dataset fm --arch small --stage 2:0 >"$T/usage.out" 2>&1 && fail "a zero LR was accepted"
grep -q 'bad stage "2:0"' "$T/usage.out" || fail "bad stage: $(cat "$T/usage.out")"
# models delete: out of the registry and its lists
"$URSA" models delete "$M" >"$T/mdel.out" 2>&1 || fail "models delete: $(cat "$T/mdel.out")"
"$URSA" models --dataset fm -o json | python3 -c 'import json, sys; m = [x["model"] for x in json.load(sys.stdin)["models"]]; sys.exit(sys.argv[1] in m)' "$M" ||
    fail "a deleted model is still listed"
"$URSA" export "$M" "$T/gone.onnx" >/dev/null 2>&1 && fail "a deleted model was exported"
"$URSA" models delete "$M" >"$T/mdel2.out" 2>&1 && fail "a model deleted twice"
grep -q "no model $M" "$T/mdel2.out" || fail "models delete again: $(cat "$T/mdel2.out")"
# ursa gc after the deletes: the deleted model's file stays while a job's
# spec names it as its pretrained body; the other model and its
# interpretation stay; nothing is left unreferenced after one pass
MKEY=$(sha256sum <"$T/m.onnx" | cut -c1-64)
"$URSA" gc --older-than-hours 0 -o json >"$T/gc.json" 2>"$T/gc.err" || fail "gc: $(cat "$T/gc.err")"
python3 -c 'import json, sys; g = json.load(open(sys.argv[1])); assert g["removed"] == g["unreferenced"] and g["jobs"] > 5 and g["models"] >= 1, g' \
    "$T/gc.json" || fail "gc: $(cat "$T/gc.json")"
[ -f "$URSA_STATE_DIR/blobs/${MKEY:0:2}/$MKEY" ] || fail "gc removed a pretrained body a job names"
"$URSA" export "$M2" "$T/ft2.onnx" >/dev/null || fail "export $M2 after gc"
cmp -s "$T/ft.onnx" "$T/ft2.onnx" || fail "$M2 changed"
"$URSA" interp "$M2" >/dev/null || fail "interp $M2 after gc"
"$URSA" gc --older-than-hours 0 --dry-run -o json >"$T/gc2.json" || fail "gc --dry-run"
python3 -c 'import json, sys; g = json.load(open(sys.argv[1])); assert g["unreferenced"] == 0, g' "$T/gc2.json" ||
    fail "garbage left: $(cat "$T/gc2.json")"
echo "test_trainer: ok"
