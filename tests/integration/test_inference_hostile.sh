# ursa-inference against hostile clients (issue 15), every case a real
# process over real sockets (tests/tools/http_probe.py):
#  - 1000 connections trickling header bytes while a normal client is
#    answered in under a second; the server closes them at the header
#    deadline and counts them;
#  - wrk at 512 connections, every one served, /metrics answering meanwhile;
#  - request smuggling and garbage: one answer for one request, ambiguous
#    framing refused with the connection closed, HEAD without a body;
#  - image bombs: a 35-byte GIF of a 10000x10000 screen, eight 10000x10000
#    WebPs at once (503 past the decode budget, the peak memory under it), a
#    progressive JPEG of 1000 scans (refused at once);
#  - a 248-character admin token (no suffix accepted; never a flag);
#  - the SSRF guard on IPv6 forms of 127.0.0.1;
#  - SIGTERM with trickling clients and a request in progress: out within
#    the drain timeout.
. "$(dirname "$0")/lib.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PROBE_PY="$ROOT/tests/tools/http_probe.py"
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)"
"$URSA_BIN/nn-export-demo" "$T/demo.onnx" 2>/dev/null || fail "export failed"
/usr/bin/convert -size 160x120 "plasma:fractal" -seed 1 "$T/img.jpg"
python3 -c "print('t' * 248, end='')" >"$T/token"
chmod 600 "$T/token"

# no allow list here: 127.0.0.1 in any form is refused by the SSRF guard;
# one client may hold the whole decode budget: the budget itself is under
# test here (the clients' shares of it: test_inference_fair)
env -u URSA_FETCH_ALLOW "$URSA_BIN/ursa-inference" --inference.model "$T/demo.onnx" \
    --inference.port 0 --inference.port-file "$T/inf.port" \
    --inference.admin-token-file "$T/token" --inference.header-timeout-ms 3000 \
    --inference.request-timeout-ms 6000 --inference.max-queue 2048 \
    --inference.decode-queue 2048 --inference.decode-budget-mb 512 \
    --inference.decode-client-share 100 >"$T/inference.log" 2>&1 &
INF=$!
PIDS+=("$INF")
wait_for 10 "the server" test -s "$T/inf.port"
PORT=$(cat "$T/inf.port")
B="http://127.0.0.1:$PORT"
wait_for 10 "readyz" curl -sf "$B/readyz"
code() { curl -s -o "$T/body" -w '%{http_code}' "$@"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$INF/status"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$INF/status"; }

# ---- headers every answer carries; HEAD ----
curl -s -D "$T/h" -o /dev/null "$B/" || fail "GET /"
for h in '^Date: ' '^X-Content-Type-Options: nosniff' "^Content-Security-Policy: default-src 'none'; script-src 'self'"; do
    grep -qi "$h" "$T/h" || fail "GET / lacks $h: $(cat "$T/h")"
done
check_eq "app.js" "$(code "$B/app.js")" 200
grep -q "classifyFile" "$T/body" || fail "app.js is not the page's script"

# ---- framing: smuggling and garbage ----
python3 "$PROBE_PY" framing "$PORT" --wait 2 >"$T/framing.json" || fail "framing probe"
python3 - "$T/framing.json" <<'EOF' || fail "framing: $(cat "$T/framing.json")"
import json, sys
r = json.load(open(sys.argv[1]))
def st(name): return r[name]["statuses"]
# a body that looks like a request is a body: one answer (415: not an image)
assert st("zeros_length") == [415], r["zeros_length"]
# ambiguous framing: refused, and the connection closed (nothing read after)
for name, want in (("two_lengths", 400), ("space_before_colon", 400), ("te_and_cl", 400),
                   ("te_space", 400), ("chunked", 411), ("no_colon", 400), ("no_host", 400),
                   ("version_1_7", 505), ("http_0_9", 400)):
    assert st(name) == [want] and r[name]["closed"], (name, r[name])
# libmicrohttpd 0.9.75 writes its own 400's header twice; it is the only answer
assert set(st("plus_length")) == {400} and r["plus_length"]["closed"], r["plus_length"]
# garbage: answered or closed at once; a TLS hello at the header deadline (2 s here: no answer)
assert r["garbage"]["closed"] and r["garbage"]["secs"] < 1, r["garbage"]
assert st("nul_byte") in ([200], [400]) and st("bare_lf") in ([200], [400]), r
# HEAD: headers only, and the next request on the connection is answered
assert st("head") == [200, 200] and not r["head"]["body_after_head"], r["head"]
assert st("pipelined") == [200, 200], r["pipelined"]
print("framing ok")
EOF

# ---- 1000 trickling connections; a normal client meanwhile ----
python3 "$PROBE_PY" slowloris "$PORT" --conns 1000 --secs 7 --body "$T/img.jpg" >"$T/slow.json" ||
    fail "slowloris probe"
