#!/usr/bin/env bash
# bench-model.sh: ursa's CNN engine against PyTorch and ONNX Runtime on this
# CPU, in one run (a benchmark command, not a test):
#   - resnet18 and resnet34 batch-1 latency at 224 px: ursa, PyTorch, ONNX
#     Runtime, all on the same torchvision model exported to ONNX (BN values
#     randomised so folding them is real work);
#   - training throughput at batch 16 (forward, backward, optimiser step;
#     ursa AdamW, PyTorch Adam) and the peak memory of the process.
# The machines this runs on are shared and noisy: each measurement is taken
# in every round, the peers' interleaved with ursa's, and the medians over
# the rounds are what the table at the end compares.
#
#   ops/bench-model.sh [--rounds N] [--iters N] [--train-iters N]
#                      [--arch resnet18|resnet34|both] [--isa avx512|avx2|generic]
#
# --isa runs ursa at that instruction-set level (URSA_NN_ISA; default: the
# best this CPU has) and PyTorch's oneDNN convolutions at the same level
# (DNNL_MAX_CPU_ISA), so an AVX-512 machine can stand in for an AVX2-only
# one. ONNX Runtime has no such switch: it always runs its kernels for this
# CPU, which the summary says. Every line names the CPU and the levels.
# Installs the peers first (ops/peers/install.sh: Debian python3-torch, npm
# onnxruntime-node). Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=3
ITERS=30
TITERS=6
ARCHS="resnet18 resnet34"
ISA=""
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --iters) ITERS=$2; shift 2 ;;
    --train-iters) TITERS=$2; shift 2 ;;
    --arch) [ "$2" = both ] || ARCHS=$2; shift 2 ;;
    --isa) ISA=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--iters N] [--train-iters N] [--arch resnet18|resnet34|both] [--isa avx512|avx2|generic]" >&2; exit 2 ;;
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

cpu_best=generic
grep -q avx2 /proc/cpuinfo && grep -q fma /proc/cpuinfo && cpu_best=avx2
grep -q avx512f /proc/cpuinfo && cpu_best=avx512
[ -n "$ISA" ] || ISA=$cpu_best
case $ISA in
avx512) DNNL=AVX512_CORE ;;
avx2) DNNL=AVX2 ;;
generic) DNNL=SSE41 ;;
*) echo "bench-model: --isa avx512, avx2 or generic" >&2; exit 2 ;;
esac
export URSA_NN_ISA=$ISA
# refuses a level this CPU lacks, with the reason
"$URSA" bench-model --arch resnet18 --iters 1 >/dev/null 2>"$RES.err" || { cat "$RES.err" >&2; exit 2; }
rm -f "$RES.err"

val() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" | tail -1; }
record() { echo "$1 $2 $3 $4" >>"$RES"; } # what arch peer value
torch() { DNNL_MAX_CPU_ISA=$DNNL ONEDNN_MAX_CPU_ISA=$DNNL /usr/bin/python3 ops/peers/torch_bench.py "$@"; }

CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, best level $cpu_best"
echo "cpu: $CPU"
echo "ursa at isa=$ISA; pytorch's oneDNN at DNNL_MAX_CPU_ISA=$DNNL; onnxruntime at its own choice for this CPU ($cpu_best)"
for arch in $ARCHS; do
    model="$OUT/$arch.onnx"
    [ -s "$model" ] || /usr/bin/python3 ops/peers/export_resnet.py "$arch" "$model" --random-bn 2>/dev/null
done
for round in $(seq "$ROUNDS"); do
    for arch in $ARCHS; do
        model="$OUT/$arch.onnx"
        echo "== round $round of $ROUNDS: $arch, batch 1, 224 px, latency (median of $ITERS)"
        line=$("$URSA" bench-model --model "$model" --iters "$ITERS" 2>/dev/null | tail -1)
        echo "ursa        $line"
        record latency "$arch" ursa "$(echo "$line" | val latency_ms)"
        line=$(torch --arch "$arch" --mode latency --iters "$ITERS")
        echo "pytorch     $line"
        record latency "$arch" pytorch "$(echo "$line" | val latency_ms)"
        line=$(cd ops/peers && node ort_bench.js --model "../../$model" --iters "$ITERS")
        echo "onnxruntime $line"
        record latency "$arch" onnxruntime "$(echo "$line" | val latency_ms)"

        echo "== round $round of $ROUNDS: $arch, training, batch 16, 224 px (median of $TITERS steps)"
        line=$("$URSA" bench-model --arch "$arch" --train --batch 16 --iters "$TITERS" 2>/dev/null | tr '\n' ' ')
        echo "ursa        $line"
        record train "$arch" ursa "$(echo "$line" | val throughput_ips)"
        record rss "$arch" ursa "$(echo "$line" | val peak_rss_mb)"
        line=$(torch --arch "$arch" --mode train --optimizer adam --iters "$TITERS")
        echo "pytorch     $line"
        record train "$arch" pytorch "$(echo "$line" | val throughput_ips)"
        record rss "$arch" pytorch "$(echo "$line" | val peak_rss_mb)"
    done
done

echo
echo "== summary: medians of $ROUNDS rounds (ratios > 1 favour ursa)"
echo "cpu: $CPU; ursa isa=$ISA, pytorch oneDNN $DNNL, onnxruntime its own ($cpu_best)"
awk '
function median(key,    n, i, j, t, a) {
    n = split(vals[key], a, " ")
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{ vals[$1 " " $2 " " $3] = vals[$1 " " $2 " " $3] " " $4; archs[$2] = 1 }
END {
    for (arch in archs) {
        u = median("latency " arch " ursa"); t = median("latency " arch " pytorch"); o = median("latency " arch " onnxruntime")
        printf "%s latency_ms: ursa %.1f, pytorch %.1f (x%.2f), onnxruntime %.1f (x%.2f)\n", arch, u, t, t / u, o, o / u
        u = median("train " arch " ursa"); t = median("train " arch " pytorch")
        printf "%s train img/s: ursa %.2f, pytorch %.2f (x%.2f)\n", arch, u, t, u / t
        u = median("rss " arch " ursa"); t = median("rss " arch " pytorch")
        printf "%s train peak MB: ursa %.0f, pytorch %.0f (x%.2f)\n", arch, u, t, t / u
    }
}' "$RES"
