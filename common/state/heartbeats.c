/* heartbeats.c: the ursa:{svc}:* keys; see heartbeats.h. */
#include "heartbeats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define HB_INDEX "ursa:{svc}:index"

/* the fields every beat writes; the rest of a hash are the counters */
static const char *const identity_fields[] = {"service", "instance", "host", "pid",
                                              "started_ms", "version", "ts_ms",
                                              "metrics_port", "degraded", NULL};

int hb_instance_valid(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > HB_INSTANCE_MAX) return 0;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:@") == n;
}

/* A host name as the index can hold it: no spaces (gethostname never gives
 * any; a set-up that does gets underscores). */
static void host_field(const char *host, char *out, size_t n) {
    snprintf(out, n, "%s", *host ? host : "-");
    for (char *p = out; *p; p++)
        if (*p == ' ') *p = '_';
}

static void key_of(char *out, size_t n, const char *service, const char *instance) {
    snprintf(out, n, "ursa:{svc}:%s:%s", service, instance);
}

static void member_of(char *out, size_t n, const hb_identity *id) {
    char host[256];
    host_field(id->host, host, sizeof host);
    snprintf(out, n, "%s %s %s", id->service, host, id->instance);
}

ursa_err hb_beat(rstore *r, const hb_identity *id, const char *degraded,
                 const char *const *kv) {
    rstore_batch *b = rstore_batch_new();
    if (!b) return URSA_ERR_NOMEM;
    char key[256], member[512], host[256];
    key_of(key, sizeof key, id->service, id->instance);
    member_of(member, sizeof member, id);
    host_field(id->host, host, sizeof host);
    long long now = (long long)util_now_ms();
    rstore_batch_add(b,
                     "HSET %s service %s instance %s host %s pid %d started_ms %lld version %s "
                     "ts_ms %lld metrics_port %d",
                     key, id->service, id->instance, host, id->pid, (long long)id->started_ms,
                     id->version, now, id->metrics_port);
    for (; kv && kv[0] && kv[1]; kv += 2) rstore_batch_add(b, "HSET %s %s %s", key, kv[0], kv[1]);
    if (degraded && *degraded) rstore_batch_add(b, "HSET %s degraded %s", key, degraded);
    else rstore_batch_add(b, "HDEL %s degraded", key);
    rstore_batch_add(b, "PEXPIRE %s %d", key, HB_TTL_MS);
    rstore_batch_add(b, "ZADD %s %lld %s", HB_INDEX, now, member);
    rstore_batch_add(b, "ZREMRANGEBYSCORE %s -inf (%lld", HB_INDEX, now - HB_STALE_MS);
    ursa_err err = rstore_batch_exec(r, b, NULL);
    rstore_batch_destroy(b);
    return err;
}

ursa_err hb_remove(rstore *r, const hb_identity *id) {
    rstore_batch *b = rstore_batch_new();
    if (!b) return URSA_ERR_NOMEM;
    char key[256], member[512];
    key_of(key, sizeof key, id->service, id->instance);
    member_of(member, sizeof member, id);
    rstore_batch_add(b, "DEL %s", key);
    rstore_batch_add(b, "ZREM %s %s", HB_INDEX, member);
    ursa_err err = rstore_batch_exec(r, b, NULL);
    rstore_batch_destroy(b);
    return err;
}

void hb_list_free(hb_instance *a, size_t n) {
    for (size_t i = 0; a && i < n; i++) {
        for (size_t k = 0; k < 2 * a[i].nkv; k++) free(a[i].kv[k]);
        free(a[i].kv);
    }
    free(a);
}

static int is_identity(const char *f) {
    for (int i = 0; identity_fields[i]; i++)
        if (!strcmp(f, identity_fields[i])) return 1;
    return 0;
}

/* Fills a live instance from its hash (an HGETALL reply). -1 when out of
 * memory. */