log "slowloris: $(cat "$T/slow.json") rss=$(rss_kb) kB"
python3 - "$T/slow.json" <<'EOF' || fail "slow clients: $(cat "$T/slow.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["opened"] == 1000, r
assert r["probes"] >= 5 and r["probe_status"] == [200], r
assert r["probe_max_s"] < 1.0, r
# every trickler closed by the server at its header deadline (3 s), not before
assert r["closed_by_server"] == 1000, r
assert 2.5 <= r["first_close_s"] and r["last_close_s"] < 6.5, r
EOF
curl -sf "$B/metrics" >"$T/metrics" || fail "metrics"
awk '/^ursa_inference_http_refused_total\{reason="header_timeout"\}/ {n = $2}
     END {exit !(n >= 1000)}' "$T/metrics" || fail "header timeouts not counted: $(grep refused "$T/metrics")"
grep -q '^ursa_inference_http_connections ' "$T/metrics" || fail "no connection gauge"
grep -q '^ursa_inference_requests_total{route="none",status="400"}' "$T/metrics" ||
    fail "the layer's 400s are not counted: $(grep requests_total "$T/metrics")"

# ---- wrk at 512 connections: every connection served ----
cat >"$T/post.lua" <<EOF
local f = io.open("$T/img.jpg", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "image/jpeg"
EOF
# The model's speed is not under test here: a shared CI machine once
# classified 68 images/s, so the 512th request waited 7.5 s in the queue.
# What is under test is that no connection is refused, reset or left
# unanswered, so the timeout is far past any queue wait of a 5 s run.
wrk -t 2 -c 512 -d 5s --timeout 30s -s "$T/post.lua" "$B/v1/classify" >"$T/wrk.txt" 2>&1 &
WRK=$!
sleep 2
curl -sf -m 2 "$B/metrics" >/dev/null || fail "/metrics did not answer within 2 s during wrk"
wait "$WRK" || fail "wrk: $(cat "$T/wrk.txt")"
log "wrk -c 512: $(grep -E 'Requests/sec|requests in' "$T/wrk.txt" | tr -s ' ' | tr '\n' ' ')"
grep -q "Socket errors" "$T/wrk.txt" && fail "wrk saw socket errors: $(cat "$T/wrk.txt")"
grep -q "Non-2xx" "$T/wrk.txt" && fail "wrk saw non-2xx answers: $(cat "$T/wrk.txt")"
# wrk's clients are gone: what they left queued is dropped, not run
wait_for 30 "the queue to empty after wrk" sh -c "curl -sf '$B/metrics' | grep -q '^ursa_inference_queue_depth 0'"
metrics_to "$B/metrics" "$T/metrics-wrk" || fail "no /metrics after wrk"
grep -q '^ursa_inference_dropped_total ' "$T/metrics-wrk" || fail "no dropped_total metric"
# every one of 512 connections answered, whatever the model's speed (the
# sanitizer builds classify at a few dozen images a second)
wrk -t 2 -c 512 -d 3s --timeout 5s "$B/healthz" >"$T/wrk2.txt" 2>&1 || fail "wrk: $(cat "$T/wrk2.txt")"
log "wrk -c 512 on /healthz: $(grep -E 'Requests/sec|requests in' "$T/wrk2.txt" | tr -s ' ' | tr '\n' ' ')"
grep -qE "Socket errors|Non-2xx" "$T/wrk2.txt" && fail "wrk on /healthz: $(cat "$T/wrk2.txt")"
awk '/requests in/ {exit !($1 >= 512)}' "$T/wrk2.txt" || fail "fewer requests than connections"

# ---- image bombs ----
python3 "$PROBE_PY" gif-bomb "$T/bomb.gif"
check_eq "35-byte GIF size" "$(stat -c %s "$T/bomb.gif")" 35
before=$(rss_kb)
check_eq "GIF of a 10000x10000 screen" "$(code -m 5 -X POST --data-binary @"$T/bomb.gif" "$B/v1/classify")" 200
[ $(($(rss_kb) - before)) -lt 65536 ] || fail "the GIF grew the RSS by $(($(rss_kb) - before)) kB"

python3 "$PROBE_PY" webp-bomb "$T/bomb.webp" 10000 10000
log "a 10000x10000 WebP in $(stat -c %s "$T/bomb.webp") bytes"
hwm0=$(hwm_kb)
python3 "$PROBE_PY" concurrent "$PORT" --body "$T/bomb.webp" --n 8 >"$T/webp.json" || fail "webp probe"
hwm1=$(hwm_kb)
log "8 WebP bombs at once: $(cat "$T/webp.json"); peak RSS ${hwm0} -> ${hwm1} kB"
python3 - "$T/webp.json" <<'EOF' || fail "webp bombs: $(cat "$T/webp.json")"
import json, sys
r = json.load(open(sys.argv[1]))["statuses"]
assert set(r) <= {"200", "422", "503"}, r   # classified, refused as bad, or over the budget
assert r.get("503", 0) >= 1, r              # the budget (512 MB) holds one at a time
EOF
# the peak: the process's own (well under 512 MB before) plus one decode at most
[ "$hwm1" -lt $((hwm0 + 640 * 1024)) ] || fail "peak RSS ${hwm1} kB: the decode budget did not hold"
metrics_to "$B/metrics" "$T/metrics3" || fail "no /metrics after the WebP bombs"
grep -Eq '^ursa_inference_decode_refused_total\{reason="budget"\} [1-9]' "$T/metrics3" ||
    fail "budget refusals not counted: $(grep -E 'refused|requests_total' "$T/metrics3")"
metrics_to "$B/metrics" "$T/metrics4" || fail "no /metrics"
grep -q '^ursa_inference_decode_bytes 0$' "$T/metrics4" || fail "decode budget not given back"

/usr/bin/convert -size 2000x2000 xc:gray50 -interlace Plane -quality 90 "$T/prog.jpg"
python3 "$PROBE_PY" many-scans "$T/prog.jpg" "$T/scans.jpg" 1000
t0=$(date +%s%N)
check_eq "1000-scan JPEG" "$(code -m 10 -X POST --data-binary @"$T/scans.jpg" "$B/v1/classify")" 422
ms=$((($(date +%s%N) - t0) / 1000000))
grep -q "more than 64 scans" "$T/body" || fail "1000 scans: $(cat "$T/body")"
log "1000-scan progressive JPEG ($(stat -c %s "$T/scans.jpg") bytes) refused in ${ms} ms"
[ "$ms" -lt 2000 ] || fail "the 1000-scan JPEG took ${ms} ms"

# ---- the admin token: all of it, nothing more ----
TOK=$(cat "$T/token")
check_eq "the token" "$(code -X POST -H "Authorization: Bearer $TOK" "$B/v1/admin/reload")" 200
check_eq "the token and more" "$(code -X POST -H "Authorization: Bearer ${TOK}x" "$B/v1/admin/reload")" 403
check_eq "the token and much more" "$(code -X POST -H "Authorization: Bearer ${TOK}$(printf 'y%.0s' {1..300})" "$B/v1/admin/reload")" 403
check_eq "a prefix of it" "$(code -X POST -H "Authorization: Bearer ${TOK:0:247}" "$B/v1/admin/reload")" 403
check_eq "no token" "$(code -X POST "$B/v1/admin/reload")" 403
check_eq "GET admin" "$(code "$B/v1/admin/reload")" 405
"$URSA_BIN/ursa-inference" --inference.model "$T/demo.onnx" --inference.admin-token x >"$T/flag.log" 2>&1 &&
    fail "a token as a flag was taken"
grep -q "inference.admin-token" "$T/flag.log" || fail "the flag's refusal: $(cat "$T/flag.log")"

# ---- the SSRF guard: IPv6 forms of 127.0.0.1 ----
start_fault_server
FSPORT=$(cat "$T/fs.port")
for host in "[::127.0.0.1]" "[::ffff:127.0.0.1]" "[::ffff:0:127.0.0.1]" "[2002:7f00:1::1]"; do
    c=$(code -m 10 "$B/v1/classify-url?url=http://$host:$FSPORT/img/good.jpg")
    check_eq "classify-url $host" "$c" 422
    grep -q "blocked_address" "$T/body" || fail "$host: $(cat "$T/body")"
done
dead "$INF" && fail "the server died"

# ---- SIGTERM under trickling clients and a request in progress ----
kill "$INF"
wait_for 10 "the first server's stop" dead "$INF"
URSA_FETCH_TIMEOUT_MS=30000 URSA_FETCH_LOW_SPEED_SECS=30 \
    "$URSA_BIN/ursa-inference" --inference.model "$T/demo.onnx" --inference.port 0 \
    --inference.port-file "$T/inf2.port" --inference.drain-ms 2000 >"$T/inference2.log" 2>&1 &
INF2=$!
PIDS+=("$INF2")
wait_for 10 "the second server" test -s "$T/inf2.port"
P2=$(cat "$T/inf2.port")
python3 "$PROBE_PY" hold "$P2" --conns 300 --secs 20 >"$T/hold.json" &
HOLD=$!
PIDS+=("$HOLD")
wait_for 10 "300 held connections" grep -q held "$T/hold.json"
curl -s -o "$T/slowreq" -w '%{http_code}' -m 20 "http://127.0.0.1:$P2/v1/classify-url?url=$FS/slow" \
    >"$T/slowreq.code" &
CURL=$!
sleep 1
ms=$(term_ms "$INF2" 10 "the stop under trickling clients")
log "SIGTERM with 300 trickling clients and a download in progress: out in ${ms} ms (drain 2000)"
[ "$ms" -lt 3500 ] || fail "the stop took ${ms} ms with a drain of 2000"
wait "$CURL" || true
check_eq "the request in progress at the stop" "$(cat "$T/slowreq.code")" 503
grep -q "stopping" "$T/slowreq" || fail "the request in progress: $(cat "$T/slowreq")"
wait "$HOLD" || true
grep -q '"closed_by_server": 300' "$T/hold.json" || fail "held connections: $(cat "$T/hold.json")"
echo "test_inference_hostile: ok"
