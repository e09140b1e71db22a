/* kq-probe: a real Kafka/Redis process built on common/io/kq and common/io/rstore,
 * for the integration tests. It is a tiny ursa stage:
 *
 *   kq-probe produce --topic T --count N [--prefix P] [--poison I,J,...]
 *   kq-probe consume --group G --topic T --worker W [--fail-on S]
 *                    [--crash-after N] [--sleep-ms M] [--forward TOPIC]
 *                    [--hold-key K --hold-ms M]
 *
 * consume applies each message's effect to Redis exactly once (a SET NX
 * marker per message key, then HINCRBY probe:stats applied), counts every
 * handler call in probe:stats handled (which grows on redelivery), and
 * records the partitions it owned in probe:parts:<worker>. --crash-after N
 * SIGKILLs the process right after the Nth effect, before its offset is
 * stored. Messages containing --fail-on always fail transiently. The
 * message keyed --hold-key is held (kq_job_hold) for --hold-ms before its
 * effect, as a download from a slow host is. */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "kq.h"
#include "log.h"
#include "rstore.h"
#include "service.h"
#include "statedir.h"
#include "util.h"

static const cfg_def probe_defs[] = {
    {"topic", CFG_STR, "ursa.probe", 1, 0, "topic"},
    {"count", CFG_INT, "10", 0, 10000000, "messages to produce"},
    {"prefix", CFG_STR, "m", 1, 0, "key/value prefix"},
    {"poison", CFG_STR, "", 1, 0, "comma-separated indexes produced as poison"},
    {"group", CFG_STR, "ursa-probe", 1, 0, "consumer group"},
    {"worker", CFG_STR, "w1", 1, 0, "worker name"},
    {"fail-on", CFG_STR, "poison", 1, 0, "values containing this always fail"},
    {"crash-after", CFG_INT, "0", 0, 10000000, "SIGKILL self after N effects"},
    {"sleep-ms", CFG_INT, "0", 0, 60000, "pause per message"},
    {"forward", CFG_STR, "", 1, 0, "also produce each message to this topic"},
    {"hold-key", CFG_STR, "", 1, 0, "the key of a message held before its effect"},
    {"hold-ms", CFG_INT, "0", 0, 600000, "how long that message is held"},
    {"busy-tick", CFG_BOOL, "false", 1, 0,
     "install background work that returns at once, as the verifier's does"},
    {NULL, 0, NULL, 0, 0, NULL}};

static atomic_int run = 1;

/* Background work with nothing to wait on: returns at once, whatever the
 * timeout (the verifier's tick does when its batch is empty). */
static int quick_tick(void *opaque, int timeout_ms) {
    (void)opaque;
    (void)timeout_ms;
    return 0;
}

typedef struct {
    const cfg *c;
    rstore *r;
    long effects;
    kq_job *held; /* --hold-key's message, until its time */
    int64_t held_until;
    char held_val[256];
} probe;

static ursa_err effect(probe *p, const kq_msg *m, kq_job *job, const char *key,
                       const char *val, char *reason, size_t rs);

/* Ends the held message's hold when its time comes. */
static int hold_tick(void *opaque, int timeout_ms) {
    (void)timeout_ms;
    probe *p = opaque;
    if (!p->held || util_mono_ms() < p->held_until) return 0;
    char reason[256];
    const char *key = cfg_str(p->c, "hold-key");
    if (effect(p, NULL, p->held, key, p->held_val, reason, sizeof reason) != URSA_OK) {
        p->held_until = util_mono_ms() + 100; /* Redis away: again soon */
        return 0;
    }
    ULOG_INFO("event=released key=%s", key);
    kq_job_done(p->held);
    p->held = NULL;
    return 0;
}

/* Apply once per key; count every call. */
static const char *lua =
    "if redis.call('SET', KEYS[1], '1', 'NX') then "
    "  redis.call('HINCRBY', KEYS[2], 'applied', 1) "
    "  redis.call('RPUSH', KEYS[3], ARGV[1]) "
    "  return 1 end return 0";

static ursa_err handler(void *opaque, const kq_msg *m, kq_job *job, char *reason,
                        size_t rs) {
    probe *p = opaque;
    char val[256], key[256];
    snprintf(val, sizeof val, "%.*s", (int)m->len, (const char *)m->value);
    snprintf(key, sizeof key, "%.*s", (int)m->key_len, (const char *)m->key);
    const char *worker = cfg_str(p->c, "worker");
    /* not idempotent on purpose: shows how often a message was handled */
    ursa_err err = rstore_cmd(p->r, NULL, "HINCRBY probe:stats handled 1");
    if (err) return err;
    err = rstore_cmd(p->r, NULL, "SADD probe:parts:%s %d", worker, (int)m->partition);
    if (err) return err;
    if (strstr(val, cfg_str(p->c, "fail-on"))) {
        snprintf(reason, rs, "poison message %s: always fails", key);
        return URSA_ERR_TRANSIENT;
    }
    if (cfg_int(p->c, "sleep-ms")) util_sleep_ms(cfg_int(p->c, "sleep-ms"));
    if (!p->held && *cfg_str(p->c, "hold-key") && !strcmp(key, cfg_str(p->c, "hold-key"))) {
        ULOG_INFO("event=holding key=%s ms=%lld", key, (long long)cfg_int(p->c, "hold-ms"));
        kq_job_hold(job);
        p->held = job;
        p->held_until = util_mono_ms() + cfg_int(p->c, "hold-ms");
        snprintf(p->held_val, sizeof p->held_val, "%s", val);
        return URSA_OK;
    }
    return effect(p, m, job, key, val, reason, rs);
}

