#!/usr/bin/env bash
# bench-inference.sh: ursa-inference under wrk (POST /v1/classify with a
# fixed JPEG, keep-alive) at concurrency 1, 8 and 64, for the small
# Fashion-MNIST resnet (28 px) and resnet34 (224 px), beside the engine's
# own throughput from `ursa bench-model` in the same run, with the ratios
# the inference issue sets as targets:
#   resnet34: served throughput >= 90% of the engine's at the server's batch size
#   small:    >= 3,000 requests/s
#   both:     p99 < 4 x p50 at concurrency 8
# then the small model at concurrency 8 while SLOW (1000) connections trickle
# (target p99 < 100 ms), and bench-decode on a 4000x3000 JPEG (the time and
# peak memory of decoding it whole, as before, and scaled, as now).
# Everything runs on this machine: wrk shares its cores, so it runs one
# thread (one drives 64 connections on a few percent of a core).
#   ops/bench-inference.sh [SECONDS_PER_RUN]      (default 10)
# Environment, per model: SMALL_MAXB and R34_MAXB (inference.max-batch: 4
# and 8), SMALL_INST and R34_INST (inference.instances: 2 and 1); WRK_T
# (wrk threads, 1); SLOW (trickling connections, 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
BIN=build/bin
command -v wrk >/dev/null || { echo "bench-inference: apt-get install wrk" >&2; exit 1; }
[ -x "$BIN/ursa-inference" ] || { echo "bench-inference: build first (ops/demo.sh or cmake)" >&2; exit 1; }
W=$(mktemp -d)
SRV=""
trap '[ -n "$SRV" ] && kill "$SRV" 2>/dev/null; rm -rf "$W"' EXIT
SMALL_MAXB=${SMALL_MAXB:-4} # the server's inference.max-batch
R34_MAXB=${R34_MAXB:-8}
SMALL_INST=${SMALL_INST:-2} # one instance a core: the small model's batches need no team
R34_INST=${R34_INST:-1}     # one instance on both cores: resnet34's latency halves
WRK_T=${WRK_T:-1}

"$BIN/ursa" bench-model --arch small-resnet --export "$W/small.onnx" --iters 3 >/dev/null 2>&1
"$BIN/ursa" bench-model --arch resnet34 --export "$W/r34.onnx" --iters 1 >/dev/null 2>&1
/usr/bin/convert -size 28x28 gradient:gray20-gray90 -quality 90 "$W/small.jpg"
/usr/bin/convert -size 500x375 plasma:fractal -seed 7 -quality 90 "$W/photo.jpg"

engine() { # MODEL BATCH -> images/s
    "$BIN/ursa" bench-model --model "$1" --batch "$2" --iters 20 2>/dev/null |
        sed -n 's/.*throughput_ips=\([0-9.]*\).*/\1/p'
}
post_lua() { # IMAGE: wrk's script posting it
    cat >"$W/post.lua" <<LUA
wrk.method = "POST"
local f = io.open("$1", "rb")
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "image/jpeg"
LUA
}
ms() { # PERCENTILE WRK_OUTPUT: that latency in ms
    awk -v p="$1" '$1 == p {v = $2; if (v ~ /us$/) {sub(/us/, "", v); v /= 1000}
       else if (v ~ /ms$/) sub(/ms/, "", v); else if (v ~ /s$/) {sub(/s/, "", v); v *= 1000}
       print v}' "$2"
}

printf '%-8s %5s %12s %9s %9s %9s\n' model conc 'requests/s' 'p50_ms' 'p99_ms' 'p99/p50'
for m in small r34; do
    img="$W/photo.jpg"; [ $m = small ] && img="$W/small.jpg"
    post_lua "$img"
    rm -f "$W/port"
    inst=$R34_INST; maxb=$R34_MAXB
    [ $m = small ] && inst=$SMALL_INST && maxb=$SMALL_MAXB
    "$BIN/ursa-inference" --inference.model "$W/$m.onnx" --inference.port 0 \
        --inference.port-file "$W/port" --inference.max-batch $maxb --log.level warn \
        --inference.instances $inst >"$W/$m.log" 2>&1 &
    SRV=$!
    for _ in $(seq 100); do [ -s "$W/port" ] && break; sleep 0.1; done
    URL="http://127.0.0.1:$(cat "$W/port")/v1/classify"
    wrk -t1 -c1 -d2s -s "$W/post.lua" "$URL" >/dev/null # warm up
    for c in 1 8 64; do
        t=$WRK_T; [ $c = 1 ] && t=1
        wrk -t$t -c$c -d${SECS}s --timeout 10s --latency -s "$W/post.lua" "$URL" >"$W/wrk.$m.$c"
        rps=$(awk '/Requests\/sec/ {print $2}' "$W/wrk.$m.$c")
        p50=$(ms 50% "$W/wrk.$m.$c"); p99=$(ms 99% "$W/wrk.$m.$c")
        bad=$(grep -E 'Non-2xx|Socket errors' "$W/wrk.$m.$c" | tr -s ' ' || true)
        printf '%-8s %5d %12.1f %9.2f %9.2f %9.2f %s\n' $m $c "$rps" "$p50" "$p99" \
            "$(echo "$p99 / $p50" | bc -l)" "$bad"
        eval "RPS_${m}_$c=$rps; P50_${m}_$c=$p50; P99_${m}_$c=$p99"
    done
    kill "$SRV"; wait "$SRV" 2>/dev/null || true; SRV=""
    eval "ENG_${m}_1=$(engine "$W/$m.onnx" 1); ENG_${m}_B=$(engine "$W/$m.onnx" $maxb)"
