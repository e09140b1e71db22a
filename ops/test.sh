#!/usr/bin/env bash
# test.sh: the README's test command. Installs what is missing, builds with
# -Wall -Wextra -Werror, runs every test (unit and integration, real
# redis-server and ursa-broker), then those that exercise memory and
# threads again (not the drills whose time is waiting, scale or training
# on the instrumented engine; the list and why below) built with
# AddressSanitizer + UndefinedBehaviorSanitizer (daemons included), then
# the HTTP layer's, inference and trainer tests under ThreadSanitizer, then the
# image-decoder fuzz target over its seed corpus (ops/fuzz.sh), then the
# NN engine's tests cross-built for arm64 under qemu-user (ops/test-arm64.sh).
#   ops/test.sh            everything
#   ops/test.sh -L unit    only the quick unit tests (ctest arguments pass through)
set -euo pipefail
cd "$(dirname "$0")/.."

ops/install-deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
(cd build && ctest --output-on-failure "$@") | tee -a "$LOG"

if [ $# -eq 0 ]; then
    echo "== the tests of memory and threads again under AddressSanitizer + UndefinedBehaviorSanitizer"
    # -O1, as the sanitizers' own docs advise: -O0 made the training tests
    # 3-7x slower than the plain build and the whole run near CI's limit
    cmake -S . -B build-asan -DURSA_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
        -DCMAKE_C_FLAGS_DEBUG="-O1 -g" >/dev/null
    cmake --build build-asan -j"$jobs"
    # the tests that exercise memory and threads, not the drills whose time
    # is waiting, scale or instrumented training (CI measured 1,428 s for
    # this pass before the last eight left it; each path they take runs
    # under ASan in another test):
    #  - multihost (214 s here): its paths run in s3_pipeline, redis_cluster
    #    and trainer_crash; jobs_recover and trainer_deaths (167, 40 s): the
    #    sweep that re-sends jobs runs in every trainer, and re-sends
    #    trainer_crash's job; disk_slow (30 s of a throttled disk): the blob
    #    syncer runs in every ingest test and in unit.blob_syncer;
    #  - the demo (the longest plain test), instances and trainer_scale
    #    (more instances of daemons every test runs), kq_hold (a 12 s hold;
    #    bulk holds jobs in inference_reload);
    #  - clean (385 s, training folds on the instrumented engine): the audit
    #    runs in integration.audit, clean --apply in edit_conflicts, the
    #    cleaner in console; trainer_disk_full (62 s of waiting for space);
    #  - the restart drills redis_restart, broker_restart, kq_crash,
    #    ingest_crash, edits_recover and kq_oversize: the reconnects and
    #    redeliveries they wait for run in ingest, broker_faults, trainer_crash
    #    and kq_dlq
    (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
        ctest --output-on-failure \
        -E '^integration\.(multihost|jobs_recover|trainer_deaths|disk_slow|demo|instances|trainer_scale|kq_hold|clean|trainer_disk_full|redis_restart|broker_restart|kq_crash|ingest_crash|edits_recover|kq_oversize)$') |
        tee -a "$LOG"
    echo "== the HTTP layer, inference, trainer and console tests again under ThreadSanitizer"
    # the daemons with the most threads; the engine's arithmetic is not
    # instrumented and runs on one OpenMP thread (CMakeLists.txt, URSA_TSAN)
    cmake -S . -B build-tsan -DURSA_TSAN=ON -DCMAKE_BUILD_TYPE=Debug \
        -DCMAKE_C_FLAGS_DEBUG="-O1 -g" >/dev/null
    cmake --build build-tsan -j"$jobs" --target ursa ursa-broker ursa-crawler ursa-verifier \
        ursa-trainer ursa-inference ursa-console nn-export-demo onnx-hostile fault-server kq-probe idx2jpeg test_http \
        test_blob_s3 test_metrics test_blob_syncer
    tsan_dir="$PWD/build-tsan/tsan" tsan_supp="$PWD/tests/tsan/suppressions.txt"
    rm -rf "$tsan_dir" && mkdir -p "$tsan_dir"
    (cd build-tsan && TSAN_OPTIONS="log_path=$tsan_dir/report second_deadlock_stack=1 suppressions=$tsan_supp" \
        OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ctest --output-on-failure -L tsan) | tee -a "$LOG"
    reports=$(find "$tsan_dir" -name 'report*' | wc -l)
    [ "$reports" -eq 0 ] || cat "$tsan_dir"/report* | head -300
    echo "tsan: $reports reports" | tee -a "$LOG"
    echo "== image decoders under libFuzzer (seed corpus, then 20 s)"
    ops/fuzz.sh 20
    echo "== the NN engine on arm64: cross-built, its plain-C kernels under qemu-user"
    ops/test-arm64.sh 2>&1 | tee -a "$LOG" | grep -E "^==|PASSED|FAILED|test-arm64"
fi

# one closing line for both ctest runs (and the arm64 one)
awk '/tests passed, .* tests failed out of/ {p += $NF - $4; f += $4}
     /^test-arm64: every/ {p++} /^test-arm64: FAILED/ {f++} /^tsan: [1-9]/ {f++}
     END {printf "ops/test.sh: %d passed, %d failed\n", p, f}' "$LOG"
