/* health.c: the checking thread, the verdicts and the three routes; see
 * health.h. */
#include "health.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "log.h"
#include "metrics.h"
#include "rstore.h"
#include "util.h"

enum { DEP_REDIS, DEP_KAFKA, DEP_BLOB, NDEP };
static const char *const dep_names[NDEP] = {"redis", "kafka", "blob_store"};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER; /* everything below */
static char degraded[400];
static char problems[768]; /* the last check's, "" when everything answered */

static _Atomic int64_t alive_ms; /* the loop's last turn; 0 before health_start */

/* the checking thread and what it owns */
static struct {
    pthread_t th;
    int running, stop;
    pthread_cond_t cv;
    char *redis_url;
    rd_kafka_t *rk;
    rstore *r;
    blob_store *bs;
    metrics_series *up[NDEP], *ready, *degraded;
} ck = {.cv = PTHREAD_COND_INITIALIZER};

void health_loop_alive(void) { atomic_store(&alive_ms, util_mono_ms()); }

void health_set_degraded(const char *why) {
    pthread_mutex_lock(&mu);
    snprintf(degraded, sizeof degraded, "%s", why ? why : "");
    pthread_mutex_unlock(&mu);
    metrics_set(ck.degraded, why && *why);
}

int health_degraded(char *out, size_t n) {
    pthread_mutex_lock(&mu);
    int d = degraded[0] != '\0';
    if (out) snprintf(out, n, "%s", degraded);
    pthread_mutex_unlock(&mu);
    return d;
}

int health_ready(char *why, size_t n) {
    pthread_mutex_lock(&mu);
    int ready = !degraded[0] && !problems[0];
    if (degraded[0]) snprintf(why, n, "degraded: %s%s%s", degraded, problems[0] ? "; " : "",
                              problems);
    else snprintf(why, n, "%s", problems);
    pthread_mutex_unlock(&mu);
    return ready;
}

/* Asks each dependency once; the verdict replaces the last one. */
static void check_once(void) {
    char p[sizeof problems] = "", err[256];
    size_t o = 0;
    int up[NDEP] = {1, 1, 1};
    if (ck.redis_url) {
        if (!ck.r && (ck.r = rstore_new(ck.redis_url, 1000, err, sizeof err)))
            rstore_set_retry_ms(ck.r, 500);
        if (!ck.r || rstore_cmd(ck.r, NULL, "PING") != URSA_OK) {
            up[DEP_REDIS] = 0;
            o += (size_t)snprintf(p + o, sizeof p - o, "redis: %s; ",
                                  ck.r ? rstore_last_error(ck.r) : err);
        }
    }
    if (ck.rk && o < sizeof p) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t e = rd_kafka_metadata(ck.rk, 0, NULL, &md, 1000);
        if (md) rd_kafka_metadata_destroy(md);
        if (e) {
            up[DEP_KAFKA] = 0;
            o += (size_t)snprintf(p + o, sizeof p - o, "kafka: %s; ", rd_kafka_err2str(e));
        }
    }
    if (ck.bs && o < sizeof p && blob_store_ping(ck.bs, err, sizeof err) != URSA_OK) {
        up[DEP_BLOB] = 0;
        o += (size_t)snprintf(p + o, sizeof p - o, "blob store: %s; ", err);
    }
    if (o >= 2 && o < sizeof p) p[o - 2] = '\0'; /* the last "; " */
    pthread_mutex_lock(&mu);
    if (strcmp(p, problems)) {
        char q[sizeof p + 64];
        if (p[0]) ULOG_WARN("event=not_ready why=%s", ulog_quote(q, sizeof q, p));
        else ULOG_INFO("event=ready");
    }
    snprintf(problems, sizeof problems, "%s", p);
    int ready = !p[0] && !degraded[0];
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < NDEP; i++) metrics_set(ck.up[i], up[i]);
    metrics_set(ck.ready, ready);
}

