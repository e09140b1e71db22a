# One client cannot starve the others (issue 27, defect 5), on a real
# ursa-inference, clients on their own loopback addresses (curl
# --interface, Python's source_address):
#  - 32 classify-url downloads of a URL that sends a byte a second, from
#    four addresses: a fifth address's classify-url is answered at once
#    (downloads hold a socket, not a thread), and so are /v1/models and
#    the admin reload;
#  - the ninth download in flight from one address: 429 with Retry-After;
#  - a client flooding with pixel-heavy PNGs holds at most its share of the
#    decode budget (429 past it), and another client's images are decoded.
. "$(dirname "$0")/lib.sh"
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)"
"$URSA_BIN/nn-export-demo" "$T/demo.onnx" 2>/dev/null || fail "export failed"
start_fault_server
printf 'tok' >"$T/token"
chmod 600 "$T/token"
# the slow URL hangs for 15 s (the download's low-speed limit), the images
# to decode: 800x800 zeros (1.9 MB of pixels for 2 KB of file) and a
# 1200x900 photo
export URSA_FETCH_TIMEOUT_MS=20000 URSA_FETCH_LOW_SPEED_SECS=15
/usr/bin/convert -size 800x800 xc:black "$T/zeros.png"
/usr/bin/convert -seed 5 -size 1200x900 plasma:fractal "$T/photo.png"
"$URSA_BIN/ursa-inference" --inference.model "$T/demo.onnx" --inference.port 0 \
    --inference.port-file "$T/inf.port" --inference.admin-token-file "$T/token" \
    --fetch.max-per-host 256 --inference.decode-budget-mb 16 --inference.decode-queue 4096 \
    >"$T/inference.log" 2>&1 &
INF=$!
PIDS+=("$INF")
wait_for 10 "the server" test -s "$T/inf.port"
PORT=$(cat "$T/inf.port")
B="http://127.0.0.1:$PORT"
wait_for 10 "readyz" curl -sf "$B/readyz"

# ---- slow downloads from four addresses; a fifth is answered ----
for a in 2 3 4 5; do
    for i in $(seq 8); do
        curl -s -o /dev/null -m 40 --interface "127.0.0.$a" "$B/v1/classify-url?url=$FS/slow?$a-$i" &
        PIDS+=("$!")
    done
done
# the fault server logs each request as it starts answering it
at_server() { [ "$(grep -c '^GET /slow' "$T/fs.log")" -ge 32 ]; }
for _ in $(seq 50); do at_server && break; sleep 0.1; done
log "slow downloads at the fault server: $(grep -c '^GET /slow' "$T/fs.log")"
t0=$(date +%s%N)
st=$(curl -s -o "$T/good.json" -w '%{http_code}' -m 10 --interface 127.0.0.6 \
    "$B/v1/classify-url?url=$FS/img/good.jpg" || true)
ms=$((($(date +%s%N) - t0) / 1000000))
log "classify-url behind 32 hanging downloads: $st in $ms ms"
check_eq "classify-url behind 32 hanging downloads" "$st" 200
grep -q '"predictions"' "$T/good.json" || fail "the answer: $(cat "$T/good.json")"
[ "$ms" -lt 5000 ] || fail "classify-url took $ms ms behind the hanging downloads"
check_eq "/v1/models meanwhile" "$(curl -s -o /dev/null -w '%{http_code}' -m 5 "$B/v1/models")" 200
check_eq "admin reload meanwhile" "$(curl -s -o /dev/null -w '%{http_code}' -m 10 -X POST \
    -H 'Authorization: Bearer tok' "$B/v1/admin/reload")" 200
check_eq "downloads in flight" \
    "$(curl -s "$B/metrics" | awk '$1 == "ursa_inference_downloads" {print $2}')" 32

# ---- the ninth from one address: 429, Retry-After ----
st=$(curl -s -D "$T/h429" -o "$T/b429" -w '%{http_code}' -m 5 --interface 127.0.0.2 \
    "$B/v1/classify-url?url=$FS/slow?ninth" || true)
check_eq "the ninth download from one address" "$st" 429
grep -qi '^Retry-After: [0-9]' "$T/h429" || fail "429 without Retry-After: $(cat "$T/h429")"
grep -q 'your address has 8 downloads in flight' "$T/b429" || fail "429's body: $(cat "$T/b429")"
# (the page in a file first: grep -q quitting early would SIGPIPE curl under pipefail)
metrics_to "$B/metrics" "$T/m1" || fail "no /metrics"
grep -q '^ursa_inference_fair_share_refused_total{of="downloads"} 1$' "$T/m1" ||
    fail "the refusal is not counted: $(grep fair_share "$T/m1")"

# ---- the decode budget: a flood of zero PNGs, another client's photos ----
python3 - "$PORT" "$T/zeros.png" "$T/photo.png" >"$T/fair.json" <<'EOF' || fail "decode flood: $(cat "$T/fair.json")"
import http.client, json, sys, threading, time
port, flood_img, photo_img = int(sys.argv[1]), open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()
stop = False
flood = {}
def post(conn, body):
    conn.request("POST", "/v1/classify", body=body, headers={"Content-Type": "image/png"})
    r = conn.getresponse()
    r.read()
    return r.status
def flooder():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=("127.0.0.7", 0))
    while not stop:
        try:
            st = post(conn, flood_img)
        except Exception:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=("127.0.0.7", 0))
            st = "error"
        flood[st] = flood.get(st, 0) + 1
threads = [threading.Thread(target=flooder) for _ in range(24)]
for t in threads: t.start()
time.sleep(1.5)
photo = {}
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=("127.0.0.8", 0))
for _ in range(20):
    st = post(conn, photo_img)
    photo[st] = photo.get(st, 0) + 1
    time.sleep(0.05)
stop = True
for t in threads: t.join()
json.dump({"flood": {str(k): v for k, v in flood.items()}, "photo": {str(k): v for k, v in photo.items()}}, sys.stdout)
EOF
log "decode flood: $(cat "$T/fair.json")"
python3 - "$T/fair.json" <<'EOF' || fail "the decode budget was not shared: $(cat "$T/fair.json")"
import json, sys
r = json.load(open(sys.argv[1]))
# the flooder was held to its share (429s), and the other client decoded
assert r["flood"].get("429", 0) > 0 and r["flood"].get("200", 0) > 0, r
assert r["photo"].get("200", 0) >= 19, r
EOF
metrics_to "$B/metrics" "$T/m2" || fail "no /metrics"
grep -Eq '^ursa_inference_fair_share_refused_total\{of="decode"\} [1-9]' "$T/m2" ||
    fail "decode refusals not counted: $(grep fair_share "$T/m2")"
echo "test_inference_fair: ok"
