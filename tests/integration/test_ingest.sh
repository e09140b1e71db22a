# ursa ingest end to end on the fault server: every URL ends in exactly one
# final state with the right reason; duplicates and label conflicts; invalid
# lines and repeats; status, --failed, retry of transient failures only,
# export-dataset in fast.ai's layout; kcat reads the verified messages.
. "$(dirname "$0")/lib.sh"
start_fault_server
stack_up
grep -q "started crawler" "$T/up.log" || fail "ursa up did not start the crawler"
grep -q "started verifier" "$T/up.log" || fail "ursa up did not start the verifier"

cat >"$T/urls_black.txt" <<URLS
# black bears
$FS/img/good.jpg
$FS/img/cmyk.jpg

$FS/img/good.jpg
not a url
ftp://example.com/a.jpg
$FS/flaky/palette.png
$FS/404
$FS/html/page.jpg
$FS/truncated/good.jpg
$FS/cut/progressive.jpg
$FS/slow
$FS/loop/0
$FS/redirect-private
$FS/big
$FS/big-chunked
$FS/img/bomb.png
$FS/noai/good.webp
$FS/texttype/gray.jpg
$FS/redirect/alpha.png
$FS/429
$FS/img/png16.png
URLS
printf '%s\n' "$FS/img/good.webp" "$FS/img/progressive.jpg" "$FS/img/tiny.png" \
    "$FS/img/anim.gif" "$FS/img/exif6.jpg" >"$T/teddys.txt"
printf 'url,label\n%s,grizzly\n%s,grizzly\n' "$FS/img/big.jpg" "$FS/img/gray.jpg" >"$T/more.csv"
# labels that would talk to a terminal, or are not UTF-8: refused, shown escaped
printf '%s,\033]0;pwned\007\n%s,caf\351\n' "$FS/img/big.jpg?esc" "$FS/img/big.jpg?latin1" >>"$T/more.csv"

"$URSA" ingest --dataset bears --wait-timeout-s 120 "$T/urls_black.txt" "$T/teddys.txt" \
    "$T/more.csv" >"$T/ingest.out" 2>"$T/ingest.err" || fail "ingest exit code: $(cat "$T/ingest.err")"
grep -q "urls_black.txt:6: invalid URL (not an http:// or https:// URL); skipped" "$T/ingest.err" \
    || fail "invalid line not reported with file and line: $(cat "$T/ingest.err")"
grep -q "urls_black.txt:7: invalid URL" "$T/ingest.err" || fail "ftp URL not refused"
grep -qF 'more.csv:4: invalid label "\x1b]0;pwned\x07"' "$T/ingest.err" ||
    fail "a label with escapes: $(cat -v "$T/ingest.err")"
grep -qF 'more.csv:5: invalid label "caf\xe9"' "$T/ingest.err" || fail "a Latin-1 label: $(cat -v "$T/ingest.err")"
grep -q $'\033' "$T/ingest.err" && fail "an escape reached the terminal: $(cat -v "$T/ingest.err")"
grep -q "25 queued, 0 already in the dataset, 1 listed twice, 0 over --max-per-label, 4 invalid" \
    "$T/ingest.out" || fail "ingest summary: $(cat "$T/ingest.out")"

# Same bytes under another URL: once all above is final (so which one came
# first is settled), a copy under the same label is a duplicate and a copy
# under another label a conflict; a URL already in the dataset is not
# queued again.
printf '%s\n' "$FS/img/png16.png?copy" "$FS/img/good.jpg" >"$T/black2.txt"
"$URSA" ingest --dataset bears --label black "$T/black2.txt" >"$T/ingest2.out" 2>&1 || fail "ingest 2"
grep -q "1 queued, 1 already in the dataset" "$T/ingest2.out" || fail "ingest 2: $(cat "$T/ingest2.out")"
printf '%s\n' "$FS/img/cmyk.jpg?teddy" >"$T/teddys2.txt"
"$URSA" ingest --dataset bears --label teddys "$T/teddys2.txt" >"$T/ingest3.out" 2>&1 || fail "ingest 3"

