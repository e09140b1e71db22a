# The pipeline with its blobs in a real S3 object store (a Ceph RADOS
# Gateway, ops/s3-server.sh) and no blob directory at all: ingest with
# failures planted, the gateway down mid-ingest (backpressure and DEGRADED,
# nothing lost, recovery on its own), an object changed behind ursa's back
# (refused as corrupt, named, never trained on), a trainer SIGKILLed
# mid-job that resumes from a checkpoint kept in the bucket, and the model
# read back from the bucket.
. "$(dirname "$0")/lib.sh"
start_s3_server it
export URSA_TRAINER_LEASE_MS=3000 # a killed worker's lease lapses in 3 s
s3get() { # s3get OBJECT [curl args]: a signed GET of s3://bucket/OBJECT
    local o=$1
    shift
    curl -sf --max-time 30 --aws-sigv4 aws:amz:us-east-1:s3 --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@" "$S3_ENDPOINT/$S3_BUCKET/$o"
}

# bad settings: one clear line, and no daemon is started
AWS_SECRET_ACCESS_KEY=wrong "$URSA" up >"$T/up-bad.log" 2>&1 && fail "ursa up with a wrong secret"
grep -q "access denied" "$T/up-bad.log" || fail "wrong secret: $(cat "$T/up-bad.log")"
URSA_BLOB_URL=s3://no-such-bucket "$URSA" up >"$T/up-bad2.log" 2>&1 && fail "ursa up, no bucket"
grep -q "no such bucket" "$T/up-bad2.log" || fail "missing bucket: $(cat "$T/up-bad2.log")"
URSA_BLOB_URL=s3://no-such-bucket "$URSA_BIN/ursa-crawler" >"$T/crawler-bad.log" 2>&1 &&
    fail "ursa-crawler with a missing bucket"
check_eq "crawler's lines for a missing bucket" "$(wc -l <"$T/crawler-bad.log")" 1

start_fault_server
start_fmnist_server 600
stack_up
printf '%s\n' "$FS/img/good.jpg" "$FS/404" "$FS/html/page.jpg" "$FS/truncated/good.jpg" \
    "$FS/img/big.jpg" >"$T/urls_mess.txt"
"$URSA" ingest --dataset fm "$FM"/urls_*.txt >"$T/ingest.out" 2>&1 ||
    fail "ingest: $(cat "$T/ingest.out")"
"$URSA" ingest --dataset mess "$T/urls_mess.txt" >"$T/ingest-mess.out" 2>&1 ||
    fail "ingest: $(cat "$T/ingest-mess.out")"
wait_for 60 "every URL final" all_final fm
wait_for 30 "every URL of mess final" all_final mess
check_eq "verified" "$(state_sum fm verified)" 600
check_eq "mess verified" "$(state_sum mess verified)" 2
check_eq "mess failed" "$(state_sum mess failed)" 1
check_eq "mess rejected" "$(state_sum mess rejected)" 2
[ -z "$(find "$URSA_STATE_DIR" -path '*blobs*' -type f 2>/dev/null)" ] ||
    fail "blobs written to a local directory: $(find "$URSA_STATE_DIR" -path '*blobs*' -type f | head -3)"
grep -q 'blobs="s3://' "$URSA_STATE_DIR/log/crawler.log" || fail "crawler not on S3"

# the gateway down for a while mid-ingest: DEGRADED, then it goes on alone
seq 0 199 | sed "s|^|$FS/gen/|; s|\$|.jpg|" >"$T/urls_gen.txt"
"$URSA" ingest --dataset gen --no-wait "$T/urls_gen.txt" >"$T/ingest2.out" 2>&1 ||
    fail "ingest 2: $(cat "$T/ingest2.out")"
"$S3SH" stop-gateway "$T/s3" >/dev/null 2>&1 || fail "stop-gateway"
# (status exits 1 while a daemon is degraded: no pipe under pipefail)
degraded() { "$URSA" status >"$T/st.log" 2>&1; grep -q 'DEGRADED: blob store s3://' "$T/st.log"; }
T0=$SECONDS
wait_for 30 "ursa status to say DEGRADED" degraded
log "$(grep DEGRADED "$T/st.log")"
# the gateway stays away 20 s in all, is started, and SIGKILLed again at once
sleep $((20 - (SECONDS - T0) > 0 ? 20 - (SECONDS - T0) : 0))
"$S3SH" start-gateway "$T/s3" >/dev/null 2>&1 || fail "start-gateway"
"$S3SH" stop-gateway "$T/s3" >/dev/null 2>&1 || fail "stop-gateway, again"
"$S3SH" start-gateway "$T/s3" >/dev/null 2>&1 || fail "start-gateway, again"
wait_for 90 "every URL of gen final after the outage" all_final gen
check_eq "gen verified" "$(state_sum gen verified)" 200
check_eq "gen total" "$(count_of gen total)" 200
check_eq "negative counters" "$(negative_counters gen)" 0
dups=$(grep 'GET /gen/' "$T/fs.log" | sort | uniq -d | wc -l)
check_eq "URLs downloaded twice" "$dups" 0
healthy() { "$URSA" status >"$T/st.log" 2>&1 && ! grep -q DEGRADED "$T/st.log"; }
wait_for 30 "ursa status healthy again" healthy

