#!/usr/bin/env bash
# demo.sh: the README's main command. Builds ursa, starts the embedded stack
# (private redis-server, ursa-broker, the daemons that exist) in ./.ursa and
# shows its status. Stop it with: build/bin/ursa down
set -euo pipefail
cd "$(dirname "$0")/.."

ops/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)"
build/bin/ursa up
echo
build/bin/ursa status
echo
echo "The stack runs in the background. Addresses for other tools:"
build/bin/ursa env
echo "Stop it with: build/bin/ursa down"
