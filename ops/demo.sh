#!/usr/bin/env bash
# demo.sh: the README's main command, the lesson end to end on this machine.
# Builds ursa, starts the embedded stack (private redis-server, ursa-broker,
# crawler, verifier, trainer, inference) in ./.ursa, serves 2,000
# Fashion-MNIST images as JPEG files from a local HTTP server (real photos
# are not reachable offline), ingests their URL lists, trains the small
# resnet, shows what it gets wrong, and classifies an image over HTTP.
# The stack keeps running: the page is on http://127.0.0.1:<port>/ (printed
# at the end). Stop it with: build/bin/ursa down
set -euo pipefail
cd "$(dirname "$0")/.."

ops/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)"
U=build/bin/ursa

# the demo's images come from 127.0.0.1 and are 28 px: let the daemons take them
export URSA_FETCH_ALLOW=127.0.0.1/32 URSA_IMG_MIN_SIDE=16
# the server takes a free port (run/inference.port) rather than fail on a busy 8080
export URSA_INFERENCE_PORT=${URSA_INFERENCE_PORT:-0}
$U up
echo
D=.ursa/demo
mkdir -p "$D/fm"
rm -f "$D/fm.port"
build/bin/fault-server "$D/fm" "$D/fm.port" >"$D/fm.log" 2>&1 &
FS_PID=$!
trap 'kill $FS_PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -s "$D/fm.port" ] && break; sleep 0.1; done
F=/usr/share/datasets/fashion-mnist
build/bin/idx2jpeg "$F/t10k-images-idx3-ubyte.gz" "$F/t10k-labels-idx1-ubyte.gz" "$D/fm" \
    "http://127.0.0.1:$(cat "$D/fm.port")/ds" --limit 2000

echo; echo "== ursa ingest: 10 URL lists, one a class"
$U ingest --dataset fashion "$D"/fm/urls_*.txt
$U status --dataset fashion

echo; echo "== ursa train: the small resnet, one-cycle, two stages"
$U train --dataset fashion --arch small --size 28 --bs 64 --stage 3:1e-2 --stage 2:1e-3:1e-2 | tee "$D/train.out"
MODEL=$(sed -n 's/^model \([^:]*\):.*/\1/p' "$D/train.out")

echo; echo "== ursa interp: what the model gets wrong"
$U interp "$MODEL" --top-losses 5 --plot "$D/confusion.svg"

echo; echo "== ursa-inference: the model served over HTTP"
PORT=$(cat .ursa/run/inference.port)
for _ in $(seq 100); do
    # (not curl | grep -q: grep's early exit would give curl a SIGPIPE)
    grep -q "\"serving\": {\"id\": \"$MODEL\"" <<<"$(curl -sf "http://127.0.0.1:$PORT/v1/models")" && break
    sleep 0.2
done
IMGS=("$D"/fm/sneaker/*.jpg) # (ls | head would SIGPIPE ls, fatal under pipefail)
IMG=${IMGS[0]}
echo "curl -X POST --data-binary @$IMG 'http://127.0.0.1:$PORT/v1/classify?top=3'"
curl -s -X POST --data-binary @"$IMG" "http://127.0.0.1:$PORT/v1/classify?top=3"
echo
echo "The stack runs in the background; the page: http://127.0.0.1:$PORT/"
$U env
echo "Stop it with: build/bin/ursa down"
