#!/usr/bin/env bash
# bench-sha256.sh: SHA-256 of a 200 KB image, OpenSSL's (common/base/sha256.c)
# against the plain C implementation ursa had before (commit a374875),
# built the same way, in one run, with the ratio.
#   ops/bench-sha256.sh
set -euo pipefail
cd "$(dirname "$0")/.."
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/old" "$W/shim"
git show a374875:common/base/sha256.c >"$W/old/sha256.c"
git show a374875:common/base/sha256.h >"$W/old/sha256.h"
cat >"$W/shim/util.h" <<'H'
static inline void util_hex(const unsigned char *d, int n, char *hex) {
    static const char x[] = "0123456789abcdef";
    for (int i = 0; i < n; i++) hex[2 * i] = x[d[i] >> 4], hex[2 * i + 1] = x[d[i] & 15];
    hex[2 * n] = 0;
}
H
gcc -O2 -I"$W/shim" -I"$W/old" ops/tools/bench_sha256.c "$W/old/sha256.c" -o "$W/plain"
gcc -O2 -D_GNU_SOURCE -Icommon/base ops/tools/bench_sha256.c common/base/sha256.c common/base/util.c -o "$W/openssl" -lcrypto
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) (sha_ni: $(grep -c sha_ni /proc/cpuinfo))"
p=$("$W/plain") o=$("$W/openssl")
echo "plain C: $p"
echo "openssl: $o"
[ "${p%% *}" = "${o%% *}" ] || { echo "the digests differ" >&2; exit 1; }
awk -v a="$(echo "$p" | awk '{print $2}')" -v b="$(echo "$o" | awk '{print $2}')" \
    'BEGIN {printf "ratio: %.1fx\n", b / a}'
