#!/usr/bin/env bash
# test-arm64.sh: the NN engine on arm64, where it runs its plain-C kernel
# table (common/nn/kern_generic.c): cross-builds test_nn and test_nn_golden
# with Debian's gcc-aarch64-linux-gnu against the :arm64 libraries
# (multiarch) and runs them under qemu-user.
#
# qemu-user 7.2 (Debian 12) cannot start a thread on the machines this was
# written on (pthread_create never returns, even in a ten-line program), so
# the run is single-threaded (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS) and the
# three cases that need the data loader's thread are left out:
# loader_covers_each_item_once, learner_finds_lr_and_fits and
# fit_resumes_from_checkpoint. Every other engine case runs: convolutions
# against the naive one, the packed product, Winograd, finite differences,
# the PyTorch goldens (resnet18 included), ONNX round trips and checkpoints.
# Needs root for apt-get (once); takes a few minutes.
#   ops/test-arm64.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user libopenblas-dev:arm64
      libcmocka-dev:arm64 libprotobuf-c-dev:arm64 librdkafka-dev:arm64 libhiredis-dev:arm64
      libpng-dev:arm64 libwebp-dev:arm64 libcurl4-openssl-dev:arm64 libssl-dev:arm64
      libjpeg62-turbo-dev:arm64
      libgif-dev:arm64 zlib1g-dev:arm64 libgomp1:arm64 libmicrohttpd-dev:arm64
      libexpat1-dev:arm64 libjansson-dev:arm64)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    dpkg --print-foreign-architectures | grep -qx arm64 || $SUDO dpkg --add-architecture arm64
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
ops/install-deps.sh >/dev/null # protoc-c and onnx.proto, run on the host

cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=ops/cross/aarch64-linux-gnu.cmake \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-arm64 -j"$(nproc)" --target test_nn test_nn_golden
file build-arm64/bin/test_nn | grep -q aarch64

run() {
    env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        URSA_GOLDEN_DIR=tests/golden \
        URSA_TEST_SKIP=loader_covers_each_item_once,learner_finds_lr_and_fits,fit_resumes_from_checkpoint,head_fits_cached_features \
        qemu-aarch64 -L /usr/aarch64-linux-gnu "$@"
}
rc=0
run build-arm64/bin/test_nn || rc=1
run build-arm64/bin/test_nn_golden || rc=1
[ $rc -eq 0 ] && echo "test-arm64: every engine case passed on arm64 (generic kernels)" ||
    echo "test-arm64: FAILED" >&2
exit $rc
