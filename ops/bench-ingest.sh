#!/usr/bin/env bash
# bench-ingest.sh: ingest throughput from URL to verified image, a benchmark
# command (not a test). Serves Fashion-MNIST (Debian dataset-fashion-mnist)
# as JPEG files from nginx on 127.0.0.1 and ingests them through the
# embedded stack, with one and with two instances of each daemon; then the
# same with photo-sized (640x480) JPEGs. Prints images/s and the CPU seconds
# each process used, so the bottleneck shows.
#
#   ops/bench-ingest.sh [--small N] [--photo N] [--cluster] [--s3]   (defaults: 70000, 3000)
# Targets on a 2-core machine: 3,000 images/s small, 300 images/s photo.
# --s3 runs one instance of each with the blobs in a real S3 server on the
# same cores (Ceph RGW on bluestore, ops/s3-server.sh) instead of the local
# directory: images/s, the ratio to the directory's, and S3 requests an
# image as the gateway logged them (targets: 1,500/s small, 150/s photo).
# --cluster adds the small runs again on a local 3-master Redis Cluster
# (redis-server --cluster-enabled yes), with the ratio to one Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
SMALL=70000
PHOTO=3000
CLUSTER=0
S3=0
while [ $# -gt 0 ]; do
    case $1 in
    --small) SMALL=$2; shift 2 ;;
    --photo) PHOTO=$2; shift 2 ;;
    --cluster) CLUSTER=1; shift ;;
    --s3) S3=1; shift ;;
    *) echo "usage: $0 [--small N] [--photo N] [--cluster] [--s3]" >&2; exit 2 ;;
    esac
done

