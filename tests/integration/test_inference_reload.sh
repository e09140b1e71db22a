# ursa-inference on the stack: it starts with no model (not ready, 503),
# loads the first one published, swaps in the next one under load with zero
# failed requests, can be pinned to an older model and unpinned; bulk
# classification through Kafka answers every URL and answers a repeated
# list from the stored results.
. "$(dirname "$0")/lib.sh"
start_fmnist_server 300
export URSA_INFERENCE_PORT=0 URSA_INFERENCE_ADMIN_TOKEN=tok
# downloads may hang 15 s (the slow and late URLs below)
export URSA_FETCH_TIMEOUT_MS=15000 URSA_FETCH_LOW_SPEED_SECS=15
stack_up
grep -q "started inference" "$T/up.log" || fail "ursa up did not start ursa-inference"
wait_for 10 "the port file" test -s "$URSA_STATE_DIR/run/inference.port"
B="http://127.0.0.1:$(cat "$URSA_STATE_DIR/run/inference.port")"
curl -sf "$B/healthz" >/dev/null || fail "healthz"
check_eq "ready without a model" "$(curl -s -o /dev/null -w '%{http_code}' "$B/readyz")" 503
BAGS=("$FM"/bag/*.jpg) # (not ls | head: a SIGPIPE under pipefail)
IMG1=${BAGS[0]}
check_eq "classify without a model" \
    "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$IMG1" "$B/v1/classify")" 503

"$URSA" ingest --dataset fm "$FM"/urls_*.txt >"$T/ingest.out" 2>&1 || fail "ingest: $(cat "$T/ingest.out")"
train() { # SEED: trains a small model, prints its id
    "$URSA" train --dataset fm --arch small --size 28 --bs 32 --seed "$1" --stage 2:1e-2 \
        >"$T/train$1.out" 2>&1 || fail "train: $(cat "$T/train$1.out")"
    sed -n 's/^model \(fm-j[0-9a-f]*\):.*/\1/p' "$T/train$1.out"
}
serving() { curl -sf "$B/v1/models" | python3 -c 'import json,sys; s = json.load(sys.stdin)["serving"]; print(s["id"] if s else "")'; }
serving_is() { [ "$(serving)" = "$1" ]; }
M1=$(train 1)
wait_for 30 "the first model served" serving_is "$M1"
curl -sf "$B/readyz" >/dev/null || fail "not ready with a model"

# the next model swaps in while requests keep coming: none fails, and the
# answers move from the first model to the second
load() {
    while [ ! -e "$T/stop" ]; do
        curl -s -w '\t%{http_code}' -X POST --data-binary @"$IMG1" "$B/v1/classify" | tr -d '\n'
        echo
    done
}
LOADERS=()
for i in 1 2 3 4 5 6; do
    load >"$T/load$i.out" 2>&1 &
    LOADERS+=("$!")
    PIDS+=("$!")
done
sleep 1
M2=$(train 2)
wait_for 30 "the second model served" serving_is "$M2"
sleep 2
touch "$T/stop"
for p in "${LOADERS[@]}"; do wait "$p"; done
cat "$T"/load*.out >"$T/load.all"
TOTAL=$(wc -l <"$T/load.all")
check_eq "failed requests during the reload" "$(awk -F'\t' '$2 != 200' "$T/load.all" | wc -l)" 0
ON1=$(grep -c "\"model\": \"$M1\"" "$T/load.all")
ON2=$(grep -c "\"model\": \"$M2\"" "$T/load.all")
[ "$ON1" -gt 0 ] && [ "$ON2" -gt 0 ] || fail "the load did not span the reload: $ON1 on $M1, $ON2 on $M2"
check_eq "answers by a model" "$((ON1 + ON2))" "$TOTAL"
log "reload under load: $TOTAL requests, $ON1 on the first model then $ON2 on the second, none failed"
metrics_to "$B/metrics" "$T/metrics" || fail "no /metrics"
grep -q '^ursa_inference_reloads_total 2$' "$T/metrics" || fail "reloads: $(grep reload "$T/metrics")"

# pin the older model, then follow the newest again
code() { curl -s -o "$T/body" -w '%{http_code}' "$@"; }
check_eq "pin without token" "$(code -X POST "$B/v1/admin/pin?model=$M1")" 403
check_eq "pin" "$(code -X POST -H 'Authorization: Bearer tok' "$B/v1/admin/pin?model=$M1")" 200
serving_is "$M1" || fail "pinned model not served: $(serving)"
check_eq "pin unknown" "$(code -X POST -H 'Authorization: Bearer tok' "$B/v1/admin/pin?model=nope")" 404
serving_is "$M1" || fail "a failed pin changed the model"
check_eq "unpin" "$(code -X POST -H 'Authorization: Bearer tok' "$B/v1/admin/pin?model=")" 200
serving_is "$M2" || fail "unpinned server not back on the newest: $(serving)"
curl -sf "$B/v1/models" | grep -q "\"$M1\"" || fail "published list lacks $M1"
# Redis stalled: /v1/models answers at once, with the list it read last
# and its age
kill -STOP "$(cat "$URSA_STATE_DIR/run/redis.pid")"
on_cleanup "kill -CONT $(cat "$URSA_STATE_DIR/run/redis.pid")"
ms=$(curl -s -m 20 -o "$T/models-stalled.json" -w '%{time_total}' "$B/v1/models" | awk '{printf "%d", $1 * 1000}')
kill -CONT "$(cat "$URSA_STATE_DIR/run/redis.pid")"
log "GET /v1/models with Redis stalled: $ms ms"
[ "$ms" -lt 5000 ] || fail "GET /v1/models took $ms ms with Redis stalled"
grep -q "\"$M1\"" "$T/models-stalled.json" || fail "no list with Redis stalled: $(cat "$T/models-stalled.json")"
grep -q '"published_error": "Redis does not answer"' "$T/models-stalled.json" ||
    fail "no word of the stall: $(cat "$T/models-stalled.json")"

