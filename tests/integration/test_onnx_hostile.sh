# Hostile ONNX files (issue 27), written by tests/tools/onnx_gen.c:
#  - 33 Concats wrapping a channel count past 2^32 (1.7 KB; overflowed the
#    heap), graphs nested 5,000 deep in node attributes and types nested
#    in types (stack overflow in protobuf-c), 80,000 nodes (25 s of
#    quadratic import), 180 unread convolutions (2.3 GB), one value of
#    784 MB an image;
#  - `ursa predict` refuses each with an error naming the problem and
#    exits 1, never by a signal, in seconds and without the memory;
#  - ursa-inference's admin reload refuses each (503 with the reason) and
#    keeps serving the model it had; a good file reloads after them.
. "$(dirname "$0")/lib.sh"
GEN="$URSA_BIN/onnx-hostile"
"$URSA_BIN/nn-export-demo" "$T/demo.onnx" 2>/dev/null || fail "export failed"
/usr/bin/convert -size 160x120 "plasma:fractal" -seed 1 "$T/img.jpg"
for k in concat deep deep-type wide fanout big-value; do
    "$GEN" "$k" "$T/$k.onnx" || fail "onnx-hostile $k"
done
log "files: $(cd "$T" && ls -l concat.onnx deep.onnx deep-type.onnx wide.onnx fanout.onnx big-value.onnx | awk '{printf "%s %s B, ", $9, $5}')"

# predict: exit 1 with the reason, no crash (a signal is 128 + n)
refused() { # FILE EXPECTED-TEXT [FLAGS...]
    local f=$1 want=$2 rc=0
    shift 2
    /usr/bin/time -f '%e s %M KB' -o "$T/time" "$URSA" predict "$@" --model "$T/$f" "$T/img.jpg" \
        >"$T/pred.out" 2>"$T/pred.err" || rc=$?
    check_eq "predict $f exit status ($(tail -1 "$T/pred.err"))" "$rc" 1
    grep -q -- "$want" "$T/pred.err" || fail "predict $f: want \"$want\": $(grep -v '^ts=' "$T/pred.err")"
    log "predict $f: $(grep -v '^ts=' "$T/pred.err" | tail -1) [$(tail -1 "$T/time")]"
}
refused concat.onnx "Concat concat24: 33554432 channels, more than 16777216"
refused deep.onnx "messages nested more than 16 deep"
refused deep-type.onnx "messages nested more than 16 deep"
refused wide.onnx "the graph has 80001 nodes, more than 20000"
refused big-value.onnx "node wide (conv): its output (784 MB).*over nn.max-exec-mb (256)" --nn.max-exec-mb 256
URSA_NN_MAX_MODEL_MB=1 refused fanout.onnx "Conv conv[0-9]*: its parameters take the model to .* over nn.max-model-mb (1)"
# the unread convolutions are dropped: an answer, quickly, in little memory
/usr/bin/time -f '%e %M' -o "$T/time" "$URSA" predict --model "$T/fanout.onnx" "$T/img.jpg" \
    >"$T/pred.out" 2>"$T/pred.err" || fail "predict fanout: $(grep -v '^ts=' "$T/pred.err")"
read -r secs kb <"$T/time"
[ "$kb" -lt 300000 ] || fail "predict fanout.onnx peaked at $kb KB"
log "predict fanout.onnx: $(cat "$T/pred.out") in $secs s, $kb KB"

# ursa-inference: each hostile file swapped in and reloaded is refused,
# the server keeps answering with the demo model
printf 'tok' >"$T/token"
chmod 600 "$T/token"
cp "$T/demo.onnx" "$T/model.onnx"
"$URSA_BIN/ursa-inference" --inference.model "$T/model.onnx" --inference.port 0 \
    --inference.port-file "$T/inf.port" --inference.admin-token-file "$T/token" \
    --nn.max-exec-mb 1024 >"$T/inference.log" 2>&1 &
INF=$!
PIDS+=("$INF")
wait_for 10 "the server" test -s "$T/inf.port"
B="http://127.0.0.1:$(cat "$T/inf.port")"
wait_for 10 "readyz" curl -sf "$B/readyz"
code() { curl -s -o "$T/body" -w '%{http_code}' "$@"; }
classify_ok() { # the demo model answers (its class names)
    check_eq "classify $1" "$(code -X POST --data-binary @"$T/img.jpg" "$B/v1/classify")" 200
    grep -q 'grizzly' "$T/body" || fail "classify $1: not the demo model: $(cat "$T/body")"
}
classify_ok "before"
reload_refused() { # FILE EXPECTED-TEXT
    cp "$T/$1" "$T/model.onnx"
    check_eq "reload $1" "$(code -X POST -H 'Authorization: Bearer tok' "$B/v1/admin/reload")" 503
    grep -q -- "$2" "$T/body" || fail "reload $1: want \"$2\": $(cat "$T/body")"
    cp "$T/body" "$T/reload.body"
    dead "$INF" && fail "ursa-inference died reloading $1"
    classify_ok "after $1"
    log "reload $1: 503 $(head -c 200 "$T/reload.body"), still serving"
}
reload_refused concat.onnx "33554432 channels"
reload_refused deep.onnx "nested more than 16 deep"
reload_refused deep-type.onnx "nested more than 16 deep"
reload_refused wide.onnx "more than 20000"
reload_refused big-value.onnx "node wide (conv).*over nn.max-exec-mb (1024)"
metrics_to "$B/metrics" "$T/metrics" || fail "no /metrics"
grep -q '^ursa_inference_reload_failures_total 5$' "$T/metrics" ||
    fail "reload failures: $(curl -s "$B/metrics" | grep reload)"
cp "$T/demo.onnx" "$T/model.onnx"
check_eq "reload the demo again" "$(code -X POST -H 'Authorization: Bearer tok' "$B/v1/admin/reload")" 200
classify_ok "at the end"
echo "test_onnx_hostile: ok"
