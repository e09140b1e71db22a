#!/usr/bin/env bash
# bench-fashion-mnist.sh: time to accuracy of ursa's engine (a benchmark
# command, not a test): Fashion-MNIST (Debian dataset-fashion-mnist) from
# scratch with the small resnet and one-cycle AdamW, all 60,000 training
# images, validated on the 10,000 test images after every epoch, printing
# fast.ai's table (epoch, train_loss, valid_loss, error_rate, time).
#
#   ops/bench-fashion-mnist.sh [train-fmnist options]   (see build/bin/train-fmnist --help)
# Target: at least 94% test accuracy in under 10 minutes of training here.
set -euo pipefail
cd "$(dirname "$0")/.."
ops/install-deps.sh >/dev/null
dpkg-query -W -f='${Status}' dataset-fashion-mnist 2>/dev/null | grep -q "install ok installed" ||
    { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null; }
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
OUT=build/fashion-mnist.onnx
build/bin/train-fmnist --export "$OUT" "$@" 2>/dev/null | tee build/fashion-mnist.log
awk '/^test_accuracy=/ {
    split($1, a, "="); split($2, t, "=")
    printf "target: accuracy %.2f%% (>= 94%%: %s), training %.0f s (< 600 s: %s)\n",
        100 * a[2], (a[2] >= 0.94 ? "yes" : "no"), t[2], (t[2] < 600 ? "yes" : "no")
}
/^tta_accuracy=/ {
    split($1, a, "="); split($2, m, "=")
    printf "with test-time augmentation (--tta %s): accuracy %.2f%% (>= 94%%: %s)\n", m[2],
        100 * a[2], (a[2] >= 0.94 ? "yes" : "no")
}' build/fashion-mnist.log