# the daemons report their health and counters through Redis heartbeats
wait_for 10 "heartbeats" bash -c "'$URSA' status | grep -Eq '^verifier +[0-9]+ +running +ok: heartbeat'"
"$URSA" status >"$T/stack.out" || true
grep -Eq '^crawler +[0-9]+ +running +ok: heartbeat [0-9]+ s ago, downloaded [0-9]+' "$T/stack.out" \
    || fail "crawler health: $(cat "$T/stack.out")"

# every URL's final state and reason
"$URSA" status --dataset bears --failed >"$T/failed.tsv"
expect() { # URL-suffix state reason
    local line
    line=$(awk -F'\t' -v u="$FS$1" '$1 == u' "$T/failed.tsv")
    [ -n "$line" ] || fail "$1 is not listed as failed/rejected"
    [ "$(echo "$line" | cut -f3)" = "$2" ] || fail "$1: state $(echo "$line" | cut -f3), want $2"
    [ "$(echo "$line" | cut -f4)" = "$3" ] || fail "$1: reason $(echo "$line" | cut -f4), want $3"
}
expect /404 failed http_404
expect /html/page.jpg rejected not_an_image
expect /truncated/good.jpg rejected truncated
expect /cut/progressive.jpg failed connection_reset
expect /slow failed timeout
expect /loop/0 failed too_many_redirects
expect /redirect-private failed blocked_address
expect /big failed too_large
expect /big-chunked failed too_large
expect /img/bomb.png rejected too_many_pixels
expect /noai/good.webp failed robots_noai
expect /texttype/gray.jpg failed not_an_image_type
expect /429 failed http_429
expect /img/tiny.png rejected too_small
expect "/img/png16.png?copy" duplicate duplicate
expect "/img/cmyk.jpg?teddy" rejected label_conflict
check_eq "listed as not verified" "$(($(wc -l <"$T/failed.tsv") - 1))" 16
check_eq "transient failures" "$(awk -F'\t' '$5 == "yes"' "$T/failed.tsv" | wc -l)" 3

check_eq "verified" "$(state_sum bears verified)" 11
check_eq "total" "$(count_of bears total)" 27
check_eq "black verified" "$(count_of bears 'black|verified')" 5
check_eq "teddys verified" "$(count_of bears 'teddys|verified')" 4
check_eq "grizzly verified" "$(count_of bears 'grizzly|verified')" 2
"$URSA" status --dataset bears >"$T/status.out"
grep -Eq '^black +5 +1 +3 +10 +0$' "$T/status.out" || fail "status table: $(cat "$T/status.out")"
grep -Eq 'black +failed +http_404 +1' "$T/status.out" || fail "status reasons: $(cat "$T/status.out")"
"$URSA" status --dataset bears -o json >"$T/status.json" || fail "status -o json"
python3 - "$T/status.json" <<'EOF' || fail "status -o json: $(cat "$T/status.json")"
import json, sys
s = json.load(open(sys.argv[1]))
black = [l for l in s["labels"] if l["label"] == "black"][0]
assert (black["verified"], black["duplicate"], black["rejected"], black["failed"], black["pending"]) == (5, 1, 3, 10, 0), black
assert {"label": "black", "state": "failed", "reason": "http_404", "n": 1} in s["reasons"], s["reasons"]
assert s["total"] == s["final"] + s["pending"], s
EOF
check_eq "manifest size" "$(state_sum bears verified)" 11

# the verified images on the topic, readable by a standard client
wait_for 20 "11 verified messages" bash -c \
    "[ \$(kcat -b $BOOTSTRAP -C -t ursa.images.verified -e -q -f '%k\n' | sort -u | wc -l) -eq 11 ]"

# retry queues only the transient failures; they fail again the same way,
# and nothing is counted twice
"$URSA" retry --dataset bears >"$T/retry.out" || fail "retry: $(cat "$T/retry.out")"
grep -q "3 URLs queued again" "$T/retry.out" || fail "retry: $(cat "$T/retry.out")"
wait_for 60 "retried URLs to end" all_final bears
check_eq "total after retry" "$(count_of bears total)" 27
check_eq "failed after retry" "$(state_sum bears failed)" 10
check_eq "verified after retry" "$(state_sum bears verified)" 11
check_eq "429 after retry" "$(count_of bears 'black|failed|http_429')" 1

