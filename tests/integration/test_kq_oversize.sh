# Messages too large to pass cannot jam a consumer group (the 1.5 MB
# reproducer of the drills): one over kq.max-message-bytes is dead-lettered
# unread as a summary; one the producer refuses to dead-letter whole (over
# message.max.bytes) becomes a summary too; the partitions' offsets move on,
# so a restarted consumer handles nothing again. The real crawler gets the
# reproducer on ursa.crawl.requests and keeps ingesting. A daemon whose
# broker was SIGKILLed still ends within 15 s of SIGTERM, and `ursa up`
# brings everything back.
. "$(dirname "$0")/lib.sh"
start_fault_server
stack_up

head -c 1179648 /dev/urandom | base64 -w0 >"$T/huge" # 1,572,864 bytes: 1.5 MB
{ printf 'poison '; head -c 1200000 /dev/zero | tr '\0' x; } >"$T/bigpoison" # 1.2 MB
big_kcat() { kcat -b "$BOOTSTRAP" -P -X message.max.bytes=4000000 -t "$1" -k "$2" "$3"; }

# ---- the probe group: both kinds, then 30 good messages ----------------------
big_kcat ursa.probe huge "$T/huge" || fail "kcat could not produce 1.5 MB"
big_kcat ursa.probe bigpoison "$T/bigpoison" || fail "kcat could not produce 1.2 MB"
"$PROBE" produce --topic ursa.probe --count 30 >"$T/produce.log" 2>&1 || fail "produce"
start_consumer c1 --topic ursa.probe --worker w1 --kq.max-attempts 2 --kq.backoff-ms 50 \
    --kq.max-message-bytes 1400000
wait_for 60 "30 good messages applied" stat_at_least applied 30
wait_for 30 "two dead letters" bash -c \
    "[ \$(kcat -b $BOOTSTRAP -C -t ursa.dlq.probe -e -q -f '%k\n' | grep -c .) -ge 2 ]"
dl=$(kcat -b "$BOOTSTRAP" -C -t ursa.dlq.probe -e -q -f '%k|%S|%h\n')
log "dead letters: $(echo "$dl" | cut -c1-600)"
check_eq "dead letters" "$(echo "$dl" | grep -c .)" 2
huge=$(echo "$dl" | grep '^huge|')
poison=$(echo "$dl" | grep '^bigpoison|')
for m in "$huge" "$poison"; do
    echo "$m" | grep -q 'ursa.dlq.truncated=1' || fail "not marked truncated: ${m:0:300}"
    [ "$(echo "$m" | cut -d'|' -f2)" -le 1024 ] || fail "summary payload over 1 KB"
done
echo "$huge" | grep -q "ursa.dlq.size=$(($(stat -c %s "$T/huge") + 4))" || fail "size of huge"
echo "$huge" | grep -q "ursa.dlq.sha256=$(sha256sum "$T/huge" | cut -c1-64)" || fail "sha256 of huge"
echo "$huge" | grep -q 'ursa.dlq.reason=message of 1572868 bytes is over kq.max-message-bytes' ||
    fail "reason of huge"
echo "$poison" | grep -q 'ursa.dlq.reason=poison message bigpoison: always fails' ||
    fail "reason of bigpoison"
echo "$poison" | grep -q "ursa.dlq.sha256=$(sha256sum "$T/bigpoison" | cut -c1-64)" ||
    fail "sha256 of bigpoison"
check_eq "handler calls (30 + 2 attempts; huge never parsed)" "$(stat_of handled)" 32

# offsets moved past both: a restarted consumer gets nothing again
kill -TERM "$c1"
wait_for 20 "consumer c1 to stop" dead "$c1"
start_consumer c2 --topic ursa.probe --worker w2 --kq.max-attempts 2 --kq.backoff-ms 50 \
    --kq.max-message-bytes 1400000
wait_for 30 "c2 to join the group" grep -q partitions_assigned "$T/consumer-c2.log"
sleep 3
check_eq "handler calls after a restart" "$(stat_of handled)" 32

# ---- the crawler: the reproducer on its topic, then an ingest -----------------
big_kcat ursa.crawl.requests huge "$T/huge" || fail "kcat crawl.requests"
printf '%s\n' "$FS/img/good.jpg" "$FS/img/gray.jpg" "$FS/404" >"$T/urls.txt"
"$URSA" ingest --dataset big --label things --wait-timeout-s 60 "$T/urls.txt" \
    >"$T/ingest.log" 2>&1 || fail "ingest after the 1.5 MB message"
check_eq "verified" "$(state_sum big verified)" 2
check_eq "failed" "$(state_sum big failed)" 1
kcat -b "$BOOTSTRAP" -C -t ursa.dlq.crawler -e -q -f '%k %h\n' | grep -q '^huge .*ursa.dlq.truncated=1' ||
    fail "the crawler did not dead-letter the 1.5 MB message as a summary"

# ---- a stop with the broker gone ends within 15 s ----------------------------
crawler=$(cat "$URSA_STATE_DIR/run/crawler.pid")
kill -9 "$(cat "$URSA_STATE_DIR/run/broker.pid")"
sleep 1
ms=$(term_ms "$crawler" 20 "the crawler to end after SIGTERM")
log "crawler ended ${ms} ms after SIGTERM with its broker dead"
[ "$ms" -le 15000 ] || fail "SIGTERM took ${ms} ms (limit 15000)"
t0=$(date +%s%N)
"$URSA" up >"$T/up2.log" 2>&1 || fail "ursa up after the broker died"
log "ursa up after a broker SIGKILL: $((($(date +%s%N) - t0) / 1000000)) ms"
"$URSA" status >"$T/status.log" 2>&1 || { cat "$T/status.log" >&2; fail "status after up"; }
echo "test_kq_oversize: ok"
