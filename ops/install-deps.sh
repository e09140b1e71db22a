#!/usr/bin/env bash
# install-deps.sh: installs the Debian packages ursa builds, tests and runs
# with, when any is missing. Needs root (or sudo) on Debian 12.
#   ops/install-deps.sh          build + test dependencies (the Ceph packages are
#                                the real S3 server of the tests, ops/s3-server.sh;
#                                prometheus: the tests check /metrics with promtool;
#                                systemd: systemd-analyze verifies the units)
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config
  librdkafka-dev libhiredis-dev libprotobuf-c-dev protobuf-c-compiler libonnx-dev
  libcmocka-dev clang libclang-rt-14-dev libomp-dev libopenblas-dev zlib1g-dev
  libjpeg62-turbo-dev libpng-dev libgif-dev libwebp-dev libcurl4-openssl-dev libssl-dev libmicrohttpd-dev libexpat1-dev libjansson-dev
  redis-server redis-tools kcat curl bc imagemagick webp python3 dataset-fashion-mnist chromium wrk
  radosgw ceph-mon ceph-osd ceph-common prometheus systemd
)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# the browser tests run puppeteer-core on Node.js: Debian's when the machine has none
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#PKGS[@]} packages present"
    exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
