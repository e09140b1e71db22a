# A full disk pauses a training job instead of redoing its epochs: when a
# checkpoint cannot be stored, the job waits in memory (little CPU), the
# trainer says "DEGRADED: ... waiting for space" in `ursa status` and the
# job says "paused: waiting for space to store ..." in `ursa job`; when
# space comes back the job goes on and finishes once: every epoch's row
# once, one start. Blobs and checkpoints are on a real tmpfs filled to the
# last byte (needs root, as CI runs).
. "$(dirname "$0")/lib.sh"
D="$T/disk"
mkdir -p "$D"
mount -t tmpfs -o size=24m tmpfs "$D" 2>"$T/mount.log" ||
    fail "cannot mount a tmpfs for the full disk (run as root): $(cat "$T/mount.log")"
on_cleanup umount -l "$D"
# blobs in $D/blobs, checkpoints beside them in $D/checkpoints
export URSA_BLOB_DIR="$D/blobs" URSA_BLOB_MIN_FREE_MB=0 URSA_TRAINER_SPACE_RETRY_MS=500
start_fmnist_server 600
stack_up
# the trainer's CPU while it has no job, measured while the images come in:
# the yardstick for the paused job (a sanitizer build idles far above 0)
PID=$(cat "$URSA_STATE_DIR/run/trainer.pid")
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
ms() { echo $(($(date +%s%N) / 1000000)); }
hz=$(getconf CLK_TCK)
i0=$(ticks) t0=$(ms)
"$URSA" ingest --dataset fm "$FM"/urls_*.txt >"$T/ingest.out" 2>&1 || fail "ingest: $(cat "$T/ingest.out")"
sleep 2
i1=$(ticks) t1=$(ms)
idle_pct=$(((i1 - i0) * 100 * 1000 / hz / (t1 - t0)))
log "trainer CPU with no job: $((i1 - i0)) ticks in $((t1 - t0)) ms ($idle_pct% of a core)"
"$URSA" train --dataset fm --arch small --size 28 --bs 16 --stage 6:1e-2 --no-wait \
    >"$T/train.out" || fail "submit"
J=$(job_id_of "$T/train.out")
rows_at_least() { [ "$(job_rows "$J")" -ge "$1" ]; }
wait_for 120 "the first epoch" rows_at_least 1
dd if=/dev/zero of="$D/ballast" bs=64k 2>/dev/null || true # until ENOSPC
dd if=/dev/zero of="$D/ballast2" bs=4k 2>/dev/null || true
log "disk full after $(job_rows "$J") epochs: $(df -h "$D" | tail -1)"

status_text() { "$URSA" status 2>&1 || true; } # exits 1 while a daemon is degraded
degraded() { status_text | grep -q '^trainer .*DEGRADED: .*waiting for space to store'; }
wait_for 30 "ursa status to say the trainer is degraded" degraded
log "$(status_text | grep '^trainer')"
"$URSA" job "$J" >"$T/job.out" 2>&1 || true
grep -q '^paused: waiting for space to store the checkpoint of epoch' "$T/job.out" ||
    fail "ursa job does not say the job waits: $(cat "$T/job.out")"
check_eq "state while paused" "$(job_state "$J")" running
rows_paused=$(job_rows "$J")
# CPU while paused: the trainer's user + system time over 4 s, which must
# stay near its CPU with no job (a job redoing its epochs takes a whole core)
c0=$(ticks)
sleep 4
c1=$(ticks)
cpu_pct=$(((c1 - c0) * 100 / hz / 4))
log "trainer CPU while paused: $((c1 - c0)) ticks in 4 s ($cpu_pct% of a core)"
[ "$cpu_pct" -le $((idle_pct + 15)) ] ||
    fail "the paused trainer used $cpu_pct% of a core, $idle_pct% with no job"
check_eq "epochs done while paused" "$(job_rows "$J")" "$rows_paused"
check_eq "starts while paused" "$(job_field "$J" starts)" 1
grep -q "event=job_paused job=$J" "$URSA_STATE_DIR/log/trainer.log" || fail "no job_paused logged"

rm -f "$D/ballast" "$D/ballast2"
done_or_failed() { case "$(job_state "$J")" in done | failed | cancelled) return 0 ;; esac; return 1; }
wait_for 120 "the job to end" done_or_failed
check_eq "state" "$(job_state "$J")" done
check_eq "rows" "$(job_rows "$J")" 6
check_eq "starts" "$(job_field "$J" starts)" 1
grep -q "event=job_resumed job=$J" "$URSA_STATE_DIR/log/trainer.log" || fail "no job_resumed logged"
healthy() { "$URSA" status >"$T/status2.log" 2>&1 && ! grep -q DEGRADED "$T/status2.log"; }
wait_for 10 "ursa status healthy again" healthy
"$URSA" job "$J" >"$T/job2.out" 2>&1
grep -q '^paused' "$T/job2.out" && fail "ursa job still says paused: $(cat "$T/job2.out")"
echo "test_trainer_disk_full: ok"
