# `ursa up` never half-starts. With the console's default port (8090) held
# by another process, up moves the console to a free port and says so; a
# second stack on the same host (its own state dir) moves the inference
# server and the console off the first one's ports, and both are healthy
# side by side. A console port set explicitly and taken, or a daemon that
# exits at start, fails up with the reason, and up stops everything it
# started: no daemon is left holding a port.
. "$(dirname "$0")/lib.sh"
unset URSA_INFERENCE_PORT URSA_CONSOLE_PORT # the defaults, 8080 and 8090, as a user has them
A=$URSA_STATE_DIR B="$T/b" C="$T/c"
on_cleanup "URSA_STATE_DIR='$B' '$URSA' down >/dev/null 2>&1"
on_cleanup "URSA_STATE_DIR='$C' '$URSA' down >/dev/null 2>&1"

# another process on 8090 (if something holds it already, so much the better)
python3 -c 'import socket, time
s = socket.socket()
s.bind(("127.0.0.1", 8090))
s.listen()
time.sleep(600)' 2>/dev/null &
PIDS+=("$!")
sleep 0.3
port_of() { cat "$1/run/$2.port"; }
answers() { curl -sf -m 5 "http://127.0.0.1:$1/healthz" | grep -qx ok; }

"$URSA" up >"$T/a.log" 2>&1 || fail "up A with 8090 taken: $(cat "$T/a.log")"
grep -Eq '^console +port 8090 is taken; using [0-9]+$' "$T/a.log" || fail "up A: $(cat "$T/a.log")"
AC=$(port_of "$A" console) AI=$(port_of "$A" inference)
[ "$AC" != 8090 ] || fail "A's console on the taken port"
grep -q "^console  *http://127.0.0.1:$AC/ " "$T/a.log" || fail "up A shows another console: $(cat "$T/a.log")"

URSA_STATE_DIR=$B "$URSA" up >"$T/b.log" 2>&1 || fail "up B beside A: $(cat "$T/b.log")"
BC=$(port_of "$B" console) BI=$(port_of "$B" inference)
[ "$BI" != "$AI" ] && [ "$BC" != "$AC" ] && [ "$BC" != 8090 ] ||
    fail "B shares a port with A: inference $AI/$BI, console $AC/$BC"
grep -Eq "^inference +port $AI is taken; using $BI$" "$T/b.log" || [ "$AI" != 8080 ] ||
    fail "up B did not say the inference port moved: $(cat "$T/b.log")"
for p in "$AI" "$AC" "$BI" "$BC"; do answers "$p" || fail "nothing answers /healthz on $p"; done
"$URSA" status >"$T/sa.txt" 2>&1 || fail "status A: $(cat "$T/sa.txt")"
URSA_STATE_DIR=$B "$URSA" status -o json >"$T/sb.json" 2>&1 || fail "status B: $(cat "$T/sb.json")"
check_eq "B's live instances (its own Redis)" \
    "$(python3 -c 'import json,sys; print(sum(i["state"] == "live" for i in json.load(open(sys.argv[1]))["instances"]))' "$T/sb.json")" 5

# an explicit console port that is taken: up fails and leaves nothing running
set +e
URSA_STATE_DIR=$C URSA_CONSOLE_PORT=8090 "$URSA" up >"$T/c.log" 2>&1; rc=$?
set -e
check_eq "up with console.port taken: exit" "$rc" 1
grep -q '^ursa: console.port 8090 is taken by another process (set explicitly' "$T/c.log" ||
    fail "up C: $(cat "$T/c.log")"
nothing_left() {
    for f in "$C"/run/*.pid; do
        [ -e "$f" ] || continue
        dead "$(cat "$f")" || fail "$(basename "$f" .pid) still runs after up failed: $(cat "$T/c.log")"
    done
    if URSA_STATE_DIR=$C "$URSA" status >"$T/sc.txt" 2>&1; then fail "status C exit 0"; fi
    grep -Eq '^redis +- +down' "$T/sc.txt" || fail "C's redis after up failed: $(cat "$T/sc.txt")"
}
nothing_left

# a daemon that exits at start (a bad setting): up says which and why, and
# stops the daemons that did start
set +e
URSA_STATE_DIR=$C URSA_TRAINER_INSTANCE='two words' "$URSA" up >"$T/c2.log" 2>&1; rc=$?
set -e
check_eq "up with a trainer that cannot start: exit" "$rc" 1
grep -q '^ursa: trainer exited at start: trainer: trainer.instance: expected' "$T/c2.log" ||
    fail "up C: $(cat "$T/c2.log")"
grep -q '^stopped crawler  pid=' "$T/c2.log" || fail "up C did not stop the crawler: $(cat "$T/c2.log")"
grep -q '^started redis' "$T/c2.log" && grep -q '^stopped redis' "$T/c2.log" ||
    fail "up C did not stop its redis: $(cat "$T/c2.log")"
nothing_left

# A and B were not touched
for p in "$AI" "$AC" "$BI" "$BC"; do answers "$p" || fail "$p stopped answering"; done
"$URSA" status >/dev/null 2>&1 || fail "status A after the failed ups"
echo "test_up_ports: ok"
