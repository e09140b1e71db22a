# `ursa demo --quick --seeds 1`, the README's main job reduced so CI runs
# every step of it on real daemons: the data served with its mess planted
# (wrong labels, images of no class), ingest, lr-find, training, interp
# with source URLs, the audit scored against what was planted, the
# suggestions accepted and scored, the retrain, test accuracy, the arms
# (noisy, cleaned, reviewed, true labels), the model served; summary.md,
# the plots and the model file written. A second run reuses the images,
# says so, and works on a dataset of its own.
. "$(dirname "$0")/lib.sh"
O="$T/demo-out"
"$URSA" demo --quick --seeds 1 --out "$O" >"$T/demo1.out" 2>&1 || fail "demo: $(tail -40 "$T/demo1.out")"
for f in model.onnx model-before-cleaning.onnx summary.md lr_find.svg confusion.svg urls.csv urls-true.csv planted.tsv suspects.tsv reviewed.csv; do
    [ -s "$O/$f" ] || fail "the demo wrote no $f: $(tail -20 "$T/demo1.out")"
done
# every step shown, in the lesson's order
grep '^== ' "$T/demo1.out" | cut -c4-14 >"$T/steps"
printf '%s\n' "ursa up: th" "the data: F" "ursa ingest" "ursa lr-fin" "ursa train:" "ursa interp" \
    "ursa audit:" "ursa clean " "ursa train " "the test se" "--seeds: th" "ursa-infere" "summary (al" |
    cmp -s - "$T/steps" ||
    fail "steps: $(cat "$T/steps")"
# the mess became the right states: 404s and the slow host failed, HTML and
# truncated files rejected, exact copies caught as duplicates
NU=$(($(wc -l <"$O/urls.csv") - 1))
grep -q "^\[#*\] $NU/$NU " "$T/demo1.out" || fail "ingest did not finish all $NU URLs"
awk -F'\t' 'NR > 1 {n[$1]++} END {exit !(n["404"] == 2 && n["html"] == 2 && n["truncated"] == 2 && n["slow"] == 2 && n["copy"] == 5 && n["near"] == 3 && n["no_class"] == 15)}' \
    "$O/planted.tsv" || fail "planted: $(cut -f1 "$O/planted.tsv" | sort | uniq -c)"
"$URSA" status --dataset fashion --counts >"$T/counts" || fail "status --counts"
awk -F'\t' '$1 ~ /^[^|]*\|[a-z]*$/ {split($1, k, "|"); n[k[2]] += $2} END {exit !(n["failed"] == 4 && n["rejected"] == 4 && n["duplicate"] >= 5 && n["verified"] + n["duplicate"] == 1500 + 15 + 5 + 3)}' \
    "$T/counts" || fail "final states: $(cat "$T/counts")"
grep -q "^dataset fashion: $NU URLs, $NU with a final state, 0 pending" "$O/summary.md" || fail "summary: $(head -12 "$O/summary.md")"
grep -q "suggested lr: " "$T/demo1.out" || fail "no lr_find suggestion"
grep -q "<polyline" "$O/lr_find.svg" || fail "no lr plot"
# the retrain is the same recipe on the cleaned data: two trainings alike
check_eq "trainings of the recipe" "$(grep -c '^\$ ursa train --dataset fashion --arch small .* --stage 2:1e-2$' "$T/demo1.out")" 2
# top losses with the URLs the user gave
grep -Eq "^http://127\.0\.0\.1:[0-9]+/ds/[a-z_-]+/[0-9]+\.jpg	" "$T/demo1.out" || fail "top losses without URLs"
# the audit against what was planted
NL=$(awk -F'\t' '$1 == "label"' "$O/planted.tsv" | wc -l)
L=$(sed -n "s/^  label issues: \([0-9]*\) found, \([0-9]*\) of them planted wrong labels (of \([0-9]*\) planted.*/\1 \2 \3/p" "$T/demo1.out")
read -r FOUND TRUE PLANTED <<<"$L"
check_eq "planted label flips" "$PLANTED" "$NL"
[ "$TRUE" -le "$FOUND" ] && [ "$TRUE" -le "$PLANTED" ] || fail "audit line: $L"
awk -F'\t' 'NR > 1 && $6 == "label"' "$O/suspects.tsv" | wc -l | grep -qx "$FOUND" || fail "suspects.tsv disagrees with $FOUND label issues"
grep -Eq "^[0-9]+ edits sent: " "$T/demo1.out" || fail "no edits from --accept-suggestions"
# what the cleaning did, scored against the dataset as the verifier left it:
# before, every planted wrong label and image of no class is in it
NJ=$(awk -F'\t' '$1 == "no_class"' "$O/planted.tsv" | wc -l)
W=$(sed -n 's/^wrong labels (and images of no class) in the dataset: \([0-9]*\) before, \([0-9]*\) after$/\1 \2/p' "$T/demo1.out")
read -r WB WA <<<"$W"
check_eq "wrong labels before cleaning" "$WB" "$((NL + NJ))"
[ "$WA" -lt "$WB" ] || fail "the cleaning left $WA of $WB wrong labels"
# accuracy before and after, from ursa predict on the test images: better than chance
A1=$(sed -n 's/^test accuracy on 1000 images: \([0-9.]*\)% before cleaning, \([0-9.]*\)% after (.* points)$/\1 \2/p' "$T/demo1.out")
read -r BEFORE AFTER <<<"$A1"
awk -v a="$BEFORE" -v b="$AFTER" 'BEGIN {exit !(a > 40 && b > 40)}' || fail "test accuracy: $A1"
grep -q "| \`.*\`, after cleaning | $AFTER% |" "$O/summary.md" || fail "summary: $(cat "$O/summary.md")"
# the arms: four versions of the data, the reviewer's decisions applied to
# its own dataset, which then holds fewer wrong labels than the noisy one
for a in noisy cleaned reviewed true; do
    grep -Eq "^\| $a: .* \| [0-9.]+% ± [0-9.]+ \| [0-9. ]+ \|$" "$O/summary.md" || fail "no $a arm: $(cat "$O/summary.md")"
