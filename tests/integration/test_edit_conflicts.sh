# Conflicting cleaning decisions, and edits that do not hold (issue 27,
# defect 6). Two `ursa clean --apply` at once on the same images (A
# relabels every image, B relabels half and deletes the rest): on each
# image the first edit applied wins, the other is refused as a conflict
# and reported per image, with exit status 3; nothing applied is
# overwritten and no deleted image comes back. Three cleaners in a set
# order (sent while the verifier is stopped) show the same with mixed
# winners. Edits sent straight to Kafka, past the CLI's checks (an
# unknown image, a false label before, an unknown dataset, a new label
# that is no class, no base) are dead-lettered with their reason and
# recorded as refused, and change nothing; the unknown dataset gets no
# key. The console answers 409 to a page showing a stale decision.
# Before the fix both cleaners said "applied" and the later one's edits
# overwrote the earlier's (a relabel bringing a deleted image back), and
# every hostile edit was applied.
. "$(dirname "$0")/lib.sh"
start_fmnist_server 60
stack_up
"$URSA" ingest --dataset fm "$FM"/urls_*.txt >"$T/ingest.out" 2>&1 || fail "ingest: $(cat "$T/ingest.out")"
N=$(state_sum fm verified)
[ "$N" -ge 50 ] || fail "only $N verified"
"$URSA" export-dataset --dataset fm "$T/exp" >/dev/null || fail "export-dataset"
CLASSES=$(ls "$FM"/urls_*.txt | sed 's|.*/urls_\(.*\)\.txt|\1|' | tr '\n' ' ')

# ---- two cleaners at once ----
# A: every image to the next class; B: the first half to the class after
# that, the rest deleted (left out, --delete-missing)
python3 - "$T/exp/labels.csv" "$T/a.csv" "$T/b.csv" $CLASSES <<'EOF'
import csv, sys
src, a, b, *classes = sys.argv[1:]
rows = list(csv.reader(open(src)))[1:]
nxt = lambda c, k: classes[(classes.index(c) + k) % len(classes)]
with open(a, "w") as fa, open(b, "w") as fb:
    fa.write("name,label\n")
    fb.write("name,label\n")
    for i, (name, label) in enumerate(rows):
        fa.write(f"{name},{nxt(label, 1)}\n")
        if i < len(rows) // 2:
            fb.write(f"{name},{nxt(label, 2)}\n")
EOF
"$URSA" clean --dataset fm --apply "$T/a.csv" --author A >"$T/a.out" 2>"$T/a.err" &
PA=$!
"$URSA" clean --dataset fm --apply "$T/b.csv" --delete-missing --author B >"$T/b.out" 2>"$T/b.err" &
PB=$!
RA=0; wait "$PA" || RA=$?
RB=0; wait "$PB" || RB=$?
log "A: rc=$RA $(tail -1 "$T/a.out"); B: rc=$RB $(tail -1 "$T/b.out")"
grep -q "^$N edits sent: $N relabel, 0 delete" "$T/a.out" || fail "A: $(cat "$T/a.out" "$T/a.err")"
grep -q "^$N edits sent: $((N / 2)) relabel, $((N - N / 2)) delete" "$T/b.out" ||
    fail "B: $(cat "$T/b.out" "$T/b.err")"
# one decision an image: N applied, N refused, one of each per image
check_eq "edits applied" "$(rcli LLEN 'ursa:ds:{fm:ed}:log' | tr -d '\n')" "$N"
check_eq "message ids applied" "$(rcli SCARD 'ursa:ds:{fm:ed}:seen' | tr -d '\n')" "$N"
check_eq "edits refused" "$(rcli HLEN 'ursa:ds:{fm:ed}:refused' | tr -d '\n')" "$N"
check_eq "decisions in force" "$(rcli HLEN 'ursa:ds:{fm:ed}:cur' | tr -d '\n')" "$N"
check_eq "pending" "$(rcli ZCARD 'ursa:ds:{fm:ed}:pendt' | tr -d '\n')" 0
"$URSA" edits --dataset fm --limit 100000 >"$T/edits.out" || fail "ursa edits"
rcli HGETALL 'ursa:ds:{fm:ed}:cur' >"$T/cur.txt"
# the loser of each image is told, per image, and only the loser; the
# decision in force is the winner's, deletes included
python3 - "$T/edits.out" "$T/cur.txt" "$T/a.err" "$T/b.err" "$N" <<'EOF' || fail "per image: see above"
import re, sys
edits, cur, aerr, berr, n = sys.argv[1:]
n = int(n)
won = {}
for line in open(edits):
    f = line.rstrip("\n").split("\t")
    if len(f) == 8 and f[0].isdigit():
        assert f[3] not in won, f"image {f[3]} has two edits applied"
        won[f[3]] = (f[6], f[2], f[5])  # author, op, to
