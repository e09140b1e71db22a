# cmake --install: the CLI, the daemons and the demo's helpers in one bin
# directory, each of them runs from there; the docs; and a systemd unit for
# each daemon that systemd-analyze verifies and that names the installed
# binary (--prefix is honoured at install time).
. "$(dirname "$0")/lib.sh"
BUILD=$(dirname "$URSA_BIN")
P="$T/inst"
cmake --install "$BUILD" --prefix "$P" >"$T/install.log" 2>&1 || fail "install: $(tail -5 "$T/install.log")"
for b in ursa ursa-broker ursa-crawler ursa-verifier ursa-trainer ursa-inference ursa-console \
    fault-server idx2jpeg; do
    [ -x "$P/bin/$b" ] || fail "$b not installed: $(ls "$P/bin")"
done
"$P/bin/ursa" --version | grep -Eq '^ursa [0-9]+\.[0-9]+\.[0-9]+' || fail "the installed ursa"
for d in crawler verifier trainer inference console; do
    "$P/bin/ursa-$d" --version 2>/dev/null | grep -q "^ursa-$d " || fail "the installed ursa-$d"
    u="$P/lib/systemd/system/ursa-$d.service"
    [ -f "$u" ] || fail "no unit for ursa-$d"
    check_eq "ursa-$d's ExecStart" "$(sed -n 's/^ExecStart=//p' "$u")" "$P/bin/ursa-$d"
    systemd-analyze verify "$u" >"$T/verify-$d.log" 2>&1 || fail "ursa-$d.service: $(cat "$T/verify-$d.log")"
done
[ -f "$P/share/doc/ursa/README.md" ] && [ -f "$P/share/doc/ursa/operations.md" ] ||
    fail "docs not installed: $(ls -R "$P/share" | head)"
# the installed engine runs (its OpenBLAS found through the same RUNPATH)
"$URSA_BIN/nn-export-demo" "$T/demo.onnx" 2>/dev/null || fail "export"
/usr/bin/convert -size 64x64 xc:red "$T/red.jpg"
"$P/bin/ursa" predict --model "$T/demo.onnx" "$T/red.jpg" >"$T/pred.out" 2>&1 ||
    fail "installed predict: $(cat "$T/pred.out")"
echo "test_install: ok"
