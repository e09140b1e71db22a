#!/usr/bin/env bash
# s3-server.sh: starts and stops a real one-node Ceph cluster (ceph-mon, one
# ceph-osd, radosgw) serving the S3 API on 127.0.0.1, without systemd or
# Docker, for tests and benchmarks. Everything lives in DIR; see docs/s3.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage:
  ops/s3-server.sh start DIR [--port N] [--store memstore|bluestore] [--bucket NAME]
      DIR must be empty or absent. Starts ceph-mon, ceph-osd and radosgw in
      the background (DIR/{mon,osd,rgw}.pid, DIR/*.log), creates an S3 user
      and the bucket (default "ursa"), and prints, also into DIR/env:
        S3_ENDPOINT=http://127.0.0.1:PORT
        AWS_ACCESS_KEY_ID=...
        AWS_SECRET_ACCESS_KEY=...
        S3_BUCKET=ursa
      Returns once signed S3 requests round-trip. --port: the gateway's port
      (default: a free one); --store: the OSD's object store (default memstore,
      in RAM; bluestore keeps data in DIR/osd/block across an OSD SIGKILL).
  ops/s3-server.sh stop DIR             SIGTERM to the daemons, SIGKILL after 10 s; keeps DIR
  ops/s3-server.sh stop-gateway DIR     SIGKILL radosgw only (fault drills)
  ops/s3-server.sh start-gateway DIR    start radosgw again on its port; returns when it answers
  ops/s3-server.sh --help
In a script:  ops/s3-server.sh start /tmp/s3 >/dev/null && set -a && . /tmp/s3/env && set +a
(rather than eval "$(...)", which hides a failed start)
EOF
}

TIMEOUT=60          # seconds a start (or start-gateway) may take before it gives up
REGION=us-east-1    # RGW accepts any region in the SigV4 scope; this is the usual one

say() { echo "s3-server: $*" >&2; }
die() { say "$*"; exit 1; }

# left SECS: seconds until the deadline, at least 1 (so `timeout` still runs)
left() { local n=$((DEADLINE - SECONDS)); echo $((n > 0 ? n : 1)); }

port_in_use() {
    if command -v ss >/dev/null; then
        ss -Hltn "sport = :$1" | grep -q .
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# free_port [EXCEPT]: a port nobody listens on, below the kernel's ephemeral
# range (32768+) so an outgoing connection cannot take it before we bind it.
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((10000 + RANDOM % 22000))
        [ "$p" != "${1:-}" ] && ! port_in_use "$p" && { echo "$p"; return; }
    done
    die "no free port found"
}

# pid_of NAME: the pid in DIR/NAME.pid if that process is alive and is ours
# (its command line names DIR/ceph.conf), so a recycled pid is never killed.
pid_of() {
    local f="$DIR/$1.pid" pid
    [ -s "$f" ] || return 1
    pid=$(cat "$f")
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DIR/ceph.conf" || return 1
    echo "$pid"
}

# alive PID: running, not a zombie. The daemons outlive this script, so init
# is their parent, and some inits (this VM's) take ~2 s to reap them.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# stop_daemon NAME SIG WAIT: signal it, wait up to WAIT seconds, then SIGKILL.
stop_daemon() {
    local pid n
    if pid=$(pid_of "$1"); then
        kill "-$2" "$pid" 2>/dev/null || true
        for ((n = $3 * 10; n > 0; n--)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            say "$1 (pid $pid) still running after $3 s; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for ((n = 600; n > 0; n--)); do alive "$pid" || break; sleep 0.05; done
            if alive "$pid"; then
                say "$1 (pid $pid) outlived SIGKILL by 30 s (state $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)); going on"
            fi
        fi
    fi
    rm -f "$DIR/$1.pid"
}

# One at a time, in this order: a gateway stopping while the OSD is gone
# hangs on its requests in flight, and the OSD on SIGTERM tells the monitor
# it is going down and waits for the answer.
stop_all() {
    stop_daemon rgw TERM 10
    stop_daemon osd TERM 10
    stop_daemon mon TERM 10
}

load_env() {
    [ -f "$DIR/env" ] || die "$DIR has no cluster (no $DIR/env)"
    S3_ENDPOINT=$(sed -n 's/^S3_ENDPOINT=//p' "$DIR/env")
    AWS_ACCESS_KEY_ID=$(sed -n 's/^AWS_ACCESS_KEY_ID=//p' "$DIR/env")
    AWS_SECRET_ACCESS_KEY=$(sed -n 's/^AWS_SECRET_ACCESS_KEY=//p' "$DIR/env")
    S3_BUCKET=$(sed -n 's/^S3_BUCKET=//p' "$DIR/env")
}

# s3 METHOD PATH [curl args]: one SigV4-signed request, as a client would send it.
# RGW rejects SigV4 without an x-amz-content-sha256 header (SignatureDoesNotMatch),
# and curl 7.88 does not add one: UNSIGNED-PAYLOAD (or the body's SHA-256) it is.
s3() {
    local method=$1 path=$2
    shift 2
    curl -sS --fail --max-time 10 -X "$method" \
        --aws-sigv4 "aws:amz:$REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@" "$S3_ENDPOINT$path"
}

# start_rgw: unlike ceph-mon and ceph-osd, radosgw as a daemon forks before
# it binds its port, so its exit status says nothing. It runs in the
# foreground (-f) of a background job in its own session instead: its pid is
# known at once and a failed start shows as its exit. Readiness is polled
# over HTTP, then proven with a signed request by the caller.
start_rgw() {
    STEP="starting radosgw"; LOG=rgw.log
    setsid radosgw -f -c "$DIR/ceph.conf" -n client.rgw.gw </dev/null >>"$DIR/setup.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$DIR/rgw.pid"
    STEP="waiting for radosgw to answer on $S3_ENDPOINT"
    until curl -s -o /dev/null --max-time 2 "$S3_ENDPOINT/"; do
        alive "$pid" || die "radosgw exited"
        [ $SECONDS -lt $DEADLINE ] || die "radosgw did not answer within ${TIMEOUT} s"
        sleep 0.1
    done
}

# On any failure inside start: say where, show the log that explains it,
# and stop what was started (DIR stays for a look).
on_start_exit() {
    local rc=$?
    [ $rc -eq 0 ] && return
    say "start failed while $STEP (exit $rc); last lines of $DIR/$LOG:"
    tail -n 25 "$DIR/$LOG" >&2 2>/dev/null || true
    if [ "$LOG" != setup.log ] && [ -s "$DIR/setup.log" ]; then
        say "last lines of $DIR/setup.log:"
        tail -n 10 "$DIR/setup.log" >&2
    fi
    stop_all 2>/dev/null || true
    exit $rc
}

cmd_start() {
    local port="" store=memstore bucket=ursa
    while [ $# -gt 0 ]; do
        case $1 in
            --port) port=${2:?--port needs a number}; shift 2 ;;
            --store) store=${2:?--store needs memstore or bluestore}; shift 2 ;;
            --bucket) bucket=${2:?--bucket needs a name}; shift 2 ;;
            *) die "start: unknown option $1 (see --help)" ;;
        esac
    done
    case $store in memstore | bluestore) ;; *) die "--store must be memstore or bluestore" ;; esac
    [[ -z $port || $port =~ ^[0-9]+$ ]] || die "--port needs a number"
    local b
    for b in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool curl uuidgen; do
        command -v "$b" >/dev/null || die "$b not found (apt-get install radosgw ceph-mon ceph-osd ceph-common curl uuid-runtime)"
    done
    if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then die "$DIR is not empty"; fi
    if [ -n "$port" ]; then
        port_in_use "$port" && die "port $port is in use"
    else
        port=$(free_port)
    fi
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    local mon_port fsid osd_uuid
    mon_port=$(free_port "$port")
    fsid=$(uuidgen)
    osd_uuid=$(uuidgen)
    S3_ENDPOINT=http://127.0.0.1:$port
    S3_BUCKET=$bucket
    # S3 keys in AWS's shape: 20 upper-case alphanumerics, 40 of base64ish.
    AWS_ACCESS_KEY_ID=$(tr -dc 'A-Z0-9' </dev/urandom | head -c 20 || true)
    AWS_SECRET_ACCESS_KEY=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 40 || true)

    # The store's capacity is what the OSD reports and the full ratios act on.
    # memstore: data lives in RAM; 4 GiB is a ceiling, not an allocation.
    # bluestore: a sparse file; keep it below the free disk so that the OSD
    # says "full" before the file system does (ENOSPC would crash the OSD).
    local store_conf
    if [ "$store" = memstore ]; then
        store_conf="memstore device bytes = $((4 << 30))"
    else
        local avail size
        avail=$(df --output=avail -B1 "$DIR" | tail -n 1)
        size=$((avail * 8 / 10))
        [ $size -gt $((10 << 30)) ] && size=$((10 << 30))
        [ $size -ge $((2 << 30)) ] || die "bluestore needs 2 GiB free under $DIR"
        # Startup: every close of the block device waits out one aio poll
        # (250 ms by default), and there are a dozen closes from mkfs to boot;
        # the fsck after mkfs checks a store that was just written.
        store_conf="bluestore block create = true
        bluestore block size = $size
        bdev aio poll ms = 20
        bluestore fsck on mkfs = false"
    fi

    mkdir "$DIR"/{mon,osd,rgw,run,crash}
    cat >"$DIR/ceph.conf" <<EOF
# written by ops/s3-server.sh: a one-node cluster for tests, nothing outside $DIR
[global]
        fsid = $fsid
        # msgr2 only: one monitor port instead of two
        mon host = [v2:127.0.0.1:$mon_port]
        ms bind msgr1 = false
        public addr = 127.0.0.1
        # without it the OSD binds its cluster ports on 0.0.0.0
        cluster addr = 127.0.0.1
        # cephx: with "auth = none", about 1 start in 3 failed (OSD "wrong fsid")
        auth cluster required = cephx
        auth service required = cephx
        auth client required = cephx
        keyring = $DIR/keyring
        run dir = $DIR/run
        crash dir = $DIR/crash
        mon cluster log file = $DIR/cluster.log
        # one OSD: one copy, few PGs; RGW makes 7 pools of 8 PGs each
        osd pool default size = 1
        osd pool default min size = 1
        mon allow pool size one = true
        mon warn on pool no redundancy = false
        osd pool default pg num = 8
        osd pool default pgp num = 8
        mon max pg per osd = 1000
        osd pool default pg autoscale mode = off
        osd crush chooseleaf type = 0
        # each pool creation waits a paxos round (1 s by default: 8.6 s for RGW's pools)
        paxos propose interval = 0.1
        # the monitor stops itself when its disk is 5% free; CI disks get full
        mon data avail crit = 1
[mon]
        mon data = $DIR/mon
        log file = $DIR/mon.log
        pid file = $DIR/mon.pid
        mon allow pool delete = true
[osd]
        osd data = $DIR/osd
        log file = $DIR/osd.log
        pid file = $DIR/osd.pid
        osd objectstore = $store
        # a fast shutdown skips unmounting: memstore then loses everything even on SIGTERM
        osd fast shutdown = false
        # the weight would be the size in TiB, nearly 0 here
        osd crush initial weight = 1
        # the default 4 GiB cache target is for a dedicated disk server
        osd memory target = 1073741824
        $store_conf
[client.rgw.gw]
        rgw data = $DIR/rgw
        log file = $DIR/rgw.log
        pid file = $DIR/rgw.pid
        # loopback only; tcp_nodelay: small GETs went from 22/s to ~700/s
        rgw frontends = beast endpoint=127.0.0.1:$port tcp_nodelay=1
        # no multisite sync; no lifecycle worker (it sleeps in 5 s steps, delaying SIGTERM)
        rgw run sync thread = false
        rgw enable lc threads = false
EOF

    DEADLINE=$((SECONDS + TIMEOUT))
    STEP="creating keys"; LOG=setup.log
    trap on_start_exit EXIT
    local kr=$DIR/keyring start_ns
    start_ns=$(date +%s%N)
    # Every key goes into the one keyring before the monitor's mkfs, which
    # imports them all: no "ceph auth add" round trips later.
    {
        ceph-authtool --create-keyring "$kr" --gen-key -n mon. --cap mon 'allow *'
        ceph-authtool "$kr" --gen-key -n client.admin \
            --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *'
        ceph-authtool "$kr" --gen-key -n osd.0 \
            --cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd'
        ceph-authtool "$kr" --gen-key -n client.rgw.gw \
            --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw'
        STEP="creating the monitor"
        monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$DIR/monmap"
        ceph-mon -c "$DIR/ceph.conf" -i a --mkfs --monmap "$DIR/monmap" --keyring "$kr"
    } >>"$DIR/setup.log" 2>&1

    STEP="starting ceph-mon on port $mon_port"; LOG=mon.log
    timeout "$(left)" ceph-mon -c "$DIR/ceph.conf" -i a >>"$DIR/setup.log" 2>&1

    # Register osd.0 with the monitor while the OSD formats its store.
    STEP="registering osd.0"; LOG=setup.log
    timeout "$(left)" ceph -c "$DIR/ceph.conf" osd new "$osd_uuid" 0 >>"$DIR/setup.log" 2>&1 &
    local reg=$!
    STEP="formatting the OSD ($store)"; LOG=osd.log
    timeout "$(left)" ceph-osd -c "$DIR/ceph.conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$DIR/setup.log" 2>&1
    STEP="registering osd.0"; LOG=setup.log
    wait $reg
    STEP="starting ceph-osd"; LOG=osd.log
    timeout "$(left)" ceph-osd -c "$DIR/ceph.conf" -i 0 >>"$DIR/setup.log" 2>&1

    # radosgw-admin first, radosgw second: the first of them creates the
    # default zone and RGW's pools, and the two must not race at it. It
    # blocks until the OSD is up and its PGs active.
    STEP="creating the S3 user (pools, zone; waits for the OSD)"; LOG=setup.log
    timeout "$(left)" radosgw-admin -c "$DIR/ceph.conf" user create --uid=ursa --display-name=ursa \
        --access-key="$AWS_ACCESS_KEY_ID" --secret-key="$AWS_SECRET_ACCESS_KEY" >>"$DIR/setup.log" 2>&1 ||
        { LOG=osd.log; false; }

    start_rgw
    STEP="creating bucket $S3_BUCKET"; LOG=rgw.log
    s3 PUT "/$S3_BUCKET" -o /dev/null
    STEP="checking a signed PUT/GET/DELETE round trip"
    local probe=".s3-server-probe-$$"
    s3 PUT "/$S3_BUCKET/$probe" --data-binary "probe $fsid" -o /dev/null
    [ "$(s3 GET "/$S3_BUCKET/$probe")" = "probe $fsid" ] || die "GET returned other bytes than PUT"
    s3 DELETE "/$S3_BUCKET/$probe" -o /dev/null

    trap - EXIT
    printf 'S3_ENDPOINT=%s\nAWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\nS3_BUCKET=%s\n' \
        "$S3_ENDPOINT" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" "$S3_BUCKET" >"$DIR/env"
    cat "$DIR/env"
    local ms=$((($(date +%s%N) - start_ns) / 1000000))
    say "started ($store, mon port $mon_port) in $((ms / 1000)).$(printf %03d $((ms % 1000))) s; stop with: $0 stop $DIR"
}

cmd_start_gateway() {
    load_env
    pid_of mon >/dev/null || die "ceph-mon of $DIR is not running"
    pid_of osd >/dev/null || die "ceph-osd of $DIR is not running"
    pid_of rgw >/dev/null && die "radosgw already running (pid $(cat "$DIR/rgw.pid"))"
    port_in_use "${S3_ENDPOINT##*:}" && die "port ${S3_ENDPOINT##*:} is taken by another process"
    DEADLINE=$((SECONDS + TIMEOUT))
    trap on_gateway_exit EXIT
    start_rgw
    STEP="checking a signed request"
    s3 HEAD "/$S3_BUCKET" -I -o /dev/null
    trap - EXIT
}

# A failed start-gateway leaves the rest of the cluster running.
on_gateway_exit() {
    local rc=$?
    [ $rc -eq 0 ] && return
    say "start-gateway failed while $STEP (exit $rc); last lines of $DIR/rgw.log:"
    tail -n 25 "$DIR/rgw.log" >&2 2>/dev/null || true
    exit $rc
}

[ $# -ge 1 ] || { usage >&2; exit 2; }
case $1 in
    -h | --help | help) usage; exit 0 ;;
esac
cmd=$1
[ $# -ge 2 ] || die "$cmd needs DIR (see --help)"
DIR=$2
shift 2
STEP=""; LOG=setup.log
case $cmd in
    start) cmd_start "$@" ;;
    stop | stop-gateway | start-gateway)
        [ $# -eq 0 ] || die "$cmd takes only DIR"
        [ -d "$DIR" ] || die "no directory $DIR"
        DIR=$(cd "$DIR" && pwd)
        case $cmd in
            stop) stop_all ;;
            stop-gateway) pid_of rgw >/dev/null || die "radosgw is not running"; stop_daemon rgw KILL 5 ;;
            start-gateway) cmd_start_gateway ;;
        esac ;;
    *) usage >&2; exit 2 ;;
esac
