# Instances and health across hosts, on a real stack: the /metrics of
# crawler, verifier and trainer pass promtool and count the work done; two
# more crawlers with their own --instance names show in `ursa status`, which
# also runs with an empty state dir and only the stack's addresses (text and
# -o json) and exits 0 while healthy; /readyz says 503 with the reason while
# Redis is stopped (and /healthz stays 200); a SIGKILLed instance turns stale
# after its 15 s TTL, and the status fails only for a service left with no
# live instance.
. "$(dirname "$0")/lib.sh"
command -v promtool >/dev/null || fail "promtool is missing (apt-get install prometheus)"
start_fault_server
stack_up
S=$URSA_STATE_DIR
url_of() { "$URSA" env | sed -n "s/^URSA_$1_METRICS_URL=//p"; }
CM=$(url_of CRAWLER) VM=$(url_of VERIFIER) TM=$(url_of TRAINER)
[ -n "$CM" ] && [ -n "$VM" ] && [ -n "$TM" ] || fail "ursa env shows no metrics URLs: $("$URSA" env)"
grep -q "^started crawler  pid=[0-9]* metrics=$CM$" "$T/up.log" || fail "up: $(cat "$T/up.log")"
# the sum of a metric's samples on a page (0 when it has none)
metric() { awk -v m="$2" '$1 == m || index($1, m "{") == 1 {s += $NF} END {print s + 0}' "$1"; }

# ---- /metrics: valid Prometheus text, and the counts follow the work ----
for u in "$CM" "$VM" "$TM"; do
    metrics_to "$u" "$T/m.txt" || fail "no /metrics at $u"
    promtool check metrics <"$T/m.txt" >"$T/promtool.out" 2>&1 ||
        fail "promtool on $u: $(cat "$T/promtool.out")"
done
check_eq "trainer: jobs ended before any" "$(metric "$T/m.txt" ursa_trainer_jobs_ended_total)" 0
printf '%s\n' "$FS/img/good.jpg" "$FS/img/progressive.jpg" "$FS/img/gray.jpg" "$FS/404" \
    "$FS/html/page.jpg" >"$T/urls_a.txt"
"$URSA" ingest --dataset inst "$T/urls_a.txt" >"$T/ingest.out" 2>&1 || fail "ingest: $(cat "$T/ingest.out")"
"$URSA" train --dataset inst --arch small --size 32 --stage 1 --no-wait >"$T/train.out" 2>&1 ||
    fail "train: $(cat "$T/train.out")"
job=$(job_id_of "$T/train.out")
wait_for 30 "the job (too few images) to end" bash -c "[ \"\$(redis-cli -p $REDIS_PORT --raw HGET ursa:job:$job state)\" = failed ]"
# (a state is final in Redis a moment before its daemon counts it)
counted() {
    metrics_to "$CM" "$T/mc.txt" && metrics_to "$VM" "$T/mv.txt" &&
        [ "$(metric "$T/mc.txt" ursa_crawler_urls_downloaded_total)" = 4 ] &&
        [ "$(metric "$T/mv.txt" ursa_verifier_images_verified_total)" = 3 ]
}
wait_for 10 "4 downloads and 3 verified images in the metrics" counted
grep -q '^ursa_crawler_urls_failed_total{reason="http_404"} 1$' "$T/mc.txt" ||
    fail "crawler failures by reason: $(grep failed_total "$T/mc.txt")"
check_eq "crawler: messages handled" "$(metric "$T/mc.txt" ursa_crawler_messages_handled_total)" 5
grep -q '^ursa_verifier_images_rejected_total{reason="not_an_image"} 1$' "$T/mv.txt" ||
    fail "verifier rejections by reason: $(grep rejected_total "$T/mv.txt")"
