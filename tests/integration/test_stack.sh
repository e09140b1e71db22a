# ursa up / env / status / down on a real stack: up twice changes nothing,
# env is eval-able, status shows health and backlog, a dead Redis is restarted
# by up with its data kept, down stops everything. Its Redis asks for the
# password ursa up made, which no log, command line or environment shows.
. "$(dirname "$0")/lib.sh"

stack_up
grep -q "started redis" "$T/up.log" || fail "first up did not start redis"
grep -q "started broker" "$T/up.log" || fail "first up did not start the broker"
redis_pid=$(cat "$URSA_STATE_DIR/run/redis.pid")
# the state dir and the blob store are their owner's alone
check_eq "state dir mode" "$(stat -c %a "$URSA_STATE_DIR")" 700
check_eq "blob store mode" "$(stat -c %a "$URSA_STATE_DIR/blobs")" 700
broker_pid=$(cat "$URSA_STATE_DIR/run/broker.pid")

out=$("$URSA" up)
echo "$out" | grep -q "already running; nothing changed" || fail "second up: $out"
check_eq "redis pid after second up" "$(cat "$URSA_STATE_DIR/run/redis.pid")" "$redis_pid"
check_eq "broker pid after second up" "$(cat "$URSA_STATE_DIR/run/broker.pid")" "$broker_pid"

env_out=$("$URSA" env)
check_eq "env lines" "$(echo "$env_out" | wc -l)" 7
for d in CRAWLER VERIFIER TRAINER; do
    echo "$env_out" | grep -Eq "^URSA_${d}_METRICS_URL=http://127\.0\.0\.1:[0-9]+/metrics$" || fail "env: $env_out"
done
echo "$env_out" | grep -Eq '^URSA_INFERENCE_URL=http://127\.0\.0\.1:[0-9]+/$' || fail "env: $env_out"
echo "$env_out" | grep -Eq '^URSA_CONSOLE_URL=http://127\.0\.0\.1:[0-9]+/$' || fail "env: $env_out"
echo "$env_out" | grep -Eq '^URSA_KAFKA_BOOTSTRAP=127\.0\.0\.1:[0-9]+$' || fail "env: $env_out"
echo "$env_out" | grep -Eq '^URSA_REDIS_URL=redis://:[0-9a-f]{32}@127\.0\.0\.1:[0-9]+$' || fail "env: $env_out"

# Redis asks for the password; the files that hold it are the owner's; no
# log, command line or daemon environment shows it
PW=$(cat "$URSA_STATE_DIR/redis.password")
check_eq "password file mode" "$(stat -c %a "$URSA_STATE_DIR/redis.password")" 600
check_eq "redis.conf mode" "$(stat -c %a "$URSA_STATE_DIR/redis/redis.conf")" 600
noauth=$(env -u REDISCLI_AUTH redis-cli -p "$REDIS_PORT" GET x 2>&1 || true)
echo "$noauth" | grep -q NOAUTH || fail "redis answers without the password: $noauth"
check_eq "PING with it" "$(rcli PING)" PONG
grep -rlF "$PW" "$URSA_STATE_DIR/log" && fail "the password is in a log"
for n in crawler verifier trainer inference console; do
    p=$(cat "$URSA_STATE_DIR/run/$n.pid")
    tr '\0' '\n' <"/proc/$p/cmdline" | grep -qF "$PW" && fail "the password is on $n's command line"
    tr '\0' '\n' <"/proc/$p/environ" | grep -qF "$PW" && fail "the password is in $n's environment"
done
# a Redis URL without it, the password from a file; a wrong one said plainly
"$URSA" status --redis.url "redis://127.0.0.1:$REDIS_PORT" \
    --redis.password-file "$URSA_STATE_DIR/redis.password" >"$T/st-pwf.txt" 2>&1 ||
    fail "status with redis.password-file: $(cat "$T/st-pwf.txt")"
echo wr0ng-pw-7f3a >"$T/wrong.pw"
"$URSA" status --redis.url "redis://127.0.0.1:$REDIS_PORT" --redis.password-file "$T/wrong.pw" \
    >"$T/st-wrong.txt" 2>&1 && fail "status with a wrong password"