# 80 classify-url requests to a URL that sends a byte a second: this
# address's 8 downloads in flight, the rest refused 429; the model list
# and the admin calls, on threads of their own, still answer at once
start_fault_server
for i in $(seq 80); do
    curl -s -o /dev/null -m 30 "$B/v1/classify-url?url=$FS/slow?$i" &
    PIDS+=("$!")
done
at_server() { [ "$(grep -c '^GET /slow' "$T/fs.log")" -ge 8 ]; }
wait_for 10 "the slow downloads at the fault server" at_server
check_eq "GET /v1/models behind 80 hanging downloads" \
    "$(curl -s -o "$T/models-busy.json" -w '%{http_code}' -m 5 "$B/v1/models")" 200
grep -q "\"$M1\"" "$T/models-busy.json" || fail "models: $(cat "$T/models-busy.json")"
check_eq "admin reload behind them" \
    "$(curl -s -o /dev/null -w '%{http_code}' -m 10 -X POST -H 'Authorization: Bearer tok' "$B/v1/admin/reload")" 200

# bulk: every URL answered once, a repeated list answered from Redis
head -15 "$FM/urls_bag.txt" >"$T/bulk.txt"
head -15 "$FM/urls_boot.txt" >>"$T/bulk.txt"
echo "$(head -1 "$FM/urls_bag.txt" | sed 's|/ds/bag/.*|/ds/bag/missing.jpg|')" >>"$T/bulk.txt"
"$URSA" classify --dataset fm --out "$T/res1.jsonl" --wait-timeout-s 120 "$T/bulk.txt" \
    >"$T/classify.out" 2>&1 || fail "classify: $(cat "$T/classify.out")"
grep -q "31 results written" "$T/classify.out" || fail "classify: $(cat "$T/classify.out")"
check_eq "errors" "$(grep -c '"error"' "$T/res1.jsonl")" 1
grep '"error"' "$T/res1.jsonl" | grep -q "http_404" || fail "404 reason: $(grep error "$T/res1.jsonl")"
check_eq "answers with the served model" "$(grep -c "\"model\": \"$M2\", \"predictions\"" "$T/res1.jsonl")" 30
# again, to stdout (--out -), the summary on stderr
"$URSA" classify --dataset fm --out - --wait-timeout-s 60 "$T/bulk.txt" >"$T/res2.jsonl" \
    2>"$T/classify2.err" || fail "classify again: $(cat "$T/classify2.err")"
grep -q "31 results written to stdout" "$T/classify2.err" || fail "summary: $(cat "$T/classify2.err")"
[ -e ./- ] && fail "--out - wrote a file named -"
cmp -s "$T/res1.jsonl" "$T/res2.jsonl" || fail "the repeated list got other answers"
check_eq "stored results" "$(rcli KEYS 'ursa:classify:*' | wc -l)" 31
wait_for 20 "results on the topic" bash -c \
    "[ \$(kcat -b $BOOTSTRAP -C -t ursa.classify.results -e -q -f '%k\n' | sort -u | wc -l) -eq 31 ]"
# ten URLs answered 9 s late, then a good one: the good one's answer does
# not wait for theirs (bulk downloads them all at once)
for i in $(seq 10); do echo "$FS/delay/9000/img/good.jpg?late$i"; done >"$T/late.txt"
sed -n 20p "$FM/urls_bag.txt" >>"$T/late.txt"
"$URSA" classify --dataset fm --out "$T/res3.jsonl" --wait-timeout-s 60 "$T/late.txt" \
    >"$T/classify3.out" 2>&1 &
CL=$!
t0=$SECONDS
answers() { [ "$(rcli KEYS 'ursa:classify:*' | wc -l)" -ge "$1" ]; }
wait_for 8 "the good URL's answer behind ten late ones" answers 32
log "the good URL answered after $((SECONDS - t0)) s; stored: $(rcli KEYS 'ursa:classify:*' | wc -l)"
check_eq "answers before the late ones" "$(rcli KEYS 'ursa:classify:*' | wc -l)" 32
wait "$CL" || fail "classify the late list: $(cat "$T/classify3.out")"
check_eq "late list answered" "$(grep -c '"predictions"' "$T/res3.jsonl")" 11
"$URSA" status >"$T/status.out" || true
grep -Eq '^inference +[0-9]+ +running +ok' "$T/status.out" || fail "status: $(cat "$T/status.out")"
echo "test_inference_reload: ok"
