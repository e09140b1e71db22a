/* service.c: daemon set-up; see service.h. */
#include "service.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "blob.h"
#include "kq.h"
#include "rstore.h"
#include "statedir.h"
#include "util.h"

#include <unistd.h>

static int64_t last_beat;
static char degraded[400]; /* why this daemon cannot do its work; "" when it can */

void service_degraded(const char *why) {
    snprintf(degraded, sizeof degraded, "%s", why ? why : "");
    last_beat = 0; /* tell `ursa status` at the next tick */
}

int service_beat_due(void) { return !last_beat || util_mono_ms() - last_beat >= 2000; }

void service_beat(rstore *r, const char *name, const char *const *kv) {
    last_beat = util_mono_ms();
    rstore_batch *b = rstore_batch_new();
    if (!b) return;
    char key[128];
    snprintf(key, sizeof key, "ursa:svc:%s:%d", name, (int)getpid());
    rstore_batch_add(b, "HSET %s ts_ms %lld", key, (long long)util_now_ms());
    for (; kv && kv[0] && kv[1]; kv += 2) rstore_batch_add(b, "HSET %s %s %s", key, kv[0], kv[1]);
    if (degraded[0]) rstore_batch_add(b, "HSET %s degraded %s", key, degraded);
    else rstore_batch_add(b, "HDEL %s degraded", key);
    rstore_batch_add(b, "EXPIRE %s 15", key);
    rstore_batch_exec(r, b, NULL); /* best effort */
    rstore_batch_destroy(b);
}

ursa_err service_beat_get(rstore *r, const char *name, int pid, redisReply **rep) {
    return rstore_cmd(r, rep, "HGETALL ursa:svc:%s:%d", name, pid);
}

int service_addrs_resolve(const cfg *c, const char *prog, service_addrs *a) {
    char err[512];
    if (statedir_kafka_bootstrap(c, a->kafka, sizeof a->kafka, err, sizeof err) ||
        statedir_redis_url(c, a->redis, sizeof a->redis, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return -1;
    }
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
    return 0;
}

void service_disconnect(service_conns *s) {
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

int service_setup(const char *name, const char *usage,
                  const cfg_def *const *tables, int argc, char **argv,
                  cfg **out, int *argi) {
    *out = NULL;
    ulog_init(name);
    cfg *c = cfg_new(tables, "kafka.");
    char own[64];
    snprintf(own, sizeof own, "%s.", name); /* ursa-inference --port: --inference.port */
    if (!c || cfg_set_own_prefix(c, own) != URSA_OK) {
        cfg_destroy(c);
        fprintf(stderr, "%s: out of memory\n", name);
        return 2;
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
    *out = c;
    return -1;
}
