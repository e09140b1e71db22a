#!/usr/bin/env bash
# install.sh: installs the peer runtimes ursa's model benchmark and ONNX
# checker compare against. Idempotent: does nothing when all are present.
#   ops/peers/install.sh             Debian python3-torch, python3-torchvision,
#                                    python3-onnx (+ nodejs/npm if missing) and
#                                    onnxruntime-node into ops/peers/node_modules
#   ops/peers/install.sh --ort-only  only onnxruntime-node (+ nodejs/npm if
#                                    missing): what CI tests need
# apt-get needs root (or sudo); the npm part needs only the npm registry.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ORT_ONLY=0
case "${1:-}" in
    "") ;;
    --ort-only) ORT_ONLY=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--ort-only]" >&2; exit 2 ;;
esac

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
APT_UPDATED=0
apt_install() {   # apt_install PKG...: installs those not yet installed
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "peers/install: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$APT_UPDATED" -eq 0 ]; then
        $SUDO apt-get update -q
        APT_UPDATED=1
    fi
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
}

if [ "$ORT_ONLY" -eq 0 ]; then
    apt_install python3 python3-numpy python3-torch python3-torchvision python3-onnx
    /usr/bin/python3 -c 'import torch, torchvision, onnx' \
        || { echo "peers/install: torch/torchvision/onnx do not import" >&2; exit 1; }
fi

# Node: any installed node+npm will do (e.g. NodeSource 20); else Debian's.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi

# --ignore-scripts: the onnxruntime-node postinstall only fetches optional
# GPU (CUDA/TensorRT) binaries; the CPU binding and libonnxruntime for
# linux/x64 ship in the npm package itself.
if [ ! -f "$HERE/node_modules/onnxruntime-node/package.json" ]; then
    echo "peers/install: npm install onnxruntime-node into $HERE/node_modules"
    if [ -f "$HERE/package-lock.json" ]; then
        (cd "$HERE" && npm ci --ignore-scripts --no-audit --no-fund)
    else
        (cd "$HERE" && npm install --ignore-scripts --no-audit --no-fund)
    fi
fi
(cd "$HERE" && node -e 'const o = require("onnxruntime-node"); console.log("peers/install: onnxruntime-node " + o.env.versions.node + " loads")')
if [ "$ORT_ONLY" -eq 0 ]; then
    /usr/bin/python3 -c 'import torch, torchvision, onnx; print("peers/install: torch %s, torchvision %s, onnx %s" % (torch.__version__, torchvision.__version__, onnx.__version__))'
fi
