# A full blob store is backpressure, not a request storm: the crawler keeps
# what it downloaded, stops fetching, says "DEGRADED: blob store full" in
# `ursa status`, downloads nothing twice and logs little while it waits, and
# goes on by itself when space comes back, with every URL counted once.
# The blob store is a real 2 MB tmpfs filled to the last byte (needs root,
# as CI runs; the test says so rather than skip).
. "$(dirname "$0")/lib.sh"
N=40
B="$T/blobs"
mkdir -p "$B"
mount -t tmpfs -o size=2m tmpfs "$B" 2>"$T/mount.log" ||
    fail "cannot mount a tmpfs for the full disk (run as root): $(cat "$T/mount.log")"
on_cleanup umount -l "$B"
export URSA_BLOB_DIR="$B" URSA_BLOB_MIN_FREE_MB=0
start_fault_server
stack_up
# full to the last byte but for 8 KB, the room the URL list itself needs
# (ingest stores it as a blob before it accepts a URL)
dd if=/dev/zero of="$B/room" bs=8k count=1 2>/dev/null
dd if=/dev/zero of="$B/ballast" bs=64k 2>/dev/null || true # until ENOSPC
dd if=/dev/zero of="$B/ballast2" bs=4k 2>/dev/null || true
rm -f "$B/room"
log "blob store: $(df -h "$B" | tail -1)"

seq 0 $((N - 1)) | sed "s|^|$FS/gen/|; s|\$|.jpg|" >"$T/urls_gen.txt"
"$URSA" ingest --dataset full --no-wait "$T/urls_gen.txt" >"$T/ingest.log" 2>&1 ||
    fail "ingest --no-wait"
status_text() { "$URSA" status 2>&1 || true; } # exits 1 while a daemon is degraded
degraded() { status_text | grep -q '^crawler .*DEGRADED: blob store full'; }
wait_for 30 "ursa status to say the crawler is degraded" degraded
"$URSA" status >"$T/status.log" 2>&1 && fail "ursa status exits 0 with a degraded daemon"
log "$(grep '^crawler' "$T/status.log")"
fetches() { grep -c 'GET /gen/' "$T/fs.log" || true; }
n1=$(fetches)
lines1=$(wc -l <"$URSA_STATE_DIR/log/crawler.log")
sleep 4
n2=$(fetches)
lines2=$(wc -l <"$URSA_STATE_DIR/log/crawler.log")
log "while full: $n1 then $n2 downloads, $((lines2 - lines1)) log lines in 4 s"
check_eq "downloads while the disk stays full" "$n2" "$n1"
[ $((lines2 - lines1)) -le 5 ] || fail "crawler logged $((lines2 - lines1)) lines in 4 s while waiting"
[ "$(state_sum full verified)" -lt 5 ] || fail "$(state_sum full verified) verified with a full disk"
grep -q 'event=degraded why="blob store full' "$URSA_STATE_DIR/log/crawler.log" ||
    fail "the crawler did not name the full disk"

rm -f "$B/ballast" "$B/ballast2"
wait_for 60 "every URL final once space is back" all_final full
check_eq "verified" "$(state_sum full verified)" $N
check_eq "total" "$(count_of full total)" $N
dups=$(grep 'GET /gen/' "$T/fs.log" | sort | uniq -d | wc -l)
check_eq "URLs downloaded twice" "$dups" 0
healthy() { "$URSA" status >"$T/status2.log" 2>&1 && ! grep -q DEGRADED "$T/status2.log"; }
wait_for 10 "ursa status healthy again" healthy
grep -q 'event=degraded_over' "$URSA_STATE_DIR/log/crawler.log" || fail "no degraded_over event"
echo "test_disk_full: ok"