ended() { metrics_to "$TM" "$T/mt.txt" && [ "$(metric "$T/mt.txt" ursa_trainer_jobs_ended_total)" = 1 ]; }
wait_for 10 "the trainer's metrics to count the job" ended
grep -q '^ursa_trainer_messages_handled_total{topic="ursa.train.jobs"} 1$' "$T/mt.txt" ||
    fail "trainer: $(grep messages_handled "$T/mt.txt")"
for f in "$T/mc.txt" "$T/mv.txt" "$T/mt.txt"; do
    promtool check metrics <"$f" >"$T/promtool.out" 2>&1 || fail "promtool after work: $(cat "$T/promtool.out")"
done

# ---- two more crawlers, named ----
"$URSA_BIN/ursa-crawler" --state-dir "$S" --instance crawler-a >"$T/crawler-a.log" 2>&1 &
CA=$!
PIDS+=("$CA")
"$URSA_BIN/ursa-crawler" --state-dir "$S" --crawler.instance crawler-b >"$T/crawler-b.log" 2>&1 &
CB=$!
PIDS+=("$CB")
set +e
"$URSA_BIN/ursa-crawler" --state-dir "$S" --instance 'two words' >/dev/null 2>"$T/err"; rc=$?
set -e
check_eq "a bad instance id: exit" "$rc" 2
grep -q 'crawler.instance: expected 1 to 100 letters' "$T/err" || fail "bad id: $(cat "$T/err")"

# ---- status from anywhere: an empty state dir, the addresses in the environment ----
E="$T/empty"
mkdir -p "$E"
anywhere() { URSA_STATE_DIR="$E" URSA_REDIS_URL="$REDIS_URL" URSA_KAFKA_BOOTSTRAP="$BOOTSTRAP" "$URSA" status "$@"; }
named() { anywhere >"$T/st.txt" 2>&1; grep -q ' crawler-a ' "$T/st.txt" && grep -q ' crawler-b ' "$T/st.txt"; }
wait_for 15 "both named crawlers in ursa status" named
anywhere >"$T/st.txt" 2>&1 || fail "status from anywhere, healthy: exit $?: $(cat "$T/st.txt")"
H=$(hostname)
# (the URL with its password shown as ***)
for want in "^redis +ok: redis://:\*\*\*@127\.0\.0\.1:$REDIS_PORT, PING" "^kafka +ok: $BOOTSTRAP, 14 topics$" \
    "^  crawler +$H +crawler-a +$CA +[0-9]+[smhd]" "^  crawler +$H +crawler-b +$CB " \
    "^  verifier +$H +$H:[0-9]+ " "^  trainer +$H " "^  inference +$H " \
    '^ursa.crawl.requests +4 +5 +ursa-crawler +0$' '^healthy$'; do
    grep -Eq "$want" "$T/st.txt" || fail "status from anywhere lacks /$want/: $(cat "$T/st.txt")"
done
[ ! -e "$E/run" ] || fail "status created files in the empty state dir"
grep -qF "$(cat "$URSA_STATE_DIR/redis.password")" "$T/st.txt" && fail "status shows the Redis password"
# the addresses win over a stack's state dir (a local stack never uses kafka.bootstrap)
"$URSA" status --redis.url "$REDIS_URL" --kafka.bootstrap "$BOOTSTRAP" 2>&1 | head -1 | grep -q '^redis  *ok' ||
    fail "status with addresses and the stack's state dir: $("$URSA" status --redis.url "$REDIS_URL" --kafka.bootstrap "$BOOTSTRAP" 2>&1)"
anywhere -o json >"$T/st.json" || fail "status -o json exit code"
grep -qF "$(cat "$URSA_STATE_DIR/redis.password")" "$T/st.json" && fail "status -o json shows the Redis password"
python3 - "$T/st.json" "$CA" "$CB" <<'PY' || fail "status -o json: $(cat "$T/st.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["healthy"] is True and d["problems"] == [], d["problems"]
assert d["state_dir"] is None and d["redis"]["ok"] and d["kafka"]["topics"] == 14
by = {i["instance"]: i for i in d["instances"]}
for name, pid in (("crawler-a", int(sys.argv[2])), ("crawler-b", int(sys.argv[3]))):
    i = by[name]
    assert i["service"] == "crawler" and i["state"] == "live" and i["pid"] == pid, i
    assert i["host"] and i["version"] and i["started_ms"] > 0 and i["degraded"] is None, i
    assert i["counters"]["downloaded"] == 0, i