static int from_hash(hb_instance *h, const redisReply *rep) {
    size_t nc = 0;
    for (size_t i = 0; i + 1 < rep->elements; i += 2) nc += !is_identity(rep->element[i]->str);
    if (nc && !(h->kv = calloc(2 * nc, sizeof *h->kv))) return -1;
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        const char *f = rep->element[i]->str, *v = rep->element[i + 1]->str;
        if (!strcmp(f, "host")) snprintf(h->host, sizeof h->host, "%s", v);
        else if (!strcmp(f, "pid")) h->pid = atoi(v);
        else if (!strcmp(f, "started_ms")) h->started_ms = atoll(v);
        else if (!strcmp(f, "version")) snprintf(h->version, sizeof h->version, "%s", v);
        else if (!strcmp(f, "ts_ms")) h->last_ms = atoll(v);
        else if (!strcmp(f, "metrics_port")) h->metrics_port = atoi(v);
        else if (!strcmp(f, "degraded")) snprintf(h->degraded, sizeof h->degraded, "%s", v);
        else if (!is_identity(f)) {
            if (!(h->kv[2 * h->nkv] = strdup(f)) || !(h->kv[2 * h->nkv + 1] = strdup(v))) {
                free(h->kv[2 * h->nkv]);
                return -1;
            }
            h->nkv++;
        }
    }
    h->live = 1;
    return 0;
}

static int by_name(const void *a, const void *b) {
    const hb_instance *x = a, *y = b;
    int c = strcmp(x->service, y->service);
    if (!c) c = strcmp(x->host, y->host);
    if (!c) c = strcmp(x->instance, y->instance);
    return c;
}

ursa_err hb_list(rstore *r, int64_t now_ms, hb_instance **out, size_t *n) {
    *out = NULL;
    *n = 0;
    redisReply *rep = NULL;
    ursa_err err = rstore_cmd(r, &rep, "ZRANGEBYSCORE %s %lld +inf WITHSCORES", HB_INDEX,
                              (long long)(now_ms - HB_STALE_MS));
    if (err) return err;
    size_t cap = rep->type == REDIS_REPLY_ARRAY ? rep->elements / 2 : 0, m = 0;
    hb_instance *a = calloc(cap ? cap : 1, sizeof *a);
    if (!a) {
        freeReplyObject(rep);
        return URSA_ERR_NOMEM;
    }
    for (size_t i = 0; i < cap; i++) {
        const redisReply *e = rep->element[2 * i], *sc = rep->element[2 * i + 1];
        hb_instance h = {0};
        if (e->type != REDIS_REPLY_STRING ||
            sscanf(e->str, "%31s %255s %100s", h.service, h.host, h.instance) != 3)
            continue; /* not ours: the index holds nothing else */
        h.last_ms = sc->type == REDIS_REPLY_STRING ? atoll(sc->str) : 0;
        /* an instance id seen from two hosts (a fixed --instance moved):
         * the latest wins */
        size_t k = 0;
        while (k < m && (strcmp(a[k].service, h.service) || strcmp(a[k].instance, h.instance)))
            k++;
        if (k < m && a[k].last_ms >= h.last_ms) continue;
        a[k] = h;
        if (k == m) m++;
    }
    freeReplyObject(rep);
    rstore_batch *b = rstore_batch_new();
    if (!b) {
        free(a);
        return URSA_ERR_NOMEM;
    }
    char key[256];
    for (size_t i = 0; i < m; i++) {
        key_of(key, sizeof key, a[i].service, a[i].instance);
        rstore_batch_add(b, "HGETALL %s", key);
    }
    redisReply **reps = NULL;
    err = m ? rstore_batch_exec(r, b, &reps) : URSA_OK;
    rstore_batch_destroy(b);
    if (err) {
        free(a);
        return err;
    }
    for (size_t i = 0; i < m && err == URSA_OK; i++)
        if (reps[i]->type == REDIS_REPLY_ARRAY && reps[i]->elements >= 2 &&
            from_hash(&a[i], reps[i]))
            err = URSA_ERR_NOMEM;
    rstore_replies_free(reps, m);
    if (err) {
        hb_list_free(a, m);
        return err;
    }
    qsort(a, m, sizeof *a, by_name);
    *out = a;
    *n = m;
    return URSA_OK;
}
