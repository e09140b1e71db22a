/* service.c: daemon set-up; see service.h. */
#include "service.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "blob.h"
#include "health.h"
#include "heartbeats.h"
#include "http.h"
#include "kq.h"
#include "metrics.h"
#include "rstore.h"
#include "statedir.h"
#include "util.h"

#include <unistd.h>

#ifndef URSA_VERSION
#define URSA_VERSION "unknown"
#endif

const char *service_version(void) { return URSA_VERSION; }

/* This process's daemon: one a process. */
static struct {
    char name[32], instance[HB_INSTANCE_MAX + 1], host[256];
    int64_t started_ms;
    int metrics_port;
    int beaten;        /* a heartbeat was sent: a clean stop takes it out */
    http_server *http; /* on <name>.metrics-port */
    /* the settings every daemon has, named after it (<name>.instance, ...) */
    char set_instance[64], set_port[64], set_bind[64];
    cfg_def defs[4];
} me;

static int64_t last_beat;

void service_degraded(const char *why) {
    health_set_degraded(why);
    last_beat = 0; /* tell `ursa status` at the next tick */
}

int service_beat_due(void) {
    health_loop_alive();
    return !last_beat || util_mono_ms() - last_beat >= HB_INTERVAL_MS;
}

static hb_identity identity(void) {
    hb_identity id = {me.name, me.instance, me.host, (int)getpid(), me.started_ms,
                      URSA_VERSION, me.metrics_port};
    return id;
}

/* The blob store's counters on /metrics, brought up to date at each beat. */
static struct {
    blob_store *bs;
    blob_stats seen;
    metrics_series *req, *err, *retry, *corrupt, *in, *out, *secs;
} bm;

static void blob_metrics_start(blob_store *bs) {
    memset(&bm, 0, sizeof bm);
    bm.req = metrics_plain_counter("blob_requests_total",
                                   "Requests to the object store (0 for a local directory).");
    bm.err = metrics_plain_counter("blob_errors_total",
                                   "Object store requests that failed after their retries.");
    bm.retry = metrics_plain_counter("blob_retries_total", "Object store requests tried again.");
    bm.corrupt = metrics_plain_counter("blob_corrupt_total",
                                       "Blobs refused because their bytes do not hash to their key.");
    metrics_family *bytes = metrics_counter("blob_bytes_total",
                                            "Bytes to and from the object store.", "direction");
    bm.in = metrics_with(bytes, "in");
    bm.out = metrics_with(bytes, "out");
    bm.secs = metrics_plain_counter("blob_request_seconds_total",
                                    "Time spent in object store requests.");
    bm.bs = bs;
}

static void blob_metrics_update(void) {
    if (!bm.bs) return;
    blob_stats st;
    blob_store_stats(bm.bs, &st);
    metrics_add(bm.req, (double)(st.requests - bm.seen.requests));
    metrics_add(bm.err, (double)(st.errors - bm.seen.errors));
    metrics_add(bm.retry, (double)(st.retries - bm.seen.retries));
    metrics_add(bm.corrupt, (double)(st.corrupt - bm.seen.corrupt));
    metrics_add(bm.in, (double)(st.bytes_in - bm.seen.bytes_in));
    metrics_add(bm.out, (double)(st.bytes_out - bm.seen.bytes_out));
    metrics_add(bm.secs, (double)(st.latency_us - bm.seen.latency_us) / 1e6);
    bm.seen = st;
}

void service_beat(rstore *r, const char *const *kv) {
    last_beat = util_mono_ms();
    blob_metrics_update();
    char why[400];
    health_degraded(why, sizeof why);
    hb_identity id = identity();
    if (hb_beat(r, &id, why, kv) == URSA_OK) me.beaten = 1; /* best effort */
}

