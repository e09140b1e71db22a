#!/usr/bin/env bash
# bench-ingest.sh: ingest throughput from URL to verified image, a benchmark
# command (not a test). Serves Fashion-MNIST (Debian dataset-fashion-mnist)
# as JPEG files from nginx on 127.0.0.1 and ingests them through the
# embedded stack, with one and with two instances of each daemon; then the
# same with photo-sized (640x480) JPEGs. Prints images/s and the CPU seconds
# each process used, so the bottleneck shows.
#
#   ops/bench-ingest.sh [--small N] [--photo N] [--cluster]   (defaults: 70000, 3000)
# Targets on a 2-core machine: 3,000 images/s small, 300 images/s photo.
# --cluster adds the small runs again on a local 3-master Redis Cluster
# (redis-server --cluster-enabled yes), with the ratio to one Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
SMALL=70000
PHOTO=3000
CLUSTER=0
while [ $# -gt 0 ]; do
    case $1 in
    --small) SMALL=$2; shift 2 ;;
    --photo) PHOTO=$2; shift 2 ;;
    --cluster) CLUSTER=1; shift ;;
    *) echo "usage: $0 [--small N] [--photo N] [--cluster]" >&2; exit 2 ;;
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
trap 'nginx -c "$W/nginx/nginx.conf" -s stop 2>/dev/null || true; "$BIN/ursa" down --state-dir "$W/state" >/dev/null 2>&1 || true; for p in "${RC_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done' EXIT

export URSA_FETCH_ALLOW=127.0.0.1/32
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
    for k in crawler crawler2 verifier verifier2 redis redis1 redis2 redis3 broker; do
        [ -n "${pid[$k]:-}" ] || continue
        cpus+=$(printf "%s=%.1fs " "$k" "$(echo "$(cpu_of "${pid[$k]}") - ${c0[$k]}" | bc -l)")
    done
    cpus+=$(printf "nginx=%.1fs" "$(echo "$pw - $nw0" | bc -l)")
    printf "%-22s %7s %9s %8.1f %10.0f   %s\n" "$name" "$n" "$ok" "$secs" "$(echo "$n / $secs" | bc -l)" "$cpus"
    RATE[$name]=$(echo "$n / $secs" | bc -l)
    for p in "${extra[@]}"; do kill -TERM "$p"; wait "$p" || true; done
    "$BIN/ursa" down --state-dir "$S" >/dev/null
}

declare -A RATE
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, avx512f: $(grep -c avx512f /proc/cpuinfo || true)"
echo
printf "%-22s %7s %9s %8s %10s   %s\n" "run" "urls" "verified" "seconds" "images/s" "CPU seconds by process"
run small-1-instance small 1
run small-2-instances small 2
run photo-1-instance photo 1
run photo-2-instances photo 2
if [ "$CLUSTER" = 1 ]; then
    ports=()
    for i in 1 2 3; do
        p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
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
    until redis-cli -p "${ports[0]}" CLUSTER INFO | grep -q cluster_state:ok; do sleep 0.2; done
    export URSA_REDIS_URL="redis://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
    run small-1-cluster small 1
    run small-2-cluster small 2
    unset URSA_REDIS_URL
    awk -v a="${RATE[small-1-cluster]}" -v b="${RATE[small-1-instance]}" -v c="${RATE[small-2-cluster]}" \
        -v d="${RATE[small-2-instances]}" 'BEGIN {printf "\n3-master cluster / one Redis: %.2f (1 instance), %.2f (2 instances); target >= 0.80\n", a / b, c / d}'
fi
echo
echo "targets (2 cores): small >= 3000 images/s, photo >= 300 images/s"