# export in fast.ai's from_folder layout; the files are what the verifier made
"$URSA" export-dataset --dataset bears "$T/export" >"$T/export.out" || fail "export"
check_eq "exported files" "$(find "$T/export" -name '*.jpg' | wc -l)" 11
check_eq "labels.csv rows" "$(($(wc -l <"$T/export/labels.csv") - 1))" 11
check_eq "black files" "$(ls "$T/export/black" | wc -l)" 5
head -1 "$T/export/labels.csv" | grep -qx "name,label" || fail "labels.csv header"
"$URSA" verify "$T"/export/*/*.jpg >"$T/reverify.out" || fail "exported images do not verify"
# classes named like the index file or like a spreadsheet formula
printf '%s\n' "$FS/img/good.webp?h1" >"$T/h1.txt"
printf '%s\n' "$FS/img/progressive.jpg?h2" >"$T/h2.txt"
"$URSA" ingest --dataset hostile --label labels.csv "$T/h1.txt" >/dev/null 2>&1 || fail "ingest labels.csv"
"$URSA" ingest --dataset hostile --label '=SUM(1,2)+"x"' "$T/h2.txt" >/dev/null 2>&1 ||
    fail "ingest a formula"
wait_for 60 "the hostile classes" all_final hostile
"$URSA" export-dataset --dataset hostile "$T/hx" >"$T/hx.out" || fail "export of hostile classes: $(cat "$T/hx.out")"
grep -q "and labels-1.csv" "$T/hx.out" || fail "the index's name: $(cat "$T/hx.out")"
check_eq "images in the labels.csv class" "$(ls "$T/hx/labels.csv" | wc -l)" 1
grep -qF "\"'=SUM(1,2)+\"\"x\"\"/" "$T/hx/labels-1.csv" || fail "formula not escaped: $(cat "$T/hx/labels-1.csv")"
grep -qF ",\"'=SUM(1,2)+\"\"x\"\"\"" "$T/hx/labels-1.csv" || fail "label not escaped: $(cat "$T/hx/labels-1.csv")"
awk -F'\t' '{split($3, s, "x"); if (s[1] > 500 || s[2] > 500) exit 1}' "$T/reverify.out" \
    || fail "an exported image is larger than 500 px"
grep -q "exif6.jpg" "$T/failed.tsv" && fail "exif6 not verified"
# CrawlRequests are checked against state before anything is fetched: a
# url_hash that is not the URL's, or an unknown dataset, is a dead letter
# with its reason, and nothing is fetched or written for it
python3 - "$T" "$FS/img/big.jpg?forged" <<'EOF'
import hashlib, sys
def varint(n):
    b = b""
    while True:
        b += bytes([(n & 0x7f) | (0x80 if n > 0x7f else 0)])
        n >>= 7
        if not n:
            return b
def s(f, v):
    v = v.encode() if isinstance(v, str) else v
    return varint(f << 3 | 2) + varint(len(v)) + v
def req(ds, url, h):
    head = b"\x08\x01" + s(2, "f" * 32) + s(3, ds)
    return s(1, head) + s(2, url) + s(3, h) + s(4, "grizzly") + b"\x28\x01"
T, url = sys.argv[1], sys.argv[2]
good = hashlib.sha256(url.encode()).hexdigest()
open(T + "/forged-hash.bin", "wb").write(req("bears", url, "0" * 64))
open(T + "/forged-ds.bin", "wb").write(req("nosuchds", url, good))
EOF
kcat -b "$BOOTSTRAP" -P -t ursa.crawl.requests -k forged1 "$T/forged-hash.bin"
kcat -b "$BOOTSTRAP" -P -t ursa.crawl.requests -k forged2 "$T/forged-ds.bin"
wait_for 30 "two dead letters" bash -c \
    "[ \$(kcat -b $BOOTSTRAP -C -t ursa.dlq.crawler -e -q -f '%k\n' | grep -c forged) -eq 2 ]"
kcat -b "$BOOTSTRAP" -C -t ursa.dlq.crawler -e -q -J >"$T/dlq.json"
grep -q '"ursa.dlq.reason","url_hash 0000000000000000... is not the sha256 of the URL' "$T/dlq.json" ||
    fail "forged hash: $(cat "$T/dlq.json")"
grep -q '"ursa.dlq.reason","unknown dataset nosuchds"' "$T/dlq.json" || fail "unknown dataset: $(cat "$T/dlq.json")"
check_eq "the unknown dataset's keys" "$(rcli --scan --pattern '*nosuchds*' | wc -l)" 0
check_eq "bears' URLs after the forged one" "$(count_of bears total)" 27

# one URL written five ways is one URL; RFC 4180 quoting keeps a URL's
# comma in the URL; lists with no valid URL are an error
P=${FS#http://}
cat >"$T/five.csv" <<CSV
url,label
$FS/img/palette.png?five,polar
HTTP://$P/img/palette.png?five#frag,polar
$FS/img/./x/../palette.png?five,polar
$FS/img/p%61lette.png?five,polar
http://$P/img/palette.png?five,polar
"$FS/img/alpha.png?w=200,h=100",polar
"$FS/img/never closed,polar
http://[::1/a.jpg,polar
CSV
"$URSA" ingest --dataset polar --wait-timeout-s 60 "$T/five.csv" >"$T/five.out" 2>"$T/five.err" ||
    fail "ingest five ways: $(cat "$T/five.err")"
grep -q "2 queued, 0 already in the dataset, 4 listed twice, 0 over --max-per-label, 2 invalid" \
    "$T/five.out" || fail "five ways: $(cat "$T/five.out")"
grep -q "five.csv:8: not a CSV line" "$T/five.err" || fail "open quote: $(cat "$T/five.err")"
grep -q "five.csv:9: invalid URL (not a URL libcurl can parse" "$T/five.err" ||
    fail "bad IPv6: $(cat "$T/five.err")"
check_eq "polar's URLs" "$(count_of polar total)" 2
printf 'not a url\n# nothing\n' >"$T/none.txt"
"$URSA" ingest --dataset polar "$T/none.txt" >"$T/none.out" 2>&1 && fail "an ingest of nothing exited 0"
grep -q "no valid URL in 1 file (1 invalid line); nothing queued" "$T/none.out" ||
    fail "nothing to ingest: $(cat "$T/none.out")"
"$URSA" ingest --dataset polar --allow-empty --no-wait "$T/none.txt" >"$T/none2.out" 2>&1 ||
    fail "--allow-empty: $(cat "$T/none2.out")"

# ursa datasets lists them; delete says what would go, then removes every
# key of the dataset (edits included) and nothing of another; it is
# refused while URLs are in flight, and the name can be ingested again
"$URSA" edit --dataset polar delete "$FS/img/palette.png?five" >"$T/edit.out" 2>&1 ||
    fail "edit: $(cat "$T/edit.out")"
"$URSA" datasets -o json >"$T/datasets.json" || fail "datasets -o json"
python3 - "$T/datasets.json" <<'EOF2' || fail "datasets -o json: $(cat "$T/datasets.json")"
import json, sys
d = {x["dataset"]: x for x in json.load(open(sys.argv[1]))["datasets"]}
assert d["polar"]["urls"] == 2 and d["polar"]["edits"] == 1 and d["polar"]["models"] == 0, d
EOF2
"$URSA" datasets | grep -Eq '^polar +2 ' || fail "datasets: $("$URSA" datasets)"
polar_keys() { rcli --scan --pattern 'ursa:ds:*polar*' | wc -l; }
before=$(polar_keys)
[ "$before" -gt 3 ] || fail "polar has $before keys: no test"
others=$(rcli --scan --pattern 'ursa:ds:*' | grep -vc polar)
rc=0
"$URSA" datasets delete polar >"$T/del.out" 2>&1 || rc=$?
check_eq "delete without --yes" "$rc" 1
grep -q "holds 2 URLs (.* verified), 1 edits and 0 models; nothing deleted: give --yes" "$T/del.out" ||
    fail "delete without --yes: $(cat "$T/del.out")"
check_eq "polar's keys after a delete without --yes" "$(polar_keys)" "$before"
"$URSA" datasets delete polar --yes >"$T/del.out" 2>&1 || fail "delete: $(cat "$T/del.out")"
grep -q "dataset polar deleted: 2 URLs, 1 edits, 0 models" "$T/del.out" || fail "delete: $(cat "$T/del.out")"
check_eq "polar's keys after the delete" "$(polar_keys)" 0
check_eq "other datasets' keys" "$(rcli --scan --pattern 'ursa:ds:*' | grep -vc polar)" "$others"
"$URSA" datasets | grep -q '^polar ' && fail "polar still listed"
rc=0
"$URSA" datasets delete polar --yes >"$T/del2.out" 2>&1 || rc=$?
check_eq "a second delete" "$rc" 1
grep -q "no dataset polar" "$T/del2.out" || fail "second delete: $(cat "$T/del2.out")"
# ursa gc: the deleted dataset's blobs are garbage; what bears and hostile
# refer to stays, and nothing written within the grace period goes
blobs_in_store() { find "$URSA_STATE_DIR/blobs" -type f -name '????????????????????????????????????????????????????????????????' | wc -l; }
"$URSA" gc --dry-run -o json >"$T/gc0.json" || fail "gc --dry-run"
python3 -c 'import json, sys; g = json.load(open(sys.argv[1])); assert g["unreferenced"] == 0 and g["recent"] > 0, g' \
    "$T/gc0.json" || fail "the grace period: $(cat "$T/gc0.json")"
n0=$(blobs_in_store)
"$URSA" gc --dry-run --older-than-hours 0 -o json >"$T/gc1.json" || fail "gc --dry-run --older-than-hours 0"
garbage=$(python3 -c 'import json, sys; g = json.load(open(sys.argv[1])); assert g["removed"] == 0 and len(g["blobs"]) == g["unreferenced"]; print(g["unreferenced"])' "$T/gc1.json") ||
    fail "gc --dry-run: $(cat "$T/gc1.json")"
[ "$garbage" -gt 0 ] || fail "no garbage after deleting polar: $(cat "$T/gc1.json")"
check_eq "blobs after a dry run" "$(blobs_in_store)" "$n0"
"$URSA" gc --older-than-hours 0 >"$T/gc2.out" 2>&1 || fail "gc: $(cat "$T/gc2.out")"
grep -q "unreferenced: $garbage blobs (.* MB), $garbage removed" "$T/gc2.out" || fail "gc: $(cat "$T/gc2.out")"
check_eq "blobs after gc" "$(blobs_in_store)" "$((n0 - garbage))"
for d in bears hostile; do
    rm -rf "$T/exp-$d"
    "$URSA" export-dataset --dataset $d "$T/exp-$d" >/dev/null 2>"$T/exp.err" ||
        fail "export-dataset $d after gc: $(cat "$T/exp.err")"
done
"$URSA" gc --dry-run --older-than-hours 0 -o json >"$T/gc3.json" || fail "gc again"
python3 -c 'import json, sys; g = json.load(open(sys.argv[1])); assert g["unreferenced"] == 0, g' "$T/gc3.json" ||
    fail "garbage left: $(cat "$T/gc3.json")"
echo "$FS/delay/8000/img/palette.png?slow" >"$T/slow.txt"
"$URSA" ingest --dataset polar --label polar --no-wait "$T/slow.txt" >/dev/null 2>&1 || fail "ingest again"
rc=0
"$URSA" datasets delete polar --yes >"$T/del3.out" 2>&1 || rc=$?
check_eq "a delete with a URL in flight" "$rc" 1
grep -q "1 URLs of polar are still being downloaded or verified" "$T/del3.out" ||
    fail "in flight: $(cat "$T/del3.out")"
"$URSA" datasets delete polar --yes --force >"$T/del4.out" 2>&1 || fail "--force: $(cat "$T/del4.out")"

echo "test_ingest: ok"