int service_addrs_resolve(const cfg *c, const char *prog, service_addrs *a) {
    char err[512];
    if (statedir_kafka_bootstrap(c, a->kafka, sizeof a->kafka, err, sizeof err) ||
        statedir_redis_url(c, a->redis, sizeof a->redis, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return -1;
    }
    /* the address is in the config now; a password in it must not stay
     * readable in /proc/PID/environ for the daemon's whole life */
    util_env_scrub("URSA_REDIS_URL");
    util_url_redact(a->redis, a->redis_shown, sizeof a->redis_shown);
    if (statedir_blob_dir(c, a->blobs, sizeof a->blobs)) {
        fprintf(stderr, "%s: blob.dir is too long\n", prog);
        return -1;
    }
    return 0;
}

int service_connect(const cfg *c, const char *prog, service_conns *s, int *rc) {
    char err[512];
    memset(s, 0, sizeof *s);
    *rc = 2;
    if (service_addrs_resolve(c, prog, &s->a)) return -1;
    *rc = 1;
    if (!(s->r = rstore_new(s->a.redis, (int)cfg_int(c, "redis.timeout-ms"), err, sizeof err)) ||
        !(s->bs = statedir_blob_store(c, err, sizeof err)) ||
        !(s->p = kq_producer_new(c, s->a.kafka, err, sizeof err))) {
        char q[600];
        ULOG_ERROR("event=start_failed err=%s", ulog_quote(q, sizeof q, err));
        fprintf(stderr, "%s: %s\n", prog, err);
        return -1;
    }
    blob_metrics_start(s->bs);
    health_deps d = {s->a.redis, kq_producer_rk(s->p), s->bs};
    if (health_start(&d, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return -1;
    }
    char addr[128] = "off";
    if (me.metrics_port) {
        const char *bind = cfg_str(c, me.set_bind);
        if (!(me.http = health_listen(bind, me.metrics_port, err, sizeof err))) {
            char q[600];
            ULOG_ERROR("event=start_failed err=%s", ulog_quote(q, sizeof q, err));
            fprintf(stderr, "%s: metrics port: %s\n", prog, err);
            return -1;
        }
        snprintf(addr, sizeof addr, "%s:%d", bind, me.metrics_port);
    }
    ULOG_INFO("event=instance id=%s host=%s version=%s metrics=%s", me.instance, me.host,
              URSA_VERSION, addr);
    return 0;
}

void service_disconnect(service_conns *s) {
    if (me.beaten && s->r) {
        hb_identity id = identity();
        hb_remove(s->r, &id);
        me.beaten = 0;
    }
    http_stop(me.http);
    me.http = NULL;
    health_stop();
    bm.bs = NULL;
    kq_producer_destroy(s->p);
    rstore_destroy(s->r);
    blob_store_destroy(s->bs);
    memset(s, 0, sizeof *s);
}

static atomic_int *stop_flag; /* lock-free: a signal handler may store to it */

/* The backstop of a stop: whatever hangs (a dead broker, a stuck disk),
 * the process is gone SERVICE_STOP_S after the first stop signal. Nothing
 * acknowledged is lost by this: offsets follow effects, so an exit here is
 * a SIGKILL that every daemon survives, announced. */
enum { SERVICE_STOP_S = 14 };

static void on_alarm(int sig) {
    (void)sig;
    static const char m[] = "ursa: the stop took longer than 14 s; exiting now "
                            "(unfinished messages are delivered again)\n";
    ssize_t w = write(2, m, sizeof m - 1);
    (void)w;
    _exit(3);
}

static void on_stop(int sig) {
    (void)sig;
    if (stop_flag && atomic_exchange(stop_flag, 0)) alarm(SERVICE_STOP_S);
}

void service_signals(atomic_int *run) {
    stop_flag = run;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* The settings every daemon has, under its own name: a table made at
 * start, since the names depend on the daemon. */
static const cfg_def *own_defs(const char *name, int flags) {
    snprintf(me.set_instance, sizeof me.set_instance, "%s.instance", name);
    snprintf(me.set_port, sizeof me.set_port, "%s.metrics-port", name);
    snprintf(me.set_bind, sizeof me.set_bind, "%s.metrics-bind", name);
    cfg_def *d = me.defs;
    if (flags & SERVICE_NO_BEAT) {
        *d = (cfg_def){NULL, 0, NULL, 0, 0, NULL};
        return me.defs;
    }
    *d++ = (cfg_def){me.set_instance, CFG_STR, "", 1, 0,
                     "this instance's id in heartbeats and `ursa status` (letters, digits, "
                     ". _ - : @; at most 100); empty: <host name>:<pid>"};
    if (!(flags & SERVICE_OWN_HTTP)) {
        *d++ = (cfg_def){me.set_port, CFG_INT, "0", 0, 65535,
                         "serve /metrics, /healthz and /readyz on this port (0: off)"};
        *d++ = (cfg_def){me.set_bind, CFG_STR, "127.0.0.1", 1, 0,
                         "address the metrics port listens on (0.0.0.0 or :: for every "
                         "interface)"};
    }
    *d = (cfg_def){NULL, 0, NULL, 0, 0, NULL};
    return me.defs;
}

/* Who this process is: its instance id, host, start time; registers the
 * metrics that say so. -1 after printing why the id is refused. */
static int identify(const cfg *c, int flags) {
    if (gethostname(me.host, sizeof me.host - 1) != 0 || !me.host[0])
        snprintf(me.host, sizeof me.host, "localhost");
    me.started_ms = util_now_ms();
    if (flags & SERVICE_NO_BEAT) return 0;
    const char *inst = cfg_str(c, me.set_instance);
    if (*inst) snprintf(me.instance, sizeof me.instance, "%s", inst);
    else snprintf(me.instance, sizeof me.instance, "%.80s:%d", me.host, (int)getpid());
    if (!hb_instance_valid(me.instance)) {
        fprintf(stderr, "%s: %s: expected 1 to %d letters, digits or . _ - : @, got \"%s\"\n",
                me.name, me.set_instance, HB_INSTANCE_MAX, inst);
        return -1;
    }
    me.metrics_port = flags & SERVICE_OWN_HTTP ? 0 : (int)cfg_int(c, me.set_port);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "ursa_%s", me.name);
    metrics_set_prefix(prefix);
    metrics_set(metrics_plain_gauge("start_time_seconds",
                                    "When the process started, in seconds since the epoch."),
                (double)me.started_ms / 1000);
    metrics_set(metrics_with(metrics_gauge("build_info", "The version running (value 1).",
                                           "version"),
                             URSA_VERSION),
                1);
    return 0;
}

static const cfg_def log_defs[] = {
    {"log.file", CFG_STR, "", 1, 0,
     "write the log (and stdout and stderr) to this file, rotated by size (ursa up sets "
     "<state-dir>/log/<daemon>.log); empty: the log goes to stdout, for containers and journald"},
    {"log.max-mb", CFG_INT, "64", 0, 1e6,
     "rotate log.file when it reaches this many MB (0: never)"},
    {"log.keep", CFG_INT, "3", 1, 100, "rotated files kept: log.file.1 (the newest) to .N"},
    {NULL, 0, NULL, 0, 0, NULL}};

int service_setup(const char *name, int flags, const char *usage,
                  const cfg_def *const *tables, int argc, char **argv,
                  cfg **out, int *argi) {
    *out = NULL;
    ulog_init(name);
    snprintf(me.name, sizeof me.name, "%s", name);
    const cfg_def *all[16];
    size_t nt = 0;
    while (tables[nt] && nt < sizeof all / sizeof all[0] - 3) all[nt] = tables[nt], nt++;
    all[nt++] = log_defs;
    all[nt++] = own_defs(name, flags);
    all[nt] = NULL;
    cfg *c = cfg_new(all, "kafka.");
    char own[64];
    snprintf(own, sizeof own, "%s.", name); /* ursa-inference --port: --inference.port */
    if (!c || cfg_set_own_prefix(c, own) != URSA_OK) {
        cfg_destroy(c);
        fprintf(stderr, "%s: out of memory\n", name);
        return 2;
    }
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "--version")) {
            printf("ursa-%s %s\n", name, URSA_VERSION);
            cfg_destroy(c);
            return 0;
        }
    char errstr[512];
    int help = 0;
    if (cfg_load(c, argc, argv, argi, &help, errstr, sizeof errstr)) {
        fprintf(stderr, "%s: %s\n", name, errstr);
        cfg_destroy(c);
        return 2;
    }
    if (help) {
        printf("%s", usage);
        cfg_print_help(c, stdout);
        cfg_destroy(c);
        return 0;
    }
    int lvl = ulog_level_parse(cfg_str(c, "log.level"));
    if (lvl < 0) {
        fprintf(stderr, "%s: log.level: expected error, warn, info or debug\n", name);
        cfg_destroy(c);
        return 2;
    }
    ulog_level = lvl;
    const char *lf = cfg_str(c, "log.file");
    if (*lf && ulog_open_file(lf, cfg_int(c, "log.max-mb") << 20, (int)cfg_int(c, "log.keep"))) {
        fprintf(stderr, "%s: log.file %s: %s\n", name, lf, strerror(errno));
        cfg_destroy(c);
        return 2;
    }
    if (!*lf) ulog_set_fd(STDOUT_FILENO);
    if (identify(c, flags)) {
        cfg_destroy(c);
        return 2;
    }
    *out = c;
    return -1;
}