done
grep -q "^Share of that gap recovered\|The noise costs .* points" "$O/summary.md" || fail "no gap line"
head -1 "$O/reviewed.csv" | grep -qx "name,label" || fail "reviewed.csv: $(head -2 "$O/reviewed.csv")"
"$URSA" status --dataset fashion-reviewed --counts >/dev/null || fail "no reviewed dataset"
R=$(sed -n 's/.*(\([0-9]*\) relabelled, \([0-9]*\) deleted); wrong labels left: \([0-9]*\), against \([0-9]*\) after the automatic.*/\1 \2 \3/p' "$O/summary.md")
read -r RF RD RW <<<"$R"
[ -n "$RW" ] && [ "$RW" -lt "$WB" ] && [ "$RF" -gt 0 ] || fail "the reviewer: $R (before: $WB)"
# the exported model is the one served, and it answers
"$URSA" predict --model "$O/model.onnx" "$O"/test/bag/*.jpg >/dev/null || fail "predict with the demo's model"
check_eq "classify answers" "$(grep -c '"predictions"' "$T/demo1.out")" 4
grep -q "^| \*\*all\*\* | \*\*[0-9.]*\*\* |" "$O/summary.md" || fail "no total time"
log "quick demo: test accuracy $BEFORE% -> $AFTER%, label issues $FOUND found, $TRUE of $PLANTED planted"

# ---- again: the images reused, a new dataset ----
# (in the plain pass only: under the sanitizers, ops/test.sh's second pass,
# the demo's code has run once above and a second run costs minutes)
if [ -n "${ASAN_OPTIONS:-}" ]; then
    echo "test_demo: ok (the second run is left to the plain pass)"
    exit 0
fi
# another --out holding the same images (linked): the images are reused, and
# the dataset is named from the stack, not from what --out remembers
O2="$T/demo-out-2"
mkdir -p "$O2"
cp -al "$O/www" "$O/test" "$O2/"
"$URSA" demo --quick --out "$O2" >"$T/demo2.out" 2>&1 || fail "second demo: $(tail -40 "$T/demo2.out")"
grep -q "reusing the 1500 training images" "$T/demo2.out" || fail "the second run did not reuse the images"
grep -q "the dataset is fashion-2" "$T/demo2.out" || fail "the second run's dataset: $(grep -m3 dataset "$T/demo2.out")"
# its images verified under it, not taken for duplicates of the first run's
"$URSA" status --dataset fashion-2 --counts >"$T/counts2" || fail "status --counts fashion-2"
awk -F'\t' '$1 ~ /^[^|]*\|verified$/ {n += $2} END {exit !(n >= 1490)}' "$T/counts2" ||
    fail "fashion-2's states: $(cat "$T/counts2")"
grep -q "^test accuracy on 1000 images" "$T/demo2.out" || fail "the second run did not finish"
echo "test_demo: ok"