ops/install-deps.sh >/dev/null
for p in nginx-light dataset-fashion-mnist bc; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p" >/dev/null; }
done
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
BIN=$PWD/build/bin
W=${TMPDIR:-/tmp}/ursa-bench
rm -rf "$W"
mkdir -p "$W/www/small" "$W/www/photo" "$W/nginx"
F=/usr/share/datasets/fashion-mnist
PORT=$("$BIN/ursa" --help >/dev/null 2>&1; python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT

echo "== preparing data in $W"
"$BIN/idx2jpeg" $F/train-images-idx3-ubyte.gz $F/train-labels-idx1-ubyte.gz "$W/www/small" "$BASE/small" \
    --limit "$((SMALL < 60000 ? SMALL : 60000))" >/dev/null
if [ "$SMALL" -gt 60000 ]; then
    mkdir -p "$W/test"
    "$BIN/idx2jpeg" $F/t10k-images-idx3-ubyte.gz $F/t10k-labels-idx1-ubyte.gz "$W/test" "$BASE/small" \
        --limit $((SMALL - 60000)) >/dev/null
    for d in "$W"/test/*/; do # test images go beside the training ones, named t<i>
        c=$(basename "$d")
        for f in "$d"*.jpg; do mv "$f" "$W/www/small/$c/t$(basename "$f")"; done
        sed "s|/small/$c/\([0-9]*\).jpg|/small/$c/t\1.jpg|" "$W/test/urls_$c.txt" >>"$W/www/small/urls_$c.txt"
    done
fi
"$BIN/idx2jpeg" $F/t10k-images-idx3-ubyte.gz $F/t10k-labels-idx1-ubyte.gz "$W/www/photo" "$BASE/photo" \
    --size 640x480 --limit "$PHOTO" >/dev/null
echo "small: $(cat "$W"/www/small/urls_*.txt | wc -l) URLs, $(du -sh "$W/www/small" | cut -f1); photo: $(cat "$W"/www/photo/urls_*.txt | wc -l) URLs, $(du -sh "$W/www/photo" | cut -f1)"

cat >"$W/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000;
    types { image/jpeg jpg; }
    client_body_temp_path $W/nginx/tmp;
    proxy_temp_path $W/nginx/tmp;
    fastcgi_temp_path $W/nginx/tmp;
    uwsgi_temp_path $W/nginx/tmp;
    scgi_temp_path $W/nginx/tmp;
    server { listen 127.0.0.1:$PORT; root $W/www; }
}
NGINX
nginx -c "$W/nginx/nginx.conf"
RC_PIDS=()
trap 'nginx -c "$W/nginx/nginx.conf" -s stop 2>/dev/null || true; "$BIN/ursa" down --state-dir "$W/state" >/dev/null 2>&1 || true; for p in "${RC_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done; [ -f "$W/s3/env" ] && ops/s3-server.sh stop "$W/s3" >/dev/null 2>&1 || true' EXIT

export URSA_FETCH_ALLOW=127.0.0.1/32
export URSA_INFERENCE_PORT=0 URSA_CONSOLE_PORT=0 # free ports: never a running stack's
export URSA_IMG_MIN_SIDE=8 # Fashion-MNIST is 28x28
export URSA_LOG_LEVEL=warn
TCK=$(getconf CLK_TCK)
cpu_of() { awk -v t="$TCK" '{printf "%.1f", ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# run NAME KIND INSTANCES: one ingest on a fresh stack; prints a result row
run() {
    local name=$1 kind=$2 inst=$3 S="$W/state-$1"
    if [ -n "${URSA_REDIS_URL:-}" ]; then # a fresh cluster for every run
        for p in "${ports[@]}"; do redis-cli -p "$p" FLUSHALL >/dev/null; done
    fi
    "$BIN/ursa" up --state-dir "$S" >/dev/null
    local extra=()
    if [ "$inst" -eq 2 ]; then
        URSA_STATE_DIR=$S "$BIN/ursa-crawler" 2>>"$S/log/crawler2.log" & extra+=("$!")
        URSA_STATE_DIR=$S "$BIN/ursa-verifier" 2>>"$S/log/verifier2.log" & extra+=("$!")
    fi
    sleep 8 # every member in its group before the work arrives
    declare -A pid=([broker]=$(cat "$S/run/broker.pid")
        [crawler]=$(cat "$S/run/crawler.pid") [verifier]=$(cat "$S/run/verifier.pid")
        [nginx]=$(cat "$W/nginx/nginx.pid"))
    if [ -n "${URSA_REDIS_URL:-}" ]; then # the cluster's masters
        for i in "${!RC_PIDS[@]}"; do pid[redis$((i + 1))]=${RC_PIDS[$i]}; done
    else
        pid[redis]=$(cat "$S/run/redis.pid")
    fi
    [ "$inst" -eq 2 ] && pid[crawler2]=${extra[0]} && pid[verifier2]=${extra[1]}
    [ -n "${URSA_BLOB_URL:-}" ] && pid[rgw]=$(cat "$W/s3/rgw.pid") && pid[osd]=$(cat "$W/s3/osd.pid")
    local rq0=0
    [ -n "${URSA_BLOB_URL:-}" ] && rq0=$(grep -c ' beast: ' "$W/s3/rgw.log" || true)
    declare -A c0
    for k in "${!pid[@]}"; do c0[$k]=$(cpu_of "${pid[$k]}"); done
    local nginx_w
    nginx_w=$(pgrep -P "$(cat "$W/nginx/nginx.pid")" | head -1)
    local nw0; nw0=$(cpu_of "$nginx_w")
    local t0; t0=$(date +%s.%N)
    "$BIN/ursa" ingest --state-dir "$S" --dataset "$kind" "$W"/www/"$kind"/urls_*.txt >"$S/ingest.out" 2>/dev/null
    local t1; t1=$(date +%s.%N)
    local n; n=$(grep -o '[0-9]* queued' "$S/ingest.out" | head -1 | cut -d' ' -f1)
    local ok; ok=$(awk '$1 != "label" && NF == 6 {s += $2} END {print s}' "$S/ingest.out")
    local secs; secs=$(echo "$t1 - $t0" | bc -l)
    local cpus=""
    local pw=$(cpu_of "$nginx_w")
    for k in crawler crawler2 verifier verifier2 redis redis1 redis2 redis3 broker rgw osd; do
        [ -n "${pid[$k]:-}" ] || continue
        cpus+=$(printf "%s=%.1fs " "$k" "$(echo "$(cpu_of "${pid[$k]}") - ${c0[$k]}" | bc -l)")
    done
    cpus+=$(printf "nginx=%.1fs" "$(echo "$pw - $nw0" | bc -l)")
    printf "%-22s %7s %9s %8.1f %10.0f   %s\n" "$name" "$n" "$ok" "$secs" "$(echo "$n / $secs" | bc -l)" "$cpus"
    RATE[$name]=$(echo "$n / $secs" | bc -l)
    if [ -n "${URSA_BLOB_URL:-}" ]; then
        local rq1; rq1=$(grep -c ' beast: ' "$W/s3/rgw.log" || true)
        REQS[$name]=$(echo "($rq1 - $rq0) / $n" | bc -l)
    fi
    for p in "${extra[@]}"; do kill -TERM "$p"; wait "$p" || true; done
    if [ "$S3" = 1 ] && [ "$kind" = small ]; then # the trainer's epochs on these blobs
        local tr0 g0=0
        tr0=$(cpu_of "$(cat "$S/run/trainer.pid")")
        [ -n "${URSA_BLOB_URL:-}" ] && g0=$(echo "$(cpu_of "${pid[rgw]}") + $(cpu_of "${pid[osd]}")" | bc -l)
        "$BIN/ursa" train --state-dir "$S" --dataset small --arch small --size 28 --bs 128 \
            --stage 3:1e-2 >"$S/train.out" 2>&1
        TRAINCPU[$name]=$(printf "trainer %.1f s" "$(echo "$(cpu_of "$(cat "$S/run/trainer.pid")") - $tr0" | bc -l)")
        [ -n "${URSA_BLOB_URL:-}" ] && TRAINCPU[$name]+=$(printf ", rgw+osd %.1f s" \
            "$(echo "$(cpu_of "${pid[rgw]}") + $(cpu_of "${pid[osd]}") - $g0" | bc -l)")
        local j rport
        j=$(sed -n 's/^job \(j[0-9a-f]*\) queued.*/\1/p' "$S/train.out")
        rport=$(cat "$S/redis.port")
        # seconds of each epoch (rows: stage epoch train valid error seconds)
        # (the stack's own Redis wants its password; a cluster's has none)
        EPOCHS[$name]=$(REDISCLI_AUTH=$(cat "$S/redis.password" 2>/dev/null) \
            redis-cli -p "$rport" --no-auth-warning --raw HGETALL "ursa:job:$j:rows" | paste - - |
            sort -n | awk -F'\t' '{printf "%s%s", (NR > 1 ? " " : ""), $7}')
    fi
    "$BIN/ursa" down --state-dir "$S" >/dev/null
}

