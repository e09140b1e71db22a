# ursa-console, started by `ursa up`: its security (token login, HttpOnly
# SameSite=Strict cookie, CSRF on every POST, CSP, loopback bind, only JPEG
# blobs by content hash) probed with curl, then the cleaner driven in a real
# headless Chromium on a 390 px screen (console_test.js): relabel by click
# and by keyboard, delete, reload, undo, the other pages, a retrain watched
# to its end. A class named like an HTML attack and URLs holding a script
# must show as text. The edits made in the page are checked in Redis.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
start_fmnist_server 300
HOSTILE='<img src=x onerror="window.__xss=1">'
BASE=$(head -1 "$FM/urls_bag.txt" | sed 's|/ds/.*|/ds|')
# the bags under the hostile name, with a script in their URLs
sed "s|\$|?\"<script>window.__xss=1</script>'|" "$FM/urls_bag.txt" >"$T/hostile.txt"
# and three that fail, for the page's failures: two 404s and HTML sent as a JPEG
printf '%s\n' "${BASE%/ds}/404?a" "${BASE%/ds}/404?b" "${BASE%/ds}/html/page.jpg" >>"$T/hostile.txt"
rm "$FM/urls_bag.txt"
stack_up
grep -q "^console  *http://127.0.0.1:[0-9]*/ (log in with the token in $URSA_STATE_DIR/run/console.token)" "$T/up.log" ||
    fail "ursa up does not show the console: $(cat "$T/up.log")"
P=$(cat "$URSA_STATE_DIR/run/console.port")
U="http://127.0.0.1:$P"
TOKEN=$(cat "$URSA_STATE_DIR/run/console.token")
check_eq "token file mode" "$(stat -c %a "$URSA_STATE_DIR/run/console.token")" 600
grep -q "event=started addr=127.0.0.1:$P " "$URSA_STATE_DIR/log/console.log" || fail "the console does not bind 127.0.0.1"

"$URSA" ingest --dataset fm "$FM"/urls_*.txt >"$T/ingest.out" 2>&1 || fail "ingest: $(cat "$T/ingest.out")"
"$URSA" ingest --dataset fm --label "$HOSTILE" "$T/hostile.txt" >"$T/ingest2.out" 2>&1 ||
    fail "ingest of the hostile class: $(cat "$T/ingest2.out")"
check_eq "verified" "$(state_sum fm verified)" 300
"$URSA" train --dataset fm --arch small --size 28 --bs 32 --stage 2:1e-2 >"$T/train.out" 2>&1 ||
    fail "train: $(cat "$T/train.out")"
"$URSA" audit --dataset fm --folds 2 --stage 1:1e-2 >"$T/audit.out" 2>&1 || fail "audit: $(cat "$T/audit.out")"

# ---- the HTTP surface ----
code() { curl -s -o "$T/body" -w '%{http_code}' "$@"; }
check_eq "API without a session" "$(code "$U/api/datasets")" 401
check_eq "login without X-Ursa" "$(code -X POST --data "token=$TOKEN" "$U/api/login")" 403
check_eq "a wrong token" "$(code -X POST -H 'X-Ursa: 1' --data 'token=nope' "$U/api/login")" 401
curl -s -D "$T/login.h" -c "$T/cj" -X POST -H 'X-Ursa: 1' --data "token=$TOKEN" "$U/api/login" >"$T/login.json"
grep -qi '^Set-Cookie: ursa_console=[0-9a-f]\{64\}; Path=/; HttpOnly; SameSite=Strict' "$T/login.h" ||
    fail "session cookie: $(grep -i set-cookie "$T/login.h")"
CSRF=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["csrf"])' "$T/login.json")
check_eq "API with the session" "$(code -b "$T/cj" "$U/api/datasets")" 200
# failed logins hold up their own address only: ten from 127.0.0.2, then
# that address waits (429, Retry-After) while 127.0.0.1 logs in
for i in $(seq 10); do
    code --interface 127.0.0.2 -X POST -H 'X-Ursa: 1' --data 'token=nope' "$U/api/login" >/dev/null
done
check_eq "the failing address, right token" "$(code --interface 127.0.0.2 -D "$T/lock.h" -X POST -H 'X-Ursa: 1' \
    --data "token=$TOKEN" "$U/api/login")" 429
grep -qi '^Retry-After: [1-9][0-9]*' "$T/lock.h" || fail "no Retry-After: $(cat "$T/lock.h")"
check_eq "another address meanwhile" "$(code -c "$T/cj2" -X POST -H 'X-Ursa: 1' \
    --data "token=$TOKEN" "$U/api/login")" 200
