# The multi-host drill: ursa on five "hosts" that share no files, each a
# mount and UTS namespace of its own (unshare: a private tmpfs over the
# test's directory as its only state, its own host name; the network is the
# shared loopback), against a real S3 server (Ceph RGW), a 3-master Redis
# Cluster and the broker with 3 brokers:
#   hosta, hostb  crawler + verifier      hostc  trainer
#   hostd         inference               hoste  the CLI, with no blob directory
# It ingests URLs with failures planted, SIGKILLs every process of hosta
# mid-ingest and of hostc mid-epoch (both come back as new machines with
# empty disks), trains, audits, cleans, retrains and classifies with the
# newly served model. Then: one final state a URL and the counts exact, the
# job done once, the server's answers equal to `ursa predict`'s on hoste,
# and `ursa status` on hoste lists the instances by host, the dead as stale.
. "$(dirname "$0")/lib.sh"
command -v unshare >/dev/null && command -v nsenter >/dev/null || fail "needs unshare and nsenter (util-linux)"
unshare --mount --uts true 2>"$T/unshare.err" ||
    fail "cannot make namespaces (run as root, as CI does): $(cat "$T/unshare.err")"
N=1200 # Fashion-MNIST test images, ten classes
# a free port below 32768, so a Redis Cluster node's bus port (+10000) is one too
free_port() { python3 -c '
import random, socket
while True:
    p = random.randint(20000, 32000)
    try:
        s = socket.socket(); s.bind(("127.0.0.1", p)); b = socket.socket(); b.bind(("127.0.0.1", p + 10000))
        print(p); break
    except OSError: pass'; }

# ---- infrastructure (on the test's own host) ------------------------------
start_s3_server drill
ports=()
for i in 1 2 3; do
    p=$(free_port)
    mkdir -p "$T/rc/$p"
    (cd "$T/rc/$p" && exec redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
        --cluster-config-file nodes.conf --appendonly yes --save '' --logfile redis.log) &
    PIDS+=("$!")
    ports+=("$p")
done
for p in "${ports[@]}"; do wait_for 10 "redis on $p" redis-cli -p "$p" PING; done
redis-cli --cluster create "127.0.0.1:${ports[0]}" "127.0.0.1:${ports[1]}" "127.0.0.1:${ports[2]}" \
    --cluster-replicas 0 --cluster-yes >"$T/create.log" 2>&1 || fail "cluster create: $(cat "$T/create.log")"
cluster_ok() { redis-cli -p "${ports[0]}" CLUSTER INFO | grep -q 'cluster_state:ok'; }
wait_for 20 "the cluster to be ok" cluster_ok
REDIS_PORT=${ports[0]} # lib.sh's rcli: any master answers or redirects (-c below)
rcli() { redis-cli -c -p "$REDIS_PORT" --raw "$@"; }
"$URSA_BIN/ursa-broker" --broker.brokers 3 --state-dir "$T/infra" >"$T/broker.log" 2>&1 &
PIDS+=("$!")
wait_for 20 "the broker" test -s "$T/infra/broker.bootstrap"
start_fault_server
start_fmnist_server "$N"
export URSA_REDIS_URL="redis://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
export URSA_KAFKA_BOOTSTRAP=$(cat "$T/infra/broker.bootstrap")
export URSA_TRAINER_LEASE_MS=3000 URSA_FETCH_MAX_INFLIGHT=4 URSA_LOG_LEVEL=info
export URSA_FETCH_TIMEOUT_MS=10000 # the 2 cores also run the gateway, 3 Redis and 3 brokers
INF_PORT=$(free_port)
export URSA_INFERENCE_PORT=$INF_PORT
# the test's own view (counts, job fields): no state dir of any host
export URSA_STATE_DIR="$T/observer"

# ---- hosts -------------------------------------------------------------------
declare -A HOST # name -> the pid holding its namespaces
HOSTNS=()       # the mount namespaces of every host started
# host_up NAME: a new machine: a tmpfs over $T (so it sees none of the test's
# files, nor another host's) with an empty state dir, and its own host name
host_up() {
    local name=$1
    unshare --mount --uts --propagation private -- bash -c \
        "mount -t tmpfs -o size=256m tmpfs '$T' && mkdir -p '$T/state' && hostname '$name' && exec sleep 100000" &
    HOST[$name]=$!
    PIDS+=("$!")
    wait_for 10 "host $name" nsenter -t "${HOST[$name]}" -m test -d "$T/state"
    HOSTNS+=("$(readlink "/proc/${HOST[$name]}/ns/mnt")")
}
# every process left in a host's namespace, killed (the test's end)
hosts_gone() {
    local pid ns
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        ns=$(readlink "/proc/$pid/ns/mnt" 2>/dev/null) || continue
        for h in "${HOSTNS[@]:-}"; do [ "$ns" = "$h" ] && kill -9 "$pid" 2>/dev/null; done
    done
    return 0
}
# on NAME CMD...: runs CMD on that host (its files, its name; the loopback is shared)
on() {
    local name=$1
    shift
    nsenter -t "${HOST[$name]}" -m -u -- env URSA_STATE_DIR="$T/state" "$@"
}
# daemon NAME DAEMON: starts ursa-DAEMON on host NAME; its log (stderr) is
# shipped to $T/logs/NAME.DAEMON.log by an open file, as journald would
daemon() {
    mkdir -p "$T/logs"
    # a plain command in the background (not the function on): $! is then
    # the daemon itself, which nsenter and env exec in turn
    nsenter -t "${HOST[$1]}" -m -u -- env URSA_STATE_DIR="$T/state" "$URSA_BIN/ursa-$2" \
        >>"$T/logs/$1.$2.log" 2>&1 &
    PIDS+=("$!")
}
# host_kill NAME: SIGKILL every process of the host, then it is gone
host_kill() {
    local ns pid
    ns=$(readlink "/proc/${HOST[$1]}/ns/mnt")
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        [ "$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)" = "$ns" ] && kill -9 "$pid" 2>/dev/null
    done
    wait_for 10 "host $1 to die" dead "${HOST[$1]}"
}
fail_logs() { for f in "$T"/logs/*.log; do echo "--- $f" >&2; grep -v 'level=debug' "$f" | tail -n 8 >&2; done; }
trap 'rc=$?; set +e; [ $rc -ne 0 ] && fail_logs; hosts_gone; (exit $rc); cleanup' EXIT

for h in hosta hostb hostc hostd hoste; do host_up "$h"; done
on hoste test ! -e "$T/s3.env" || fail "a host sees the test's files"
for h in hosta hostb; do daemon "$h" crawler; daemon "$h" verifier; done
daemon hostc trainer
daemon hostd inference
live() { "$URSA" status -o json >"$T/status.json" 2>/dev/null || true
    python3 - "$T/status.json" "$@" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
want = sys.argv[2:]  # "service@host" that must be live
have = {"%s@%s" % (i["service"], i["host"]) for i in s["instances"] if i["state"] == "live"}
sys.exit(0 if all(w in have for w in want) else 1)
EOF
}
wait_for 30 "every daemon's heartbeat" live crawler@hosta crawler@hostb verifier@hosta \
    verifier@hostb trainer@hostc inference@hostd

# ---- ingest, with hosta SIGKILLed mid-way ---------------------------------
on hoste mkdir -p "$T/lists"
# the user's URL lists, copied to hoste as scp would; their server answers
# each image 30 ms late, so the ingest lasts long enough to kill a host in it
for f in "$FM"/urls_*.txt; do
    sed 's|/ds/|/delay/30/ds/|' "$f" | on hoste bash -c "cat >'$T/lists/$(basename "$f")'" ||
        fail "copying $f to hoste"
done
# failures planted among the images: 404, HTML as JPEG, a truncated file
on hoste bash -c "printf '%s\n' '$FS/404' '$FS/html/page.jpg' '$FS/truncated/good.jpg' >>'$T/lists/urls_bag.txt'"
on hoste bash -c "'$URSA' ingest --dataset fm --no-wait '$T'/lists/urls_*.txt" >"$T/ingest.out" 2>&1 ||
    fail "ingest on hoste: $(cat "$T/ingest.out")"
grep -q "$((N + 3)) queued" "$T/ingest.out" || fail "ingest: $(cat "$T/ingest.out")"
some_done() { [ "$(( $(state_sum fm verified) + $(state_sum fm failed) + $(state_sum fm rejected) ))" -ge 100 ]; }
wait_for 60 "the first 100 URLs" some_done
host_kill hosta
log "hosta killed after $(state_sum fm verified) verified"
[ "$(state_sum fm verified)" -lt "$N" ] || fail "the ingest ended before hosta was killed; make it longer"
host_up hosta # the same machine back, with an empty disk
daemon hosta crawler
daemon hosta verifier
wait_for 120 "every URL final" all_final fm
# Fashion-MNIST's test set holds some identical images: the first URL of
# each distinct image is verified, the others are duplicates (same label)
# or label conflicts
U=$(find "$FM" -name '*.jpg' -exec sha256sum {} + | cut -c1-64 | sort -u | wc -l)
log "counts: $(counts_of fm | tr '\n' ' ')"
check_eq "total" "$(count_of fm total)" $((N + 3))
check_eq "verified" "$(state_sum fm verified)" "$U"
check_eq "duplicates and label conflicts" \
    "$(($(state_sum fm duplicate) + $(state_sum fm label_conflict)))" $((N - U))
check_eq "failed" "$(state_sum fm failed)" 1
check_eq "rejected" "$(state_sum fm rejected)" 2
check_eq "negative counters" "$(negative_counters fm)" 0
dups=$(grep -o 'GET /delay/30/ds/[^ ]*' "$T/fm.log" | sort | uniq -d | wc -l)
log "URLs downloaded twice (hosta's unfinished work, redone): $dups"

# ---- training, with hostc SIGKILLed mid-epoch -----------------------------
on hoste "$URSA" train --dataset fm --arch small --size 28 --bs 16 --stage 2:1e-2 --stage 2:1e-3:1e-2 \
    --no-wait >"$T/train.out" 2>&1 || fail "train: $(cat "$T/train.out")"
J=$(job_id_of "$T/train.out")
[ -n "$J" ] || fail "no job id: $(cat "$T/train.out")"
rows_at_least() { [ "$(job_rows "$J")" -ge "$1" ] || [ "$(job_state "$J")" = failed ]; }
wait_for 300 "the first epoch" rows_at_least 1
host_kill hostc # in the second epoch
[ "$(job_rows "$J")" -lt 4 ] || fail "the job ended before hostc was killed"
host_up hostc
daemon hostc trainer
ended() { case "$(job_state "$J")" in done | failed | cancelled) return 0 ;; esac; return 1; }
wait_for 300 "the job to end" ended
check_eq "job state" "$(job_state "$J")" done
check_eq "rows" "$(job_rows "$J")" 4
check_eq "starts" "$(job_field "$J" starts)" 2
check_eq "resumes" "$(job_field "$J" resumes)" 1
check_eq "models" "$(rcli ZCARD ursa:models | tr -d '\n')" 1

# ---- audit, clean, retrain ---------------------------------------------------
on hoste "$URSA" audit --dataset fm --folds 2 >"$T/audit.out" 2>&1 || fail "audit: $(tail -5 "$T/audit.out")"
grep -q "^audit of fm: [0-9]* label issues" "$T/audit.out" || fail "audit: $(tail -3 "$T/audit.out")"
on hoste "$URSA" clean --dataset fm --accept-suggestions --kinds label --min-score 0.9 \
    >"$T/clean.out" 2>&1 || fail "clean: $(tail -5 "$T/clean.out")"
M1=$(job_field "$J" model)
on hoste "$URSA" train --dataset fm --arch small --size 28 --bs 16 --stage 2:1e-2 >"$T/train2.out" 2>&1 ||
    fail "retrain: $(tail -5 "$T/train2.out")"
J2=$(job_id_of "$T/train2.out")
M2=$(job_field "$J2" model)
[ -n "$M2" ] && [ "$M2" != "$M1" ] || fail "no new model: $M1 / $M2"

# ---- the newly served model answers as `ursa predict` does on hoste -------
B="http://127.0.0.1:$INF_PORT"
on hoste "$URSA" export-dataset --dataset fm "$T/export" >"$T/export.out" 2>&1 ||
    fail "export-dataset on hoste: $(cat "$T/export.out")"
on hoste bash -c "find '$T/export' -name '*.jpg' | sort | sed -n '1~97p'" >"$T/imgs.txt"
[ "$(wc -l <"$T/imgs.txt")" -ge 10 ] || fail "too few images exported"
FIRST=$(sed -n 1p "$T/imgs.txt")
serves_m2() {
    on hoste curl -sf -X POST --data-binary @"$FIRST" "$B/v1/classify" >"$T/probe.json" &&
        grep -Eq "\"model\": ?\"$M2\"" "$T/probe.json"
}
wait_for 60 "hostd to serve $M2" serves_m2
: >"$T/served.jsonl"
while read -r f; do
    on hoste curl -sf -X POST --data-binary @"$f" "$B/v1/classify?top=10" >>"$T/served.jsonl" ||
        fail "classify $f"
    echo >>"$T/served.jsonl"
done <"$T/imgs.txt"
on hoste "$URSA" export "$M2" "$T/m2.onnx" >/dev/null || fail "export $M2 on hoste"
xargs -a "$T/imgs.txt" nsenter -t "${HOST[hoste]}" -m -u -- "$URSA" predict --model "$T/m2.onnx" \
    --json --top 0 >"$T/pred.jsonl" 2>/dev/null || fail "predict on hoste"
python3 - "$T" <<'EOF' || fail "served answers differ from ursa predict's"
import json, sys
t = sys.argv[1]
srv = [json.loads(l) for l in open(t + "/served.jsonl") if l.strip()]
pred = [json.loads(l) for l in open(t + "/pred.jsonl")]
assert len(srv) == len(pred) and srv, (len(srv), len(pred))
worst = 0
for s, p in zip(srv, pred):
    got, want = dict(s["predictions"]), dict(p["predictions"])
    assert set(got) == set(want), (got, want)
    assert s["predictions"][0][0] == p["predictions"][0][0], (s, p)
    worst = max(worst, max(abs(got[c] - want[c]) for c in want))
print("images", len(srv), "max |server - predict|", worst)
assert worst < 1e-5
EOF

# ---- ursa status on hoste: instances by host, the killed ones stale -------
on hoste test ! -e "$T/state/blobs" || fail "hoste has a blob directory"
on hoste "$URSA" status -o json >"$T/final.json" 2>"$T/final.err" || true
python3 - "$T/final.json" <<'EOF' || fail "status on hoste: $(cat "$T/final.json" "$T/final.err")"
import json, sys
s = json.load(open(sys.argv[1]))
live = {(i["service"], i["host"]) for i in s["instances"] if i["state"] == "live"}
stale = [(i["service"], i["host"]) for i in s["instances"] if i["state"] == "stale"]
for want in [("crawler", "hosta"), ("crawler", "hostb"), ("verifier", "hosta"),
             ("verifier", "hostb"), ("trainer", "hostc"), ("inference", "hostd")]:
    assert want in live, ("not live", want, live)
for want in [("crawler", "hosta"), ("verifier", "hosta"), ("trainer", "hostc")]:
    assert want in stale, ("not stale", want, stale)
assert s["healthy"], s.get("problems")
print("live", sorted(live), "stale", sorted(stale))
EOF
on hoste "$URSA" status >"$T/final.txt" 2>&1 || fail "ursa status on hoste exits non-zero: $(cat "$T/final.txt")"
grep -q hostc "$T/final.txt" || fail "status does not name the hosts: $(cat "$T/final.txt")"
echo "test_multihost: ok"
