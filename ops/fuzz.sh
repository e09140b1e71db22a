#!/usr/bin/env bash
# fuzz.sh: builds the image-decoder fuzz target with clang's libFuzzer and
# ASan+UBSan, then runs it over the seed corpus (the fault images of
# tests/fixtures/make_images.sh) and fuzzes on for a while.
#   ops/fuzz.sh [SECONDS]      default 20; CI runs it with 20
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
ops/install-deps.sh >/dev/null # clang and libclang-rt-14-dev (libFuzzer) among them
CC=clang cmake -S . -B build-fuzz -DURSA_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_decode >/dev/null
CORPUS=$(mktemp -d)
trap 'rm -rf "$CORPUS"' EXIT
bash tests/fixtures/make_images.sh "$CORPUS/seed" >/dev/null
rm -f "$CORPUS/seed/expected.tsv"
mkdir -p "$CORPUS/new"
echo "fuzz_decode: $(ls "$CORPUS/seed" | wc -l) seed files, then ${SECS}s of fuzzing"
# a crash is written to build-fuzz/crash-* and its report shown whole
if ! build-fuzz/bin/fuzz_decode -max_total_time="$SECS" -max_len=300000 -rss_limit_mb=2048 \
    -artifact_prefix=build-fuzz/ "$CORPUS/new" "$CORPUS/seed" >"$CORPUS/log" 2>&1; then
    grep -v '^ts=' "$CORPUS/log" | tail -n 40
    exit 1
fi
tail -n 3 "$CORPUS/log"