done

# the small model again, at concurrency 8, while SLOW connections trickle a
# header byte a second (closed at the header deadline and opened again)
SLOW=${SLOW:-1000}
ulimit -n $((SLOW + 1024)) 2>/dev/null || true
rm -f "$W/port"
"$BIN/ursa-inference" --inference.model "$W/small.onnx" --inference.port 0 \
    --inference.port-file "$W/port" --inference.max-batch $SMALL_MAXB --log.level warn \
    --inference.instances $SMALL_INST >"$W/slow.log" 2>&1 &
SRV=$!
for _ in $(seq 100); do [ -s "$W/port" ] && break; sleep 0.1; done
PORT=$(cat "$W/port")
python3 tests/tools/http_probe.py hold "$PORT" --conns "$SLOW" --secs $((SECS + 5)) --trickle \
    --reopen >"$W/hold.json" &
HOLD=$!
for _ in $(seq 100); do grep -q held "$W/hold.json" 2>/dev/null && break; sleep 0.1; done
post_lua "$W/small.jpg"
wrk -t1 -c8 -d${SECS}s --timeout 10s --latency -s "$W/post.lua" "http://127.0.0.1:$PORT/v1/classify" >"$W/wrk.slow" &
WRK=$!
sleep $((SECS / 2)) # midway (the trickling ones are closed at 10 s and opened again)
open_conns=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^ursa_inference_http_connections / {print $2}')
wait "$WRK"
wait "$HOLD" || true
kill "$SRV"; wait "$SRV" 2>/dev/null || true; SRV=""
RPS_slow=$(awk '/Requests\/sec/ {print $2}' "$W/wrk.slow")
P50_slow=$(ms 50% "$W/wrk.slow"); P99_slow=$(ms 99% "$W/wrk.slow")
bad=$(grep -E 'Non-2xx|Socket errors' "$W/wrk.slow" | tr -s ' ' || true)

# a 4000x3000 photo into a 224 px model and through the verifier: whole
# then shrunk (as before) against decoded scaled (now)
/usr/bin/convert -size 4000x3000 plasma:fractal -seed 11 -quality 90 "$W/big.jpg"
"$BIN/bench-decode" "$W/big.jpg" --iters 7 >"$W/decode.txt"

echo
printf 'engine (ursa bench-model): small %.0f img/s at batch 1, %.0f at batch %d; resnet34 %.1f at batch 1, %.1f at batch %d\n' \
    "$ENG_small_1" "$ENG_small_B" $SMALL_MAXB "$ENG_r34_1" "$ENG_r34_B" $R34_MAXB
best_r34=$(printf '%s\n' "$RPS_r34_1" "$RPS_r34_8" "$RPS_r34_64" | sort -g | tail -1)
best_small=$(printf '%s\n' "$RPS_small_1" "$RPS_small_8" "$RPS_small_64" | sort -g | tail -1)
printf 'resnet34: served %.1f requests/s = %.2f of the engine at batch %d (target >= 0.90)\n' \
    "$best_r34" "$(echo "$best_r34 / $ENG_r34_B" | bc -l)" $R34_MAXB
printf 'small: served %.0f requests/s (target >= 3000) = %.2f of the engine at batch %d\n' \
    "$best_small" "$(echo "$best_small / $ENG_small_B" | bc -l)" $SMALL_MAXB
printf 'p99/p50 at concurrency 8: small %.2f, resnet34 %.2f (target < 4)\n' \
    "$(echo "$P99_small_8 / $P50_small_8" | bc -l)" "$(echo "$P99_r34_8 / $P50_r34_8" | bc -l)"
printf 'small at concurrency 8 with %d slow connections trickling (%s open midway): %.0f requests/s, p50 %.2f ms, p99 %.2f ms (target p99 < 100 ms) %s\n' \
    "$SLOW" "${open_conns:-?}" "$RPS_slow" "$P50_slow" "$P99_slow" "$bad"
cat "$W/decode.txt"