cp "$T/body" "$T/login2.json"
# logout is a state change like every other POST: X-Ursa and the CSRF token
CSRF2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["csrf"])' "$T/login2.json")
check_eq "logout without the CSRF token" "$(code -b "$T/cj2" -X POST -H 'X-Ursa: 1' "$U/api/logout")" 403
check_eq "still logged in" "$(code -b "$T/cj2" "$U/api/datasets")" 200
check_eq "logout" "$(code -b "$T/cj2" -X POST -H 'X-Ursa: 1' -H "X-CSRF-Token: $CSRF2" "$U/api/logout")" 200
check_eq "logged out" "$(code -b "$T/cj2" "$U/api/datasets")" 401
curl -s -b "$T/cj" "$U/api/suspects?dataset=fm&per=1&kind=loss" >"$T/one.json"
IMG=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["items"][0]["image"])' "$T/one.json")
JPEG=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["items"][0]["jpeg"])' "$T/one.json")
edit() { code -b "$T/cj" -X POST "$@" --data "dataset=fm&image=$IMG&op=delete" "$U/api/edit"; }
check_eq "POST without the CSRF token" "$(edit -H 'X-Ursa: 1')" 403
check_eq "POST with a wrong CSRF token" "$(edit -H 'X-Ursa: 1' -H "X-CSRF-Token: ${CSRF//[0-9]/a}")" 403
check_eq "POST without X-Ursa" "$(edit -H "X-CSRF-Token: $CSRF")" 403
check_eq "edits after refused POSTs" "$(rcli LLEN 'ursa:ds:{fm:ed}:log' | tr -d '\n')" 0
check_eq "relabel to no class" "$(code -b "$T/cj" -X POST -H 'X-Ursa: 1' -H "X-CSRF-Token: $CSRF" \
    --data "dataset=fm&image=$IMG&op=relabel&label=nope" "$U/api/edit")" 400
check_eq "an image not in the dataset" "$(code -b "$T/cj" -X POST -H 'X-Ursa: 1' -H "X-CSRF-Token: $CSRF" \
    --data "dataset=fm&image=$(printf '%032d' 0)&op=delete" "$U/api/edit")" 400
# blobs: only JPEGs, only by content hash
LIST=$(rcli SMEMBERS ursa:ds:fm:lists | head -1 | tr -d '\n')
check_eq "a URL list blob" "$(code -b "$T/cj" "$U/api/thumb?blob=$LIST")" 404
check_eq "a path for a blob" "$(code -b "$T/cj" "$U/api/thumb?blob=../../../../etc/passwd")" 400
check_eq "a model blob" "$(code -b "$T/cj" "$U/api/thumb?blob=$(rcli HGET "ursa:model:$(rcli ZRANGE ursa:models 0 0 | tr -d '\n')" blob | tr -d '\n')")" 404
check_eq "an image's thumbnail" "$(code -b "$T/cj" "$U/api/thumb?blob=$JPEG")" 200
check_eq "a thumbnail without a session" "$(code "$U/api/thumb?blob=$JPEG")" 401
curl -s -D "$T/page.h" -o /dev/null "$U/"
grep -qi "^Content-Security-Policy: default-src 'none'; script-src 'self'" "$T/page.h" || fail "CSP: $(cat "$T/page.h")"
grep -qi '^X-Content-Type-Options: nosniff' "$T/page.h" || fail "nosniff"
# labels and URLs leave the API as JSON strings, never raw
curl -s -b "$T/cj" "$U/api/dataset?name=fm" >"$T/ds.json"
python3 - "$T/ds.json" "$HOSTILE" <<'EOF' || fail "dataset JSON: $(head -c 300 "$T/ds.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert sys.argv[2] in [l["label"] for l in d["labels"]], d["labels"]
EOF

# ---- an unreliable audit says so: out-of-fold error above 25% ----
AJ=$(rcli HGET 'ursa:ds:{fm:ed}:audit' latest | tr -d '\n')
unreliable() { curl -s -b "$T/cj" "$U/api/suspects?dataset=fm&per=1" |
    python3 -c 'import json,sys; j = json.load(sys.stdin); print(j["audit_unreliable"], j["audit_warning"])'; }
rcli HSET "ursa:job:$AJ" error_rate 0.1 n_classes 3 >/dev/null
check_eq "a reliable audit" "$(unreliable)" "False "
rcli HSET "ursa:job:$AJ" error_rate 0.6 >/dev/null
case "$(unreliable)" in
"True audit $AJ got 60% of the images wrong out of fold: its suggestions are unreliable"*) ;;
*) fail "an unreliable audit in the API: $(unreliable)" ;;
esac
"$URSA" clean --dataset fm >/dev/null 2>"$T/clean.err" || fail "ursa clean: $(cat "$T/clean.err")"
grep -q "^ursa clean: warning: audit $AJ got 60% of the images wrong out of fold" "$T/clean.err" ||
    fail "ursa clean does not warn: $(cat "$T/clean.err")"