declare -A RATE REQS EPOCHS TRAINCPU
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, avx512f: $(grep -c avx512f /proc/cpuinfo || true)"
echo
printf "%-22s %7s %9s %8s %10s   %s\n" "run" "urls" "verified" "seconds" "images/s" "CPU seconds by process"
run small-1-instance small 1
[ "$S3" = 1 ] || run small-2-instances small 2
run photo-1-instance photo 1
[ "$S3" = 1 ] || run photo-2-instances photo 2
if [ "$S3" = 1 ]; then
    ops/s3-server.sh start "$W/s3" --store "${URSA_BENCH_S3_STORE:-bluestore}" >/dev/null
    set -a
    . "$W/s3/env"
    set +a
    export URSA_BLOB_URL="s3://$S3_BUCKET/bench" URSA_BLOB_S3_ENDPOINT="$S3_ENDPOINT"
    run small-1-s3 small 1
    run photo-1-s3 photo 1
    unset URSA_BLOB_URL URSA_BLOB_S3_ENDPOINT
    echo
    for k in small photo; do
        awk -v a="${RATE[$k-1-s3]}" -v b="${RATE[$k-1-instance]}" -v r="${REQS[$k-1-s3]}" -v k="$k" \
            'BEGIN {printf "%s: S3 / local directory %.2f, %.2f S3 requests an image (gateway log)\n", k, a / b, r}'
    done
    echo "trainer, 3 epochs on the small images (seconds each): local ${EPOCHS[small-1-instance]}; S3 ${EPOCHS[small-1-s3]}"
    echo "CPU during the training: local ${TRAINCPU[small-1-instance]}; S3 ${TRAINCPU[small-1-s3]}"
    echo "${EPOCHS[small-1-instance]} ${EPOCHS[small-1-s3]}" | awk '{printf "trainer epochs 2-3, S3 / local directory: %.2f (first epoch %.2f)\n", ($5 + $6) / ($2 + $3), $4 / $1}'
    echo "targets with S3 (2 cores, the gateway on them too): small >= 1500 images/s, photo >= 150 images/s; epochs after the first within 10% of the directory's"
fi
if [ "$CLUSTER" = 1 ]; then
    ports=()
    for i in 1 2 3; do
        p=$(python3 "$(dirname "$0")/tools/free_port.py" --cluster)
        ports+=("$p")
        mkdir -p "$W/rc/$p"
        (cd "$W/rc/$p" && exec redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file nodes.conf --appendonly yes --appendfsync everysec --save '' \
            --logfile redis.log) &
        RC_PIDS+=("$!")
    done
    sleep 1
    redis-cli --cluster create "127.0.0.1:${ports[0]}" "127.0.0.1:${ports[1]}" "127.0.0.1:${ports[2]}" \
        --cluster-replicas 0 --cluster-yes >"$W/rc/create.log" 2>&1
    for ((n = 150; n > 0; n--)); do
        redis-cli -p "${ports[0]}" CLUSTER INFO 2>/dev/null | grep -q cluster_state:ok && break
        sleep 0.2
    done
    if [ "$n" = 0 ]; then
        echo "bench-ingest: the Redis Cluster on ports ${ports[*]} was not ok within 30 s:" >&2
        tail -n 5 "$W/rc/create.log" "$W"/rc/*/redis.log >&2
        exit 1
    fi
    export URSA_REDIS_URL="redis://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
    run small-1-cluster small 1
    run small-2-cluster small 2
    unset URSA_REDIS_URL
    awk -v a="${RATE[small-1-cluster]}" -v b="${RATE[small-1-instance]}" -v c="${RATE[small-2-cluster]}" \
        -v d="${RATE[small-2-instances]}" 'BEGIN {printf "\n3-master cluster / one Redis: %.2f (1 instance), %.2f (2 instances); target >= 0.80\n", a / b, c / d}'
fi
echo
echo "targets (2 cores): small >= 3000 images/s, photo >= 300 images/s"
