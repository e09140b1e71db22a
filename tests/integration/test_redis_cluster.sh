# The pipeline on a real 3-master Redis Cluster (redis-server
# --cluster-enabled yes, redis-cli --cluster create), named by three seed
# nodes in URSA_REDIS_URL: an ingest that goes through a resharding (slots
# moved between masters mid-ingest, so MOVED and ASK redirects happen) and a
# kill storm of crawlers and verifiers ends with every URL counted exactly
# once; the dataset's keys are spread over all three masters; status,
# --failed, retry and export-dataset read it back.
. "$(dirname "$0")/lib.sh"
N=1500
ports=()
free_port() { python3 "$(dirname "$0")/../../ops/tools/free_port.py" --cluster; }
for i in 1 2 3; do
    for try in 1 2 3; do # a port taken between the pick and the bind: pick again
        p=$(free_port)
        mkdir -p "$T/rc/$p"
        (cd "$T/rc/$p" && exec redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file nodes.conf --appendonly yes --save '' --logfile redis.log) &
        pid=$!
        PIDS+=("$pid")
        up=0
        for _ in $(seq 100); do
            redis-cli -p "$p" PING >/dev/null 2>&1 && { up=1; break; }
            dead "$pid" && break
            sleep 0.1
        done
        [ "$up" = 1 ] && break
        log "redis on $p did not start (try $try): $(tail -2 "$T/rc/$p/redis.log" 2>/dev/null)"
    done
    [ "$up" = 1 ] || fail "cannot start cluster node $i"
    ports+=("$p")
done
redis-cli --cluster create "127.0.0.1:${ports[0]}" "127.0.0.1:${ports[1]}" "127.0.0.1:${ports[2]}" \
    --cluster-replicas 0 --cluster-yes >"$T/create.log" 2>&1 || { cat "$T/create.log" >&2; fail "cluster create"; }
cluster_ok() { redis-cli -p "${ports[0]}" CLUSTER INFO | grep -q 'cluster_state:ok'; }
wait_for 20 "the cluster to be ok" cluster_ok
export URSA_REDIS_URL="redis://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"

start_fault_server
stack_up
grep -q "using redis .*not started by ursa" "$T/up.log" || fail "ursa up started its own Redis"
"$URSA" status >"$T/status0.log" 2>&1 || { cat "$T/status0.log" >&2; fail "status on the cluster"; }
grep -q 'Redis Cluster' "$T/status0.log" || fail "status does not name the cluster"

seq 0 $((N - 1)) | sed "s|^|$FS/gen/|; s|\$|.jpg|" >"$T/urls_gen.txt"
printf '%s\n' "$FS/404" "$FS/html/page.jpg" >>"$T/urls_gen.txt"
"$URSA" ingest --dataset gen --no-wait "$T/urls_gen.txt" >"$T/ingest.log" 2>&1 || fail "ingest"

# mid-ingest: move a third of the first master's slots to the second while
# the daemons write (in the background), with a kill storm on top
some_verified() { [ "$(state_sum gen verified)" -ge 100 ]; }
wait_for 60 "the ingest under way" some_verified
id() { redis-cli -p "$1" CLUSTER MYID | tr -d '\r\n'; }
redis-cli --cluster reshard "127.0.0.1:${ports[0]}" --cluster-from "$(id "${ports[0]}")" \
    --cluster-to "$(id "${ports[1]}")" --cluster-slots 1800 --cluster-yes \
    >"$T/reshard.log" 2>&1 &
reshard=$!
log "resharding 1800 slots from ${ports[0]} to ${ports[1]} at $(state_sum gen verified) verified"

# and a kill storm: crawlers and verifiers SIGKILLed, brought back by ursa up
for round in 1 2 3; do
    sleep 1
    for d in crawler verifier; do kill -9 "$(cat "$URSA_STATE_DIR/run/$d.pid")" 2>/dev/null || true; done
    "$URSA" up >>"$T/up-storm.log" 2>&1 || fail "ursa up after kill round $round"
done

wait "$reshard" || { tail -5 "$T/reshard.log" >&2; fail "reshard"; }
log "resharding done at $(state_sum gen verified) verified"
wait_for 180 "every URL final" all_final gen
moves=$(grep -ho 'event=redis_redirects moved=[0-9]* ask=[0-9]*' "$URSA_STATE_DIR"/log/*.log | tail -3 | tr '\n' ' ')
log "redirects followed (last reports): ${moves:-none logged}"
check_eq "total" "$(count_of gen total)" $((N + 2))
check_eq "verified" "$(state_sum gen verified)" $N
check_eq "failed" "$(state_sum gen failed)" 1
check_eq "rejected" "$(state_sum gen rejected)" 1
check_eq "negative counters" "$(negative_counters gen)" 0
for p in "${ports[@]}"; do
    n=$(redis-cli -p "$p" DBSIZE | tr -d '\r\n')
    log "master $p holds $n keys"
    [ "$n" -gt 0 ] || fail "master $p holds no key: the dataset is not spread"
done

"$URSA" status --dataset gen --failed >"$T/failed.tsv" || fail "status --failed"
grep -q "^$FS/404	" "$T/failed.tsv" || fail "status --failed does not show the failed URL"
"$URSA" retry --dataset gen >"$T/retry.log" 2>&1 || { cat "$T/retry.log" >&2; fail "retry"; }
"$URSA" export-dataset --dataset gen "$T/export" >"$T/export.log" || fail "export-dataset"
check_eq "exported images" "$(find "$T/export" -name '*.jpg' | wc -l)" $N
echo "test_redis_cluster: ok"