/* The message's effect, once per key (and its forward) */
static ursa_err effect(probe *p, const kq_msg *m, kq_job *job, const char *key,
                       const char *val, char *reason, size_t rs) {
    ursa_err err;
    char marker[300];
    snprintf(marker, sizeof marker, "probe:done:%s", key);
    err = rstore_cmd(p->r, NULL, "EVAL %s 3 %s probe:stats probe:log %s", lua, marker,
                     val);
    if (err == URSA_ERR_REDIS) {
        snprintf(reason, rs, "%s", rstore_last_error(p->r));
        return URSA_ERR_TRANSIENT;
    }
    if (err) return err;
    const char *fwd = cfg_str(p->c, "forward");
    if (*fwd && m && (err = kq_job_produce(job, fwd, m->key, m->key_len, m->value, m->len)))
        return err;
    if (++p->effects == cfg_int(p->c, "crash-after")) {
        ULOG_INFO("event=crashing_on_purpose key=%s", key);
        raise(SIGKILL);
    }
    return URSA_OK;
}

static int do_produce(const cfg *c, kq_producer *prod) {
    long n = (long)cfg_int(c, "count");
    const char *prefix = cfg_str(c, "prefix"), *poison = cfg_str(c, "poison");
    for (long i = 0; i < n; i++) {
        char key[64], val[128], tok[32];
        snprintf(key, sizeof key, "%s-%ld", prefix, i);
        snprintf(tok, sizeof tok, ",%ld,", i);
        char pl[1024];
        snprintf(pl, sizeof pl, ",%s,", poison);
        int bad = strstr(pl, tok) != NULL;
        snprintf(val, sizeof val, "%s %s-%ld", bad ? "poison" : "value", prefix, i);
        if (kq_produce(prod, cfg_str(c, "topic"), key, strlen(key), val, strlen(val),
                       NULL, 0, NULL, NULL))
            return 1;
    }
    if (kq_producer_flush(prod, 30000)) {
        fprintf(stderr, "kq-probe: flush timed out\n");
        return 1;
    }
    printf("produced %ld\n", n);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: kq-probe produce|consume [settings]\n");
        return 2;
    }
    const cfg_def *const tables[] = {cfg_defs_base, cfg_defs_kafka, cfg_defs_redis,
                                     probe_defs, NULL};
    cfg *c;
    int argi;
    int rc = service_setup("kq-probe", SERVICE_NO_BEAT,
                           "usage: kq-probe produce|consume [settings]\n", tables, argc - 1,
                           argv + 1, &c, &argi);
    if (rc >= 0) return rc;
    service_signals(&run);
    char bs[512], url[600], err[512];
    if (statedir_kafka_bootstrap(c, bs, sizeof bs, err, sizeof err)) {
        fprintf(stderr, "kq-probe: %s\n", err);
        return 2;
    }
    kq_producer *prod = kq_producer_new(c, bs, err, sizeof err);
    if (!prod) {
        fprintf(stderr, "kq-probe: %s\n", err);
        return 1;
    }
    if (strcmp(argv[1], "produce") == 0) {
        rc = do_produce(c, prod);
    } else {
        if (statedir_redis_url(c, url, sizeof url, err, sizeof err)) {
            fprintf(stderr, "kq-probe: %s\n", err);
            return 2;
        }
        probe p = {c, rstore_new(url, (int)cfg_int(c, "redis.timeout-ms"), err, sizeof err), 0,
                   NULL, 0, ""};
        if (!p.r) {
            fprintf(stderr, "kq-probe: %s\n", err);
            return 2;
        }
        const char *topics[] = {cfg_str(c, "topic"), NULL};
        kq_consumer *kc = kq_consumer_new(c, bs, cfg_str(c, "group"), topics, prod,
                                          handler, &p, err, sizeof err);
        if (!kc) {
            fprintf(stderr, "kq-probe: %s\n", err);
            return 1;
        }
        if (cfg_bool(c, "busy-tick")) kq_consumer_set_tick(kc, quick_tick, NULL);
        else if (*cfg_str(c, "hold-key")) kq_consumer_set_tick(kc, hold_tick, &p);
        rc = kq_consumer_run(kc, &run) == URSA_OK ? 0 : 1;
        kq_consumer_destroy(kc);
        rstore_destroy(p.r);
    }
    kq_producer_destroy(prod);
    cfg_destroy(c);
    return rc;
}