static void *check_loop(void *arg) {
    (void)arg;
    pthread_mutex_lock(&mu);
    while (!ck.stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += HEALTH_CHECK_MS / 1000;
        ts.tv_nsec += (long)(HEALTH_CHECK_MS % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&ck.cv, &mu, &ts);
        if (ck.stop) break;
        pthread_mutex_unlock(&mu);
        check_once();
        pthread_mutex_lock(&mu);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

int health_start(const health_deps *d, char *err, size_t n) {
    ck.redis_url = d->redis_url && *d->redis_url ? strdup(d->redis_url) : NULL;
    ck.bs = d->bs;
    ck.rk = d->kafka;
    if (d->redis_url && *d->redis_url && !ck.redis_url) {
        snprintf(err, n, "out of memory");
        health_stop();
        return -1;
    }
    metrics_family *up = metrics_gauge("dependency_up",
                                       "1 when the last readiness check reached the dependency.",
                                       "dependency");
    for (int i = 0; i < NDEP; i++) ck.up[i] = metrics_with(up, dep_names[i]);
    ck.ready = metrics_plain_gauge(
        "ready", "1 when /readyz says ready: dependencies reached, not degraded.");
    ck.degraded = metrics_plain_gauge(
        "degraded", "1 while the daemon cannot do its work (its heartbeat says why).");
    metrics_set(ck.degraded, health_degraded(NULL, 0));
    health_loop_alive();
    check_once();
    if (pthread_create(&ck.th, NULL, check_loop, NULL)) {
        snprintf(err, n, "cannot start the health-check thread");
        health_stop();
        return -1;
    }
    ck.running = 1;
    return 0;
}

void health_stop(void) {
    if (ck.running) {
        pthread_mutex_lock(&mu);
        ck.stop = 1;
        pthread_cond_signal(&ck.cv);
        pthread_mutex_unlock(&mu);
        pthread_join(ck.th, NULL);
        ck.running = 0;
    }
    rstore_destroy(ck.r);
    free(ck.redis_url);
    ck.r = NULL;
    ck.bs = NULL;
    ck.redis_url = NULL;
    ck.rk = NULL;
}

int health_healthz(void *ctx, http_req *r) {
    (void)ctx;
    int64_t t = atomic_load(&alive_ms), idle = t ? util_mono_ms() - t : 0;
    if (idle < HEALTH_STALL_MS) return http_reply(r, 200, "text/plain", NULL, "ok\n", 3);
    char msg[96];
    int len = snprintf(msg, sizeof msg, "loop stalled for %lld s\n", (long long)(idle / 1000));
    return http_reply(r, 503, "text/plain", NULL, msg, (size_t)len);
}

int health_readyz(void *ctx, http_req *r) {
    (void)ctx;
    char why[sizeof problems + sizeof degraded + 32];
    if (health_ready(why, sizeof why)) return http_reply(r, 200, "text/plain", NULL, "ready\n", 6);
    size_t len = strlen(why);
    if (len + 1 < sizeof why) why[len++] = '\n';
    return http_reply(r, 503, "text/plain", "Retry-After: 1\r\n", why, len);
}

int health_metrics(void *ctx, http_req *r) {
    (void)ctx;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return http_error(r, 503, "Retry-After: 1\r\n", "out of memory");
    metrics_write(f);
    int st = fclose(f) ? http_error(r, 503, "Retry-After: 1\r\n", "out of memory")
                       : http_reply(r, 200, "text/plain; version=0.0.4", NULL, buf, len);
    free(buf);
    return st;
}

static const http_route routes[] = {
    {"/healthz", "GET,HEAD", health_healthz, "healthz", 0},
    {"/readyz", "GET,HEAD", health_readyz, "readyz", 0},
    {"/metrics", "GET,HEAD", health_metrics, "metrics", 0},
    {NULL, NULL, NULL, NULL, 0}};

http_server *health_listen(const char *bind, int port, char *err, size_t n) {
    http_opts o = http_opts_default();
    o.bind = bind;
    o.port = port;
    o.threads = 1; /* a scrape every few seconds: one event thread is plenty */
    o.connection_limit = 64;
    o.per_ip_limit = 32;
    o.header_timeout_ms = 5000;
    o.request_timeout_ms = 5000;
    o.max_body = 0;
    o.routes = routes;
    return http_start(&o, err, n);
}
