# ursa-inference holds request bodies within one budget for all connections
# (inference.max-body-total-mb), however many send them: connections that
# declare large bodies and trickle them cannot take the server's memory.
# Past the budget a request gets 503 with Retry-After; a small request is
# still served meanwhile; the bytes come back when the senders close.
. "$(dirname "$0")/lib.sh"
"$URSA_BIN/nn-export-demo" "$T/demo.onnx" 2>/dev/null || fail "export failed"
/usr/bin/convert -size 160x120 "plasma:fractal" -seed 1 "$T/img.jpg"
"$URSA_BIN/ursa-inference" --inference.model "$T/demo.onnx" --inference.port 0 \
    --inference.port-file "$T/inf.port" --inference.max-body 4000000 \
    --inference.max-body-total-mb 8 --inference.request-timeout-ms 60000 >"$T/inference.log" 2>&1 &
INF=$!
PIDS+=("$INF")
wait_for 10 "the server" test -s "$T/inf.port"
PORT=$(cat "$T/inf.port")
B="http://127.0.0.1:$PORT"
wait_for 10 "readyz" curl -sf "$B/readyz"
body_bytes() { curl -sf "$B/metrics" | awk '/^ursa_inference_http_body_bytes / {print $2}'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$INF/status"; }
# the engine's first pass allocates its buffers: the baseline is after it
for i in 1 2 3; do curl -sf -o /dev/null -X POST --data-binary @"$T/img.jpg" "$B/v1/classify" || fail "warm-up"; done
RSS0=$(rss_kb)

# three senders of 3,000,000-byte bodies, each stopping 100,000 bytes short:
# two fit in 8 MB, the third is refused at its headers
python3 - "$PORT" "$T" <<'EOF' &
import socket, sys, time
port, T = int(sys.argv[1]), sys.argv[2]
held = []
for i in range(3):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
              b"Content-Length: 3000000\r\n\r\n")
    s.settimeout(0.5)
    answer = b""
    try:
        s.sendall(b"\xff" * 2900000)
        answer = s.recv(4096)
    except (socket.timeout, OSError) as e:
        if not answer:
            try:
                answer = s.recv(4096)
            except (socket.timeout, OSError):
                pass
    open("%s/sender%d" % (T, i), "wb").write(answer or b"(held)")
    held.append(s)
open(T + "/senders.ready", "w").write("")
while not __import__("os").path.exists(T + "/senders.stop"):
    time.sleep(0.1)
for s in held:
    s.close()
EOF
SENDERS=$!
PIDS+=("$SENDERS")
wait_for 30 "the senders" test -e "$T/senders.ready"
check_eq "first sender" "$(head -c 6 "$T/sender0")" "(held)"
check_eq "second sender" "$(head -c 6 "$T/sender1")" "(held)"
grep -q "^HTTP/1.1 503" "$T/sender2" || fail "the third sender was not refused: $(head -c 300 "$T/sender2")"
grep -qi "^Retry-After: 1" "$T/sender2" || fail "no Retry-After: $(head -c 300 "$T/sender2")"
grep -q "request bodies in memory are at the server's budget" "$T/sender2" ||
    fail "the reason: $(head -c 400 "$T/sender2")"
check_eq "body bytes held" "$(body_bytes)" 6000000
# a small request still fits
check_eq "a small image meanwhile" "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$T/img.jpg" "$B/v1/classify")" 200
touch "$T/senders.stop"
wait "$SENDERS" 2>/dev/null || true
wait_for 15 "the bodies given back" bash -c "[ \"\$(curl -sf $B/metrics | awk '/^ursa_inference_http_body_bytes / {print \$2}')\" = 0 ]"
RSS1=$(rss_kb)
log "rss: ${RSS0} KB before, ${RSS1} KB after the senders closed"
[ $((RSS1 - RSS0)) -lt 4096 ] || fail "memory kept after the bodies ended: ${RSS0} KB -> ${RSS1} KB"
echo "test_inference_bodies: ok"