grep -q 'WRONGPASS\|invalid' "$T/st-wrong.txt" || fail "wrong password: $(cat "$T/st-wrong.txt")"
grep -qF wr0ng-pw-7f3a "$T/st-wrong.txt" && fail "a wrong password shown: $(cat "$T/st-wrong.txt")"

# the broker really is Kafka: kcat lists ursa's topics with 4 partitions
kcat -b "$BOOTSTRAP" -L -t ursa.crawl.requests -m 5 | grep -q 'topic "ursa.crawl.requests" with 4 partitions' \
    || fail "kcat does not see ursa.crawl.requests with 4 partitions"
grep -q "storage=memory-only" "$URSA_STATE_DIR/log/broker.log" || fail "broker log does not say memory only"

# ursa topics reads the same from the cluster
topics_out=$("$URSA" topics) || fail "ursa topics exit code: $topics_out"
check_eq "topics with 4 partitions" "$(echo "$topics_out" | grep -c ' 4 partitions  ')" 14
echo "$topics_out" | grep -q '^ursa.crawl.requests *4 partitions  CrawlRequest, keyed by URL hash$' ||
    fail "ursa topics does not give the message and key: $topics_out"

# usage errors are exit 2 with a reason; --help is exit 0
set +e
"$URSA" frobnicate >/dev/null 2>"$T/err"; rc=$?
set -e
check_eq "unknown command exit" "$rc" 2
grep -q 'unknown command "frobnicate"' "$T/err" || fail "unknown command message: $(cat "$T/err")"
set +e
"$URSA" status --stack.timeout-ms=abc >/dev/null 2>"$T/err"; rc=$?
set -e
check_eq "bad setting exit" "$rc" 2
grep -q 'stack.timeout-ms: expected a number' "$T/err" || fail "bad setting message: $(cat "$T/err")"
"$URSA" up --help >"$T/up-help.out"
grep -q -- '--state-dir' "$T/up-help.out" || fail "up --help does not list --state-dir"

# backlog: 3 messages nobody consumed yet
printf 'a\nb\nc\n' | kcat -b "$BOOTSTRAP" -P -t ursa.crawl.requests
status=$("$URSA" status) || fail "status exit code on a healthy stack: $status"
echo "$status" | grep -Eq '^redis +[0-9]+ +running +ok' || fail "status redis: $status"
echo "$status" | grep -Eq '^broker +[0-9]+ +running +ok' || fail "status broker: $status"
echo "$status" | grep -Eq '^ursa.crawl.requests +4 +3 +ursa-crawler +3$' || fail "status backlog: $status"

# Redis dies: status says so, up restarts it and nothing written is lost
rcli SET ursa:test:kept yes >/dev/null
kill -9 "$redis_pid"
wait_for 10 "redis to die" dead "$redis_pid"
if "$URSA" status >"$T/status.out"; then fail "status exit 0 with redis down"; fi
grep -Eq '^redis +- +down' "$T/status.out" || fail "status with redis down: $(cat "$T/status.out")"
out=$("$URSA" up)
echo "$out" | grep -q "started redis" || fail "up did not restart redis: $out"
echo "$out" | grep -q "started broker" && fail "up restarted a healthy broker: $out"
check_eq "key kept across redis restart (AOF)" "$(rcli GET ursa:test:kept)" yes
check_eq "password kept across redis restart" "$(cat "$URSA_STATE_DIR/redis.password")" "$PW"

"$URSA" down >"$T/down.log"
check_eq "env lines after down (no metrics ports)" "$("$URSA" env | grep -c METRICS_URL)" 0
grep -q "stopped redis" "$T/down.log" || fail "down: $(cat "$T/down.log")"
grep -q "stopped broker" "$T/down.log" || fail "down: $(cat "$T/down.log")"
[ ! -e "$URSA_STATE_DIR/run/redis.pid" ] || fail "redis pid file left after down"
redis-cli -p "$REDIS_PORT" PING >/dev/null 2>&1 && fail "redis still answers after down"
if "$URSA" status >/dev/null; then fail "status exit 0 after down"; fi
echo "test_stack: ok"
