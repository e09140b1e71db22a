#!/usr/bin/env bash
# bench-model.sh: ursa's CNN engine against PyTorch and ONNX Runtime on this
# CPU, one after another in one run (a benchmark command, not a test):
#   - resnet18 and resnet34 batch-1 latency at 224 px: ursa, PyTorch, ONNX
#     Runtime, all on the same torchvision model exported to ONNX (BN values
#     randomised so folding them is real work);
#   - training throughput at batch 16 (forward, backward, optimiser step;
#     ursa AdamW, PyTorch Adam) and the peak memory of the process.
# Prints one line per measurement and a table of ratios at the end.
#
#   ops/bench-model.sh [--iters N] [--train-iters N] [--arch resnet18|resnet34|both]
# Installs the peers first (ops/peers/install.sh: Debian python3-torch, npm
# onnxruntime-node). Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ITERS=30
TITERS=6
ARCHS="resnet18 resnet34"
while [ $# -gt 0 ]; do
    case $1 in
    --iters) ITERS=$2; shift 2 ;;
    --train-iters) TITERS=$2; shift 2 ;;
    --arch) [ "$2" = both ] || ARCHS=$2; shift 2 ;;
    *) echo "usage: $0 [--iters N] [--train-iters N] [--arch resnet18|resnet34|both]" >&2; exit 2 ;;
    esac
done

ops/install-deps.sh >/dev/null
ops/peers/install.sh >/dev/null
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
URSA=$PWD/build/bin/ursa
OUT=build/peers
mkdir -p "$OUT"
RES=$(mktemp)
trap 'rm -f "$RES"' EXIT

val() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" | tail -1; }
record() { echo "$1 $2 $3 $4" >>"$RES"; } # what arch peer value

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
for arch in $ARCHS; do
    model="$OUT/$arch.onnx"
    [ -s "$model" ] || /usr/bin/python3 ops/peers/export_resnet.py "$arch" "$model" --random-bn 2>/dev/null
    echo "== $arch, batch 1, 224 px, latency (median of $ITERS)"
    line=$("$URSA" bench-model --model "$model" --iters "$ITERS" 2>/dev/null | tail -1)
    echo "ursa        $line"
    record latency "$arch" ursa "$(echo "$line" | val latency_ms)"
    line=$(/usr/bin/python3 ops/peers/torch_bench.py --arch "$arch" --mode latency --iters "$ITERS")
    echo "pytorch     $line"
    record latency "$arch" pytorch "$(echo "$line" | val latency_ms)"
    line=$(cd ops/peers && node ort_bench.js --model "../../$model" --iters "$ITERS")
    echo "onnxruntime $line"
    record latency "$arch" onnxruntime "$(echo "$line" | val latency_ms)"

    echo "== $arch, training, batch 16, 224 px (median of $TITERS steps)"
    line=$("$URSA" bench-model --arch "$arch" --train --batch 16 --iters "$TITERS" 2>/dev/null | tr '\n' ' ')
    echo "ursa        $line"
    record train "$arch" ursa "$(echo "$line" | val throughput_ips)"
    record rss "$arch" ursa "$(echo "$line" | val peak_rss_mb)"
    line=$(/usr/bin/python3 ops/peers/torch_bench.py --arch "$arch" --mode train --optimizer adam --iters "$TITERS")
    echo "pytorch     $line"
    record train "$arch" pytorch "$(echo "$line" | val throughput_ips)"
    record rss "$arch" pytorch "$(echo "$line" | val peak_rss_mb)"
done

echo
echo "== summary (ratios > 1 favour ursa)"
awk '
{ v[$1 " " $2 " " $3] = $4; a[$2] = 1 }
END {
    for (arch in a) {
        u = v["latency " arch " ursa"]; t = v["latency " arch " pytorch"]; o = v["latency " arch " onnxruntime"]
        printf "%s latency_ms: ursa %.1f, pytorch %.1f (x%.2f), onnxruntime %.1f (x%.2f)\n", arch, u, t, t / u, o, o / u
        u = v["train " arch " ursa"]; t = v["train " arch " pytorch"]
        printf "%s train img/s: ursa %.2f, pytorch %.2f (x%.2f)\n", arch, u, t, u / t
        u = v["rss " arch " ursa"]; t = v["rss " arch " pytorch"]
        printf "%s train peak MB: ursa %.0f, pytorch %.0f (x%.2f)\n", arch, u, t, t / u
    }
}' "$RES"