# ---- the page in Chromium ----
apt_ok() { dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed"; }
apt_ok || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; } >"$T/apt.log" 2>&1 ||
    fail "cannot install chromium: $(tail -3 "$T/apt.log")"
(cd "$ROOT/tests/browser" && [ -d node_modules/puppeteer-core ] ||
    npm install --ignore-scripts --no-audit --no-fund) >"$T/npm.log" 2>&1 || fail "npm: $(tail -3 "$T/npm.log")"
(cd "$ROOT/tests/browser" && node console_test.js "$U/" "$TOKEN" fm "$HOSTILE") \
    >"$T/page.json" 2>"$T/page.err" || fail "console test: $(cat "$T/page.err")"
log "page: $(head -c 600 "$T/page.json")"
python3 - "$T/page.json" "$HOSTILE" <<'EOF' || fail "console page: $(cat "$T/page.json")"
import json, sys
p = json.load(open(sys.argv[1]))
assert not p["errors"], p["errors"]
assert p["wrongLogin"] == "wrong token", p["wrongLogin"]
assert "fm" in p["datasetsText"], p["datasetsText"][:200]
assert p["cardsShown"] >= 3, p["cardsShown"]
assert p["afterReload"] == {"a": "relabel", "b": "relabel", "c": "delete"}, p["afterReload"]
assert p["aGivenAfter"].endswith("→ " + p["clicked"]["aTo"]), p["aGivenAfter"]
assert p["afterUndo"] == "", p["afterUndo"]
assert p["hostileOption"] and p["datasetHasHostile"], p
assert p["cmCells"] >= 100 and p["lossPaths"] >= 2, p
assert not p["xss"], "a hostile label or URL ran as HTML"
assert not any(p["overflow"].values()), p["overflow"]
assert p["unreliable"] and "suggestions are unreliable" in p["unreliable"], p["unreliable"]
assert "after: 0." in p["beforeAfter"] or "after: 1." in p["beforeAfter"], p["beforeAfter"]
# failures by reason: no duplicates, most first, and their total
rows = [r[2:] for r in p["failures"]]
assert rows[-1][0] == "total" and rows[:-1] and all(r[1] != "duplicate" for r in p["failures"]), p["failures"]
ns = [int(r[1].replace(",", "")) for r in rows[:-1]]
assert ns == sorted(ns, reverse=True) and sum(ns) == int(rows[-1][1].replace(",", "")) and sum(ns) >= 3, rows
assert "console.token" in p["loginLabel"], p["loginLabel"]
import re
assert re.search(r"[0-9,]+ images, 0 decided since the audit$", p["pageinfo"]), p["pageinfo"]
assert "null" not in p["jobText"], p["jobText"][:300]
EOF
# the page's decisions, in Redis: two relabels, a delete, and its undo
"$URSA" edits --dataset fm >"$T/edits.out"
IFS=$'\t' read -r A ATO B BTO C < <(python3 -c 'import json,sys; c = json.load(open(sys.argv[1]))["clicked"]; print("\t".join((c["a"], c["aTo"], c["b"], c["bTo"], c["c"])))' "$T/page.json")
grep -qP "\trelabel\t$A\t[^\t]*\t\Q$ATO\E\tconsole\t" "$T/edits.out" || fail "relabel by click: $(cat "$T/edits.out")"
grep -qP "\trelabel\t$B\t[^\t]*\t\Q$BTO\E\tconsole\t" "$T/edits.out" || fail "relabel by key: $(cat "$T/edits.out")"
grep -qP "\tdelete\t$C\t" "$T/edits.out" || fail "delete: $(cat "$T/edits.out")"
grep -qP "\trestore\t$C\t.*\tconsole\tundo$" "$T/edits.out" || fail "undo: $(cat "$T/edits.out")"
RJ=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["retrainJob"])' "$T/page.json")
check_eq "the retrain" "$(job_state "$RJ")" done
check_eq "the retrain's last edit seen" "$(job_field "$RJ" edit_seq)" 4
# the hostile URLs reached the page's data as they were
curl -s -b "$T/cj" "$U/api/suspects?dataset=fm&kind=loss&per=200" | grep -q '<script>window.__xss=1</script>' ||
    fail "no hostile URL in the suspects' data"
log "console: ok; $(python3 -c 'import json,sys; p = json.load(open(sys.argv[1])); print("browser run %.1f s, %s" % (p["seconds"], p["beforeAfter"]))' "$T/page.json")"