assert len(won) == n, f"{len(won)} images decided, not {n}"
c = open(cur).read().split("\n")
cur = {c[i]: c[i + 1].split("\t") for i in range(0, len(c) - 1, 2)}
for img, (who, op, to) in won.items():
    assert cur[img][0] == op and (op != "relabel" or cur[img][2] == to), f"{img}: {cur[img]} in force, {who} won with {op} {to}"
for who, path in (("A", aerr), ("B", berr)):
    lost = {}
    for line in open(path):
        m = re.match(r'ursa clean: image ([0-9a-f]{32}) \((.*?)\): conflict: decided on the image '
                     r'as given \("[^"]*"\), now it is (deleted|relabelled to "[^"]*") \(edit #(\d+)\)$',
                     line)
        assert m, f"{who}: unexpected line {line!r}"
        lost[m.group(1)] = m.group(3)
    other = "B" if who == "A" else "A"
    expect = {i for i, w in won.items() if w[0] == other}
    assert set(lost) == expect, f"{who} reports {len(lost)} conflicts, lost {len(expect)}"
    for img, now in lost.items():
        op = won[img][1]
        assert now == ("deleted" if op == "delete" else f'relabelled to "{won[img][2]}"'), (img, now)
    print(f"{who}: {len(lost)} conflicts reported")
EOF
NA=$(grep -c "conflict:" "$T/a.err" || true)
NB=$(grep -c "conflict:" "$T/b.err" || true)
check_eq "conflicts of A and B" "$((NA + NB))" "$N"
for x in "A $RA $NA a" "B $RB $NB b"; do
    set -- $x
    if [ "$3" -gt 0 ]; then
        check_eq "$1's exit status (conflicts)" "$2" 3
        grep -q "^$((N - $3)) of $N applied, $3 refused ($3 conflict" "$T/$4.out" ||
            fail "$1: $(cat "$T/$4.out")"
    else
        check_eq "$1's exit status (no conflict)" "$2" 0
    fi
done
# counts as status shows them, and nothing deleted comes back
DEL=$(grep -c '^delete' "$T/cur.txt" || true)
REL=$(grep -c '^relabel' "$T/cur.txt" || true)
"$URSA" status --dataset fm >"$T/status.out" || true
grep -q "^edits: $N made (ursa edits --dataset fm), $DEL deleted and $REL relabelled in force" \
    "$T/status.out" || fail "status: $(cat "$T/status.out")"
SEEN=$(awk '/as training sees them/ {on = 1; next} on && NF == 2 {s += $2} END {print s + 0}' "$T/status.out")
check_eq "images training sees (status)" "$SEEN" "$((N - DEL))"
"$URSA" export-dataset --dataset fm "$T/exp2" >/dev/null || fail "export-dataset after the edits"
check_eq "images exported" "$(($(wc -l <"$T/exp2/labels.csv") - 1))" "$((N - DEL))"
# a replayed message (the first sent) changes nothing
kcat -b "$BOOTSTRAP" -C -t ursa.dataset.edits -o beginning -c 1 -e -q -f '%s' >"$T/edit1.bin"
K1=$(kcat -b "$BOOTSTRAP" -C -t ursa.dataset.edits -o beginning -c 1 -e -q -f '%k')
kcat -b "$BOOTSTRAP" -P -t ursa.dataset.edits -k "$K1" "$T/edit1.bin"
wait_for 20 "the replay handled" bash -c "[ \$(grep -c 'event=edit.* dataset=fm' '$URSA_STATE_DIR/log/verifier.log') -ge $((2 * N + 1)) ]"
check_eq "edits after a replay" "$(rcli LLEN 'ursa:ds:{fm:ed}:log' | tr -d '\n')" "$N"
check_eq "refusals after a replay" "$(rcli HLEN 'ursa:ds:{fm:ed}:refused' | tr -d '\n')" "$N"
rcli HGETALL 'ursa:ds:{fm:ed}:cur' | cmp -s - "$T/cur.txt" || fail "a replay changed the decisions in force"

