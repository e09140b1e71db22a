# ONNX out and in: a model ursa exports (resnet18 body + fast.ai head, class
# names needing JSON escapes) gives onnxruntime the same probabilities as
# `ursa predict` on the same preprocessed input; its metadata (classes in
# order, input size, mean/std) survives the trip; `ursa predict` output
# formats, a model without class names, and bad input get clear errors.
. "$(dirname "$0")/lib.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PEERS="$ROOT/ops/peers"
bash "$PEERS/install.sh" --ort-only >"$T/peers-install.log" 2>&1 || fail "cannot install onnxruntime-node: $(tail -5 "$T/peers-install.log")"
DEMO="$URSA_BIN/nn-export-demo"

"$DEMO" "$T/demo.onnx" 2>/dev/null || fail "export failed"
"$DEMO" "$T/plain.onnx" --no-classes 2>/dev/null || fail "export without classes failed"
for i in 1 2 3; do
    /usr/bin/convert -size $((120 + 40 * i))x$((90 + 30 * i)) "plasma:fractal" -seed $i "$T/img$i.jpg"
done
/usr/bin/convert -size 80x200 gradient:navy-gold "$T/img4.png"
IMGS="$T/img1.jpg $T/img2.jpg $T/img3.jpg $T/img4.png"

# ursa and onnxruntime on the same tensor
"$URSA" predict --model "$T/demo.onnx" --json --top 0 --save-input "$T/in.f32" $IMGS \
    >"$T/ursa.json" 2>"$T/predict.err" || fail "predict failed: $(cat "$T/predict.err")"
(cd "$PEERS" && node ort_run.js --model "$T/demo.onnx" --input "$T/in.f32" --shape 4,3,64,64) \
    >"$T/ort.json" 2>"$T/ort.err" || fail "onnxruntime failed: $(cat "$T/ort.err")"
python3 - "$T/ursa.json" "$T/ort.json" <<'EOF' || fail "ursa and onnxruntime disagree"
import json, sys
ursa = [json.loads(l) for l in open(sys.argv[1])]
ort = json.loads(open(sys.argv[2]).readline())
classes = ["black bear", 'grizzly "brown"', "teddy\\bear"]
assert ort["dims"] == [4, 3], ort["dims"]
worst = 0
for i, row in enumerate(ursa):
    assert len(row["predictions"]) == 3, row
    probs = [p for _, p in row["predictions"]]
    assert probs == sorted(probs, reverse=True), "not sorted"
    assert sorted(l for l, _ in row["predictions"]) == sorted(classes), row
    assert abs(sum(probs) - 1) < 1e-4, sum(probs)
    got = dict(row["predictions"])
    for j, c in enumerate(classes):
        worst = max(worst, abs(got[c] - ort["data"][i * 3 + j]))
print("max |ursa - onnxruntime| =", worst)
assert worst < 1e-5, worst
EOF
log "$(python3 -c "
import json
for l in open('$T/ursa.json'): r = json.loads(l); print(r['file'].split('/')[-1], r['predictions'][0])")"

# plain output: IMAGE<TAB>LABEL<TAB>PROB, and K pairs with --top K
"$URSA" predict --model "$T/demo.onnx" $IMGS >"$T/plain.tsv" 2>/dev/null || fail "plain predict failed"
check_eq "lines" "$(wc -l <"$T/plain.tsv")" 4
awk -F'\t' 'NF != 3 || $3 !~ /^0\.[0-9]+$|^1\.0+$/ {exit 1}' "$T/plain.tsv" || fail "bad plain line: $(head -2 "$T/plain.tsv")"
top1=$(python3 -c "import json; print(json.loads(open('$T/ursa.json').readline())['predictions'][0][0])")
check_eq "top class agrees with --json" "$(head -1 "$T/plain.tsv" | cut -f2)" "$top1"
"$URSA" predict --model "$T/demo.onnx" --top 2 "$T/img1.jpg" 2>/dev/null | awk -F'\t' 'NF != 5 {exit 1}' || fail "--top 2 not 5 columns"

# a model without class names labels by index
"$URSA" predict --model "$T/plain.onnx" --json --top 0 "$T/img1.jpg" 2>/dev/null >"$T/plain.json"
python3 -c "
import json; r = json.loads(open('$T/plain.json').readline())
assert sorted(l for l, _ in r['predictions']) == ['0', '1', '2'], r" || fail "index labels: $(cat "$T/plain.json")"

# bad input: usage errors 2, a bad model 1, a bad image reported and skipped
set +e
"$URSA" predict "$T/img1.jpg" >/dev/null 2>"$T/e1"; rc=$?
check_eq "no --model" "$rc" 2
grep -q -- "--model" "$T/e1" || fail "no hint about --model"
"$URSA" predict --model "$T/demo.onnx" >/dev/null 2>&1; rc=$?
check_eq "no images" "$rc" 2
head -c 5000 /dev/urandom >"$T/junk.onnx"
"$URSA" predict --model "$T/junk.onnx" "$T/img1.jpg" >/dev/null 2>"$T/e2"; rc=$?
check_eq "junk model" "$rc" 1
grep -q "not an ONNX model" "$T/e2" || fail "junk model message: $(cat "$T/e2")"
"$URSA" predict --model "$T/missing.onnx" "$T/img1.jpg" >/dev/null 2>"$T/e3"; rc=$?
check_eq "missing model" "$rc" 1
grep -q "missing.onnx" "$T/e3" || fail "missing model message: $(cat "$T/e3")"
printf 'not an image' >"$T/bad.jpg"
"$URSA" predict --model "$T/demo.onnx" "$T/img1.jpg" "$T/bad.jpg" "$T/img2.jpg" >"$T/mixed.tsv" 2>"$T/e4"; rc=$?
check_eq "one bad image" "$rc" 1
check_eq "good images still classified" "$(wc -l <"$T/mixed.tsv")" 2
grep -q "bad.jpg: not_an_image" "$T/e4" || fail "bad image message: $(cat "$T/e4")"
set -e

# bench-model ends with the agreed line
"$URSA" bench-model --model "$T/demo.onnx" --iters 3 2>/dev/null | tail -1 \
    | grep -Eq '^latency_ms=[0-9.]+ throughput_ips=[0-9.]+ isa=(avx512|avx2|generic)$' ||
    fail "bench-model's last line"
echo "test_onnx: ok"
