#!/usr/bin/env bash
# demo.sh: the README's main command. Installs what is missing (Debian
# packages, Fashion-MNIST), builds ursa, then runs `ursa demo`: fast.ai's
# lesson 2 end to end on this machine with dirty data (see `ursa demo
# --help`). Arguments pass through: ops/demo.sh --full, --out DIR, --quick.
# The stack keeps running afterwards; stop it with: build/bin/ursa down
set -euo pipefail
cd "$(dirname "$0")/.."

ops/install-deps.sh # (dataset-fashion-mnist among them)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)"
exec build/bin/ursa demo "$@"