# one image's object changed behind ursa's back: refused and named
"$URSA" export-dataset --dataset fm "$T/export" >"$T/export.out" 2>&1 ||
    fail "export-dataset from S3: $(cat "$T/export.out")"
n_exported=$(find "$T/export" -name '*.jpg' | wc -l)
check_eq "images exported from the bucket" "$n_exported" 600
VICTIM=$(find "$T/export" -name '*.jpg' -print -quit)
VKEY=$(sha256sum <"$VICTIM" | cut -c1-64)
printf 'not the image' | curl -sf --max-time 30 -X PUT --data-binary @- --aws-sigv4 aws:amz:us-east-1:s3 \
    --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
    "$S3_ENDPOINT/$S3_BUCKET/it/${VKEY:0:2}/$VKEY" >/dev/null || fail "overwriting an object"

# training: SIGKILL mid-job, resumed from the checkpoint in the bucket
"$URSA" train --dataset fm --arch small --size 28 --bs 16 --stage 3:1e-2 --stage 3:1e-3:1e-2 \
    --no-wait >"$T/train.out" || fail "submit"
J=$(job_id_of "$T/train.out")
rows_at_least() { [ "$(job_rows "$J")" -ge "$1" ] || [ "$(job_state "$J")" = failed ]; }
wait_for 300 "two epochs" rows_at_least 2
check_eq "state after two epochs" "$(job_state "$J")" running
PID=$(cat "$URSA_STATE_DIR/run/trainer.pid")
kill -9 "$PID"
wait_for 10 "the trainer to die" dead "$PID"
# (read after the kill: a running job replaces its checkpoint every epoch)
CK=$(job_field "$J" "ckpt:$J.ckpt")
[ ${#CK} = 64 ] || fail "no checkpoint blob recorded in the job: '$CK'"
s3get "it/${CK:0:2}/$CK" -o /dev/null || fail "checkpoint $CK not in the bucket"
[ "$(job_rows "$J")" -lt 6 ] || fail "the job ended before the kill; make it longer"
"$URSA" up >"$T/up2.log" 2>&1 || fail "ursa up after the kill: $(cat "$T/up2.log")"
done_or_failed() { case "$(job_state "$J")" in done | failed | cancelled) return 0 ;; esac; return 1; }
wait_for 300 "the job to end" done_or_failed
check_eq "state" "$(job_state "$J")" done
check_eq "rows" "$(job_rows "$J")" 6
check_eq "resumes" "$(job_field "$J" resumes)" 1
check_eq "checkpoint field after the job" "$(job_field "$J" "ckpt:$J.ckpt")" ""
s3get "it/${CK:0:2}/$CK" -o /dev/null && fail "a superseded checkpoint is still in the bucket"
grep -q "event=blob_corrupt blob=s3://$S3_BUCKET/it/${VKEY:0:2}/$VKEY" \
    "$URSA_STATE_DIR/log/trainer.log" || fail "the trainer did not name the corrupt object"

# the model, read back from the bucket, predicts like the trainer said
M=$(job_field "$J" model)
"$URSA" export "$M" "$T/m.onnx" >"$T/export-m.out" || fail "export of the model"
[ "$(sha256sum <"$T/m.onnx" | cut -c1-64)" = "$(rcli HGET "ursa:model:$M" blob | tr -d '\n')" ] ||
    fail "exported file is not the model's blob"
find "$T/export" -name '*.jpg' | sort >"$T/all.txt"
sed -n 1,50p "$T/all.txt" | xargs "$URSA" predict --model "$T/m.onnx" >"$T/pred.tsv" \
    2>/dev/null || fail "predict"
check_eq "predictions" "$(wc -l <"$T/pred.tsv")" 50
echo "test_s3_pipeline: ok"
