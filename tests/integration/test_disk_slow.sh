# A slow blob store is backpressure, not failures: with the blobs on a real
# ext4 whose block device is throttled to 30 write IOPS and 1 MB/s, every
# good URL is downloaded once and verified, none fails a timeout while the
# crawler waits for the disk (its syncs run on a thread of their own, its
# downloads on the loop's timers). Prints the ingest rate and where the
# crawler's time went (its blob syncs).
# The disk is a loop device throttled by the blkio controller of cgroup v1
# (blkio.throttle.*_device of the root group, which also holds the kernel's
# writeback and journal threads); needs root, as CI runs.
. "$(dirname "$0")/lib.sh"
N=${URSA_SLOW_N:-150}
IOPS=${URSA_SLOW_IOPS:-30}
B="$T/blobs"
CG=/sys/fs/cgroup/blkio
mkdir -p "$B"
[ -w "$CG/blkio.throttle.write_iops_device" ] ||
    fail "no writable $CG/blkio.throttle.write_iops_device (cgroup v1 blkio, as root)"
truncate -s 64M "$T/disk.img"
LOOP=$(losetup -f --show "$T/disk.img" 2>"$T/mount.log") ||
    fail "losetup: $(cat "$T/mount.log")"
DEV=$(lsblk -dno MAJ:MIN "$LOOP" | tr -d ' ')
slow_disk_off() {
    echo "$DEV 0" >"$CG/blkio.throttle.write_iops_device" || true
    echo "$DEV 0" >"$CG/blkio.throttle.write_bps_device" || true
    umount -l "$B" 2>/dev/null || true
    losetup -d "$LOOP" || true
}
on_cleanup slow_disk_off
mkfs.ext4 -q "$LOOP" && mount "$LOOP" "$B" 2>>"$T/mount.log" || fail "mount: $(cat "$T/mount.log")"
echo "$DEV $IOPS" >"$CG/blkio.throttle.write_iops_device"
echo "$DEV 1048576" >"$CG/blkio.throttle.write_bps_device"
t0=$(date +%s%N)
for i in 1 2 3 4 5 6; do dd if=/dev/zero of="$B/probe$i" bs=4k count=1 conv=fsync 2>/dev/null; done
rm -f "$B"/probe*
log "blob store on $LOOP ($DEV) at $IOPS IOPS, 1 MB/s: 6 fsynced 4 KB writes took" \
    "$((($(date +%s%N) - t0) / 1000000)) ms"
export URSA_BLOB_DIR="$B" URSA_BLOB_MIN_FREE_MB=0
# every download at once: a download queued for a connection runs down its
# timeout too, and this test is about the disk
export URSA_FETCH_MAX_PER_HOST=1000
start_fault_server
stack_up

# downloads spread over 1.5 s (the fault server answers each late, within
# the 2 s fetch.low-speed-secs of lib.sh), so some
# are always in flight while finished ones wait for the disk
for i in $(seq 0 $((N - 1))); do echo "$FS/delay/$((i * 37 % 1500))/gen/$i.jpg"; done >"$T/urls.txt"
t0=$(date +%s%N)
"$URSA" ingest --dataset slow --no-wait "$T/urls.txt" >"$T/ingest.log" 2>&1 || fail "ingest"
downloaded_all() { [ "$(($(state_sum slow verified) + $(state_sum slow failed) + \
    $(state_sum slow rejected) + $(state_sum slow downloaded)))" -ge "$N" ]; }
wait_for 60 "every URL downloaded or failed" downloaded_all
crawl_ms=$((($(date +%s%N) - t0) / 1000000))
wait_for 60 "every URL final" all_final slow
all_ms=$((($(date +%s%N) - t0) / 1000000))
log "$N URLs: crawled in $crawl_ms ms ($((N * 1000 / crawl_ms)) URLs/s), final in $all_ms ms" \
    "($((N * 1000 / all_ms)) images/s)"
counts_of slow | grep -v '|verified' | sed 's/^/#   /' >&2 || true
failed=$(state_sum slow failed)
verified=$(state_sum slow verified)
dups=$(grep -o 'GET /delay/[0-9]*/gen/[0-9]*.jpg' "$T/fs.log" | sort | uniq -d | wc -l)
"$URSA" down >/dev/null 2>&1 || true # the crawler logs where its time went
grep -h 'event=blob_sync_slow\|event=intake_\|event=stopped' "$URSA_STATE_DIR/log/crawler.log" |
    sed 's/^.*event=/# crawler: event=/' | cut -c1-240 >&2 || true
check_eq "failed URLs" "$failed" 0
check_eq "verified" "$verified" "$N"
check_eq "URLs downloaded twice" "$dups" 0
echo "test_disk_slow: ok"