# ---- a restore undoes a decision; a second one has nothing to undo ----
X=$(awk 'NR % 2 == 1 {i = $0} NR % 2 == 0 && /^delete/ {print i; exit}' "$T/cur.txt")
[ -n "$X" ] || X=$(awk 'NR % 2 == 1 {i = $0} NR % 2 == 0 {print i; exit}' "$T/cur.txt")
"$URSA" edit --dataset fm restore "$X" >"$T/restore.out" 2>&1 || fail "restore: $(cat "$T/restore.out")"
"$URSA" edit --dataset fm restore "$X" >"$T/restore2.out" 2>&1 && fail "a second restore was accepted"
grep -q "nothing to restore" "$T/restore2.out" || fail "restore twice: $(cat "$T/restore2.out")"
rcli HGETALL 'ursa:ds:{fm:ed}:cur' >"$T/cur.txt"

# ---- three cleaners in a set order: on each image the first applied wins ----
# All decided on the same state while the verifier is stopped: A1 relabels
# the first half, B deletes every image not deleted, A2 relabels the second
# half; each is in Kafka before the next starts, so in every partition A1's
# edits come first, then B's, then A2's: A1 wins all, B loses the first
# half, A2 loses the images B deleted (they stay deleted)
LOG1=$(rcli LLEN 'ursa:ds:{fm:ed}:log' | tr -d '\n')
python3 - "$T/exp/labels.csv" "$T/a1.csv" "$T/a2.csv" $CLASSES <<'EOF'
import csv, sys
src, a1, a2, *classes = sys.argv[1:]
rows = list(csv.reader(open(src)))[1:]
nxt = lambda c, k: classes[(classes.index(c) + k) % len(classes)]
with open(a1, "w") as f1, open(a2, "w") as f2:
    f1.write("name,label\n")
    f2.write("name,label\n")
    for i, (name, label) in enumerate(rows):  # a label no edit gave yet
        (f1 if i < len(rows) // 2 else f2).write(f"{name},{nxt(label, 3)}\n")
EOF
printf 'name,label\n' >"$T/none.csv"
VP=$(cat "$URSA_STATE_DIR/run/verifier.pid")
kill -TERM "$VP"
wait_for 20 "the verifier to stop" dead "$VP"
sent() { grep -q "edits sent" "$1"; }
"$URSA" clean --dataset fm --apply "$T/a1.csv" --author A1 --wait-s 50 >"$T/a1.out" 2>"$T/a1.err" &
P1=$!
wait_for 20 "A1's edits sent" sent "$T/a1.out"
"$URSA" clean --dataset fm --apply "$T/none.csv" --delete-missing --author B2 --wait-s 50 \
    >"$T/b2.out" 2>"$T/b2.err" &
P2=$!
wait_for 20 "B2's edits sent" sent "$T/b2.out"
"$URSA" clean --dataset fm --apply "$T/a2.csv" --author A2 --wait-s 50 >"$T/a2.out" 2>"$T/a2.err" &
P3=$!
wait_for 20 "A2's edits sent" sent "$T/a2.out"
"$URSA" up >"$T/up2.log" 2>&1 || fail "ursa up: $(cat "$T/up2.log")"
R1=0; wait "$P1" || R1=$?
R2=0; wait "$P2" || R2=$?
R3=0; wait "$P3" || R3=$?
log "A1: rc=$R1 $(tail -1 "$T/a1.out"); B2: rc=$R2 $(tail -1 "$T/b2.out"); A2: rc=$R3 $(tail -1 "$T/a2.out")"
check_eq "A1's exit status" "$R1" 0
check_eq "B2's exit status" "$R2" 3
check_eq "A2's exit status" "$R3" 3
"$URSA" edits --dataset fm --from $((LOG1 + 1)) --limit 100000 >"$T/edits2.out" || fail "ursa edits"
rcli HGETALL 'ursa:ds:{fm:ed}:cur' >"$T/cur.txt"
python3 - "$T/edits2.out" "$T/cur.txt" "$T" <<'EOF' || fail "three cleaners: see above"
import re, sys
edits, cur, t = sys.argv[1:]
won = {}
for line in open(edits):
    f = line.rstrip("\n").split("\t")
    if len(f) == 8 and f[0].isdigit():
        won.setdefault(f[6], set()).add(f[3])
        assert all(f[3] not in v for k, v in won.items() if k != f[6]), f"{f[3]} applied twice"
c = open(cur).read().split("\n")
cur = {c[i]: c[i + 1].split("\t")[0] for i in range(0, len(c) - 1, 2)}
lost = {}
for who in ("A1", "B2", "A2"):
    lost[who] = set()
    for line in open(f"{t}/{who.lower()}.err"):
        m = re.match(r"ursa clean: image ([0-9a-f]{32}) \(.*?\): conflict: decided on the image .*, "
                     r"now it is (deleted|relabelled to \"[^\"]*\") \(edit #\d+\)$", line)
        assert m, f"{who}: unexpected line {line!r}"
        lost[who].add(m.group(1))
    n = int(re.search(r"^(\d+) edits sent", open(f"{t}/{who.lower()}.out").read(), re.M).group(1))
    assert len(won.get(who, ())) + len(lost[who]) == n, f"{who}: {n} sent, {len(won.get(who, ()))} applied, {len(lost[who])} refused"
a1, b2, a2 = won.get("A1", set()), won.get("B2", set()), won.get("A2", set())
assert not lost["A1"] and a1, "A1 came first: nothing of it may be refused"
assert lost["B2"] and lost["B2"] <= a1 and not (b2 & a1), "B2 loses exactly the images A1 decided"
assert lost["A2"] and lost["A2"] <= b2 and not (a2 & b2), "A2 loses exactly the images B2 deleted"
assert all(cur[i] == "delete" for i in b2), "an image B2 deleted came back"
assert all(cur[i] == "relabel" for i in a1 | a2), "a relabel is not in force"
print(f"A1 {len(a1)} applied; B2 {len(b2)} applied, {len(lost['B2'])} conflicts; "
      f"A2 {len(a2)} applied, {len(lost['A2'])} conflicts")
EOF
check_eq "pending after the three" "$(rcli ZCARD 'ursa:ds:{fm:ed}:pendt' | tr -d '\n')" 0

# ---- hostile edits straight to Kafka ----
LOG0=$(rcli LLEN 'ursa:ds:{fm:ed}:log' | tr -d '\n')
Y=$(awk 'NR % 2 == 1 {i = $0} NR % 2 == 0 && /^relabel/ {print i; exit}' "$T/cur.txt")
[ -n "$Y" ] || fail "no relabelled image left"
IFS=$'\t' read -r YOP YFROM YTO YSEQ < <(rcli HGET 'ursa:ds:{fm:ed}:cur' "$Y")
# (a loop, not `| head -1`: under pipefail a last class equal to YFROM, or
# a SIGPIPE, ended the test without a word)
OTHER=""
for c in $CLASSES; do if [ "$c" != "$YFROM" ]; then OTHER=$c; break; fi; done
[ -n "$OTHER" ] || fail "no class other than $YFROM"
P="$URSA_BIN/edit-probe"
M1=$("$P" --dataset fm --image 0123456789abcdef0123456789abcdef --op delete --label "$YFROM" --base none)
M2=$("$P" --dataset fm --image "$Y" --op relabel --label "$OTHER" --new-label "$YFROM" --base relabel --base-label "$YTO")
M3=$("$P" --dataset nosuchds --image "$Y" --op delete --label "$YFROM" --base none)
M4=$("$P" --dataset fm --image "$Y" --op relabel --label "$YFROM" --new-label zebra --base relabel --base-label "$YTO")
M5=$("$P" --dataset fm --image "$Y" --op delete --label "$YFROM" --base '')
wait_for 30 "five dead letters" bash -c \
    "[ \$(kcat -b $BOOTSTRAP -C -t ursa.dlq.verifier -e -q -f '%k\n' | grep -c '/') -ge 5 ]"
kcat -b "$BOOTSTRAP" -C -t ursa.dlq.verifier -e -q -J >"$T/dlq.json"
python3 - "$T/dlq.json" "$OTHER" "$YFROM" <<'EOF' || fail "dead letters: $(cat "$T/dlq.json")"
import json, sys
path, other, given = sys.argv[1:]
reasons = []
for line in open(path, encoding="utf-8", errors="replace"):
    h = json.loads(line, strict=False).get("headers") or []
    reasons += [h[i + 1] for i in range(0, len(h) - 1, 2) if h[i] == "ursa.dlq.reason"]
for want in ("edit refused: image 0123456789abcdef0123456789abcdef is no verified image of dataset fm",
             f'edit refused: the label before, "{other}", is not the image\'s given label "{given}"',
             "edit refused: dataset nosuchds does not exist",
             'edit refused: the new label "zebra" is no class of dataset fm',
             "edit refused: bad edit: it does not say the decision in force it was made against"):
    assert any(r.startswith(want) for r in reasons), f"no dead letter {want!r} in {reasons}"
EOF
for m in "$M1 no verified image" "$M2 is not the image's given label" "$M4 is no class of dataset fm" \
    "$M5 does not say the decision"; do
    rcli HGET 'ursa:ds:{fm:ed}:refused' "${m%% *}" | grep -q "^refused	.*${m#* }" ||
        fail "refusal of ${m%% *} not recorded: $(rcli HGET 'ursa:ds:{fm:ed}:refused' "${m%% *}")"
done
check_eq "edits after the hostile ones" "$(rcli LLEN 'ursa:ds:{fm:ed}:log' | tr -d '\n')" "$LOG0"
rcli HGETALL 'ursa:ds:{fm:ed}:cur' | cmp -s - "$T/cur.txt" || fail "a hostile edit changed the decisions in force"
check_eq "the unknown dataset's keys" "$(rcli --scan --pattern '*nosuchds*' | wc -l)" 0
"$URSA" status --dataset fm --counts | grep -q zebra && fail "the class zebra was created"
check_eq "verified after the hostile edits" "$(state_sum fm verified)" "$N"

# ---- the console: a page showing a stale decision gets 409, per image ----
U="http://127.0.0.1:$(cat "$URSA_STATE_DIR/run/console.port")"
curl -s -c "$T/cj" -X POST -H 'X-Ursa: 1' --data "token=$(cat "$URSA_STATE_DIR/run/console.token")" \
    "$U/api/login" >"$T/login.json"
CSRF=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["csrf"])' "$T/login.json")
post() { curl -s -o "$T/body" -w '%{http_code}' -b "$T/cj" -X POST -H 'X-Ursa: 1' \
    -H "X-CSRF-Token: $CSRF" --data "$1" "$U/api/edit"; }
check_eq "a delete on a stale page" "$(post "dataset=fm&image=$Y&op=delete&base=none")" 409
grep -q "image $Y: conflict: decided on the image as given (\\\\\"$YFROM\\\\\"), now it is relabelled to \\\\\"$YTO\\\\\"" "$T/body" ||
    fail "the console's conflict: $(cat "$T/body")"
check_eq "edits after the stale page" "$(rcli LLEN 'ursa:ds:{fm:ed}:log' | tr -d '\n')" "$LOG0"
check_eq "a delete on the page as it is" "$(post "dataset=fm&image=$Y&op=delete&base=relabel&base_label=$YTO")" 200
grep -q '"applied":true' "$T/body" || fail "the console's delete: $(cat "$T/body")"
check_eq "Y's decision" "$(rcli HGET 'ursa:ds:{fm:ed}:cur' "$Y" | cut -f1)" delete
echo "test_edit_conflicts: ok"