assert d["services"]["crawler"] == {"live": 3, "stale": 0, "degraded": 0, "required": True}
assert d["services"]["console"]["required"] is False
lag = {t["topic"]: t["lag"] for t in d["topics"]}
assert lag["ursa.crawl.requests"] == 0 and lag["ursa.images.verified"] is None, lag
PY

# ---- /readyz while Redis is stopped ----
base=${CM%/metrics}
check_eq "crawler /readyz" "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" 200
kill "$(cat "$S/run/redis.pid")"
not_ready() { [ "$(curl -s -o "$T/ready.txt" -w '%{http_code}' "$base/readyz")" = 503 ]; }
wait_for 10 "crawler /readyz to say 503" not_ready
grep -q '^redis: ' "$T/ready.txt" || fail "/readyz without Redis: $(cat "$T/ready.txt")"
check_eq "crawler /healthz without Redis" "$(curl -s "$base/healthz")" ok
if anywhere >"$T/st.txt" 2>&1; then fail "status exit 0 without Redis"; fi
grep -q "^NOT HEALTHY: redis at redis://:\*\*\*@127\.0\.0\.1:$REDIS_PORT does not answer" "$T/st.txt" ||
    fail "status: $(cat "$T/st.txt")"
"$URSA" up >"$T/up2.log" 2>&1 || fail "up after redis died: $(cat "$T/up2.log")"
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" = 200 ]; }
wait_for 10 "crawler /readyz back to 200" ready

# ---- SIGKILL: stale after the TTL; only a service with no live instance fails ----
VP=$(cat "$S/run/verifier.pid")
kill -9 "$CB" "$VP"
stale() {
    anywhere -o json >"$T/st.json" 2>/dev/null
    python3 -c 'import json,sys; d = json.load(open(sys.argv[1]))
s = {(i["service"], i["instance"]): i["state"] for i in d["instances"]}
sys.exit(0 if s[("crawler", "crawler-b")] == "stale" and "stale" in
         [v for (svc, _), v in s.items() if svc == "verifier"] else 1)' "$T/st.json"
}
wait_for 25 "the killed crawler and verifier to turn stale" stale
if anywhere -o json >"$T/st.json"; then fail "status exit 0 with no live verifier"; fi
python3 - "$T/st.json" <<'PY' || fail "status after the kills: $(cat "$T/st.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["healthy"] is False and d["problems"] == ["no live verifier instance"], d["problems"]
assert d["services"]["crawler"]["live"] == 2 and d["services"]["crawler"]["stale"] == 1, d["services"]
st = [i for i in d["instances"] if i["instance"] == "crawler-b"][0]
assert set(st) == {"service", "instance", "host", "state", "last_beat_ms"}, st
PY
anywhere >"$T/st.txt" 2>&1 || true
sed -n '/^stale/,/^$/p' "$T/st.txt" | grep -Eq "^  crawler +$(hostname) +crawler-b +- +- +last heartbeat [0-9]+ s ago$" ||
    fail "the stale crawler in the text: $(cat "$T/st.txt")"
# a verifier again: healthy, with the dead ones still listed apart
"$URSA" up >"$T/up3.log" 2>&1 || fail "up: $(cat "$T/up3.log")"
grep -q "^started verifier pid=" "$T/up3.log" || fail "up did not restart the verifier: $(cat "$T/up3.log")"
anywhere >"$T/st.txt" 2>&1 || fail "status with a stale crawler and a new verifier: $(cat "$T/st.txt")"
grep -q '^stale' "$T/st.txt" || fail "no stale section: $(cat "$T/st.txt")"
echo "test_instances: ok"
