# ursa verify on the fault images made by tests/fixtures/make_images.sh:
# every verdict as expected, exit codes 0/1/2, and the normalised output
# looks like its source (CMYK, palette, 16-bit, alpha, progressive, WebP and
# EXIF rotation all end as the same upright RGB picture).
. "$(dirname "$0")/lib.sh"
# the CLI as scripts drive it: --version; an unknown flag named as one
# (never "needs a value"), with the nearest if one is near
"$URSA" --version | grep -Eq '^ursa [0-9]+\.[0-9]+\.[0-9]+' || fail "ursa --version: $("$URSA" --version 2>&1)"
"$URSA_BIN/ursa-crawler" --version | grep -Eq '^ursa-crawler [0-9]' || fail "ursa-crawler --version"
"$URSA" ingest --dataset x --bogus a.txt >"$T/bogus.out" 2>&1 && fail "an unknown flag was accepted"
grep -q '^ursa ingest: unknown flag --bogus (see --help)' "$T/bogus.out" || fail "unknown flag: $(cat "$T/bogus.out")"
"$URSA" ingest --dataset x --no-wiat a.txt >"$T/typo.out" 2>&1 && fail "a misspelt flag was accepted"
grep -q 'unknown flag --no-wiat (did you mean --no-wait?)' "$T/typo.out" || fail "typo: $(cat "$T/typo.out")"
# a command's own flags first in --help, then the shared ones by section
"$URSA" ingest --help >"$T/help.out"
check_eq "the first flag of ingest --help" "$(grep -m1 '^  --' "$T/help.out")" "  --dataset STR"
grep -q '^Shared, redis\.\*:$' "$T/help.out" || fail "no redis section: $(cat "$T/help.out")"
[ "$(grep -n '^  --allow-empty' "$T/help.out" | cut -d: -f1)" -lt "$(grep -n '^  --redis.url' "$T/help.out" | cut -d: -f1)" ] ||
    fail "ingest's own flags are not first"
# the engine's start-up lines (event=blas, nn_isa) only with -v
"$URSA_BIN/nn-export-demo" "$T/demo.onnx" 2>/dev/null || fail "export"
/usr/bin/convert -size 64x64 xc:red "$T/red.jpg"
env -u URSA_LOG_LEVEL "$URSA" predict --model "$T/demo.onnx" "$T/red.jpg" >"$T/pred.out" 2>"$T/pred.err" ||
    fail "predict: $(cat "$T/pred.err")"
grep -q 'event=' "$T/pred.err" && fail "predict logs by default: $(cat "$T/pred.err")"
check_eq "predict's lines" "$(wc -l <"$T/pred.out")" 1
env -u URSA_LOG_LEVEL "$URSA" predict -v --model "$T/demo.onnx" "$T/red.jpg" >/dev/null 2>"$T/pred-v.err" ||
    fail "predict -v"
grep -q 'event=nn_isa isa=' "$T/pred-v.err" || fail "predict -v: $(cat "$T/pred-v.err")"
IMG="$T/img"
bash "$(dirname "$0")/../fixtures/make_images.sh" "$IMG" >/dev/null
cd "$IMG"

set +e
"$URSA" verify --out "$T/out" $(cut -f1 expected.tsv) >got.tsv 2>"$T/verify.err"
rc=$?
set -e
check_eq "exit code with rejections" "$rc" 1
diff <(cut -f1-3 expected.tsv) got.tsv >"$T/diff" || fail "verdicts differ:
$(cat "$T/diff")"
grep -q "bomb.png: 100000x100000 exceeds" "$T/verify.err" || fail "no detail for the bomb"

"$URSA" verify good.jpg good.webp >/dev/null || fail "exit code for all ok"
set +e
"$URSA" verify >/dev/null 2>&1; rc=$?
check_eq "exit code without files" "$rc" 2
"$URSA" verify good.jpg /nonexistent.jpg >/dev/null 2>&1; rc=$?
check_eq "exit code for a missing file" "$rc" 2
set -e

# every accepted variant of base.png is the same picture, give or take JPEG:
# RMSE against the plain one below 4% of full scale
ref="$T/out/good.jpg.jpg"
for f in progressive.jpg cmyk.jpg png16.png palette.png good.webp; do
    rmse=$({ /usr/bin/compare -metric RMSE "$ref" "$T/out/$f.jpg" null: 2>&1 || true; } | sed 's/.*(\(.*\))/\1/')
    log "$f: normalised RMSE vs good.jpg = $rmse"
    awk -v r="$rmse" 'BEGIN{exit !(r < 0.04)}' || fail "$f differs from good.jpg (RMSE $rmse)"
done
# alpha at 50% over white is lighter than the original: check its mean
mean_a=$(/usr/bin/convert "$T/out/alpha.png.jpg" -colorspace Gray -format '%[fx:mean]' info:)
mean_o=$(/usr/bin/convert "$ref" -colorspace Gray -format '%[fx:mean]' info:)
awk -v a="$mean_a" -v o="$mean_o" 'BEGIN{exit !(a > o + 0.1)}' || fail "alpha not composited on white ($mean_a vs $mean_o)"
# EXIF 6: the gradient ran white (left) to black (right) in the stored pixels
# (gradient: goes top to bottom, so stored top is white); turned 90 clockwise
# the white edge must be on the right
left=$(/usr/bin/convert "$T/out/exif6.jpg.jpg" -crop 10x200+0+0 -colorspace Gray -format '%[fx:mean]' info:)
right=$(/usr/bin/convert "$T/out/exif6.jpg.jpg" -crop 10x200+90+0 -colorspace Gray -format '%[fx:mean]' info:)
log "exif6 upright: left mean $left, right mean $right"
awk -v l="$left" -v r="$right" 'BEGIN{exit !(r > l + 0.5)}' || fail "EXIF orientation not applied"
echo "test_verify_cli: ok"
