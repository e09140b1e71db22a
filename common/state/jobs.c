/* jobs.c: jobs and models in Redis; see jobs.h. */
#include "jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kq.h"
#include "msg.h"
#include "registry.h"
#include "topics.h"
#include "util.h"

static const char *const state_names[JOB__COUNT] = {"queued", "running", "done", "failed",
                                                     "cancelled"};

const char *job_state_name(job_state s) {
    return (unsigned)s < JOB__COUNT ? state_names[s] : "unknown";
}

int job_state_parse(const char *s) {
    for (int i = 0; i < JOB__COUNT; i++)
        if (s && !strcmp(s, state_names[i])) return i;
    return -1;
}

int job_state_final(job_state s) { return s >= JOB_DONE; }

int job_id_valid(const char *id) {
    size_t n = id ? strlen(id) : 0;
    if (n < 1 || n > JOB_ID_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

void job_new_id(char id[JOB_ID_MAX + 1]) {
    char r[33];
    msg_new_id(r);
    snprintf(id, JOB_ID_MAX + 1, "j%.15s", r);
}

void job_model_id(const char *dataset, const char *job_id, char *out, size_t size) {
    snprintf(out, size, "%s-%s", dataset, job_id);
}

/* The job's hash key and the time now, as text. */
static void key_now(const char *id, char key[80], char now[24]) {
    snprintf(key, 80, "ursa:job:%s", id);
    snprintf(now, 24, "%lld", (long long)util_now_ms());
}

/* Runs a script with one key and string arguments; *reply on OK. */
static ursa_err eval(rstore *r, redisReply **reply, const char *script, const char *key,
                     const char *const *args, int nargs) {
    const char *argv[48];
    if (nargs > 44) return URSA_ERR_INVALID;
    int n = 0;
    argv[n++] = "EVAL";
    argv[n++] = script;
    argv[n++] = "1";
    argv[n++] = key;
    for (int i = 0; i < nargs; i++) argv[n++] = args[i];
    return rstore_cmdargv(r, reply, n, argv, NULL);
}

static int kv_count(const char *const *kv) {
    int n = 0;
    while (kv && kv[n] && kv[n + 1]) n += 2;
    return n;
}

ursa_err job_create(rstore *r, const char *id, const char *kind, const char *dataset,
                    const char *arch, const void *spec, size_t spec_len, int *created) {
    static const char script[] =
        "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end "
        "redis.call('HSET', KEYS[1], 'state', 'queued', 'kind', ARGV[1], 'dataset', ARGV[2], "
        "'arch', ARGV[3], 'spec', ARGV[4], 'created_ms', ARGV[5], 'starts', 0, 'resumes', 0) "
        "return 1";
    char key[80], now[24];
    key_now(id, key, now);
    /* listed first, in its own command: a script may touch only its declared
     * keys, which share one cluster slot; a listed job whose hash is not
     * written yet is skipped by readers (ursa jobs) */
    ursa_err le = rstore_cmd(r, NULL, "ZADD ursa:jobs NX %s %s", now, id);
    if (le) return le;
    const char *argv[] = {"EVAL", script, "1", key, kind, dataset, arch, (const char *)spec, now, id};
    size_t lens[10];
    for (int i = 0; i < 10; i++) lens[i] = i == 7 ? spec_len : strlen(argv[i]);
    redisReply *rep = NULL;
    ursa_err e = rstore_cmdargv(r, &rep, 10, argv, lens);
    if (e == URSA_OK && created) *created = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    if (rep) freeReplyObject(rep);
    return e;
}

ursa_err job_get_state(rstore *r, const char *id, job_state *s) {
    redisReply *rep = NULL;
    ursa_err e = rstore_cmd(r, &rep, "HGET ursa:job:%s state", id);
    if (e) return e;
    int st = rep->type == REDIS_REPLY_STRING ? job_state_parse(rep->str) : -1;
    freeReplyObject(rep);
    if (st < 0) return URSA_ERR_NOT_FOUND;
    *s = (job_state)st;
    return URSA_OK;
}

/* ARGV: state ("" keeps it), now, final, then name/value pairs. */
static const char set_script[] =
    "local s = redis.call('HGET', KEYS[1], 'state') "
    "if not s then return -1 end "
    "if s == 'done' or s == 'failed' or s == 'cancelled' then return 0 end "
    "if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'state', ARGV[1]) end "
    "if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'ended_ms', ARGV[2]) end "
    "for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end "
    "return 1";

static ursa_err set_fields(rstore *r, const char *id, const char *state, int final,
                           const char *const *kv, int *moved) {
    const char *args[44];
    int nkv = kv_count(kv), n = 0;
    if (nkv > 40) return URSA_ERR_INVALID;
    char key[80], now[24];
    key_now(id, key, now);
    args[n++] = state;
    args[n++] = now;
    args[n++] = final ? "1" : "0";
    for (int i = 0; i < nkv; i++) args[n++] = kv[i];
    redisReply *rep = NULL;
    ursa_err e = eval(r, &rep, set_script, key, args, n);
    if (e) return e;
    long long v = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    freeReplyObject(rep);
    if (v < 0) return URSA_ERR_NOT_FOUND;
    if (moved) *moved = v == 1;
    return URSA_OK;
}

ursa_err job_set_state(rstore *r, const char *id, job_state s, const char *const *kv, int *moved) {
    return set_fields(r, id, job_state_name(s), job_state_final(s), kv, moved);
}

ursa_err job_update(rstore *r, const char *id, const char *const *kv) {
    return set_fields(r, id, "", 0, kv, NULL);
}

ursa_err job_cancel(rstore *r, const char *id, job_state *state) {
    static const char script[] =
        "local s = redis.call('HGET', KEYS[1], 'state') "
        "if not s then return '' end "
        "if s == 'queued' then redis.call('HSET', KEYS[1], 'state', 'cancelled', 'cancel', 1, "
        "'ended_ms', ARGV[1], 'error', 'cancelled before it started') "
        "elseif s == 'running' then redis.call('HSET', KEYS[1], 'cancel', 1) end "
        "return s";
    char key[80], now[24];
    key_now(id, key, now);
    const char *args[] = {now};
    redisReply *rep = NULL;
    ursa_err e = eval(r, &rep, script, key, args, 1);
    if (e) return e;
    int st = rep->type == REDIS_REPLY_STRING ? job_state_parse(rep->str) : -1;
    freeReplyObject(rep);
    if (st < 0) return URSA_ERR_NOT_FOUND;
    *state = (job_state)st;
    return URSA_OK;
}

ursa_err job_lease(rstore *r, const char *id, const char *worker, int ttl_ms, int *got) {
    static const char script[] =
        "local v = redis.call('GET', KEYS[1]) "
        "if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end "
        "if v then return 0 end "
        "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1";
    char key[96], ttl[24];
    snprintf(key, sizeof key, "ursa:job:%s:lease", id);
    snprintf(ttl, sizeof ttl, "%d", ttl_ms);
    const char *args[] = {worker, ttl};
    redisReply *rep = NULL;
    ursa_err e = eval(r, &rep, script, key, args, 2);
    if (e) return e;
    *got = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    return URSA_OK;
}

ursa_err job_lease_release(rstore *r, const char *id, const char *worker) {
    static const char script[] =
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
        "return 0";
    char key[96];
    snprintf(key, sizeof key, "ursa:job:%s:lease", id);
    const char *args[] = {worker};
    redisReply *rep = NULL;
    ursa_err e = eval(r, &rep, script, key, args, 1);
    if (rep) freeReplyObject(rep);
    return e;
}

/* ---- reads and small writes ------------------------------------------------- */

ursa_err job_get_all(rstore *r, const char *id, redisReply **rep) {
    char key[80], now[24];
    key_now(id, key, now);
    return rstore_hgetall(r, rep, key);
}

ursa_err job_get_field(rstore *r, const char *id, const char *field, redisReply **rep) {
    return rstore_cmd(r, rep, "HGET ursa:job:%s %s", id, field);
}

ursa_err job_del_field(rstore *r, const char *id, const char *field) {
    return rstore_cmd(r, NULL, "HDEL ursa:job:%s %s", id, field);
}

ursa_err job_incr(rstore *r, const char *id, const char *field) {
    return rstore_cmd(r, NULL, "HINCRBY ursa:job:%s %s 1", id, field);
}

ursa_err job_set_once(rstore *r, const char *id, const char *field, const char *value) {
    return rstore_cmd(r, NULL, "HSETNX ursa:job:%s %s %s", id, field, value);
}

ursa_err job_list(rstore *r, redisReply **ids) {
    return rstore_cmd(r, ids, "ZRANGE ursa:jobs 0 -1");
}

/* The row format: "stage\tepoch\ttrain_loss\tvalid_loss\terror_rate\tseconds". */
ursa_err job_row_put(rstore *r, const char *id, const job_row *w) {
    char n[16], line[160];
    snprintf(n, sizeof n, "%d", w->n);
    snprintf(line, sizeof line, "%d\t%d\t%.6f\t%.6f\t%.6f\t%.1f", w->stage, w->epoch,
             w->train_loss, w->valid_loss, w->error_rate, w->seconds);
    return rstore_cmd(r, NULL, "HSET ursa:job:%s:rows %s %s", id, n, line);
}

static int by_n(const void *a, const void *b) {
    return ((const job_row *)a)->n - ((const job_row *)b)->n;
}

ursa_err job_rows_read(rstore *r, const char *id, job_row **out, int *n) {
    redisReply *rep = NULL;
    *out = NULL;
    *n = 0;
    ursa_err e = rstore_cmd(r, &rep, "HGETALL ursa:job:%s:rows", id);
    if (e) return e;
    job_row *rows = calloc(rep->elements / 2 + 1, sizeof *rows);
    if (!rows) {
        freeReplyObject(rep);
        return URSA_ERR_NOMEM;
    }
    int k = 0;
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        job_row *w = &rows[k];
        w->n = atoi(rep->element[i]->str);
        if (sscanf(rep->element[i + 1]->str, "%d\t%d\t%lf\t%lf\t%lf\t%lf", &w->stage, &w->epoch,
                   &w->train_loss, &w->valid_loss, &w->error_rate, &w->seconds) == 6)
            k++;
    }
    freeReplyObject(rep);
    qsort(rows, (size_t)k, sizeof *rows, by_n);
    *out = rows;
    *n = k;
    return URSA_OK;
}

ursa_err job_queue(rstore *r, struct kq_producer *p, const char *id, const char *kind,
                   const char *dataset, const char *arch, const struct ProtobufCMessage *spec) {
    void *buf;
    size_t len;
    ursa_err e = msg_pack(spec, &buf, &len);
    if (e) return e;
    if ((e = job_create(r, id, kind, dataset, arch, buf, len, NULL))) {
        free(buf);
        return e;
    }
    if (kq_produce(p, TOPIC_TRAIN_JOBS, id, strlen(id), buf, len, NULL, 0, NULL, NULL) ||
        kq_producer_flush(p, 15000) != URSA_OK) {
        const char *kv[] = {"error", "could not be queued: Kafka did not take it", NULL};
        job_set_state(r, id, JOB_FAILED, kv, NULL);
        e = URSA_ERR_KAFKA;
    }
    free(buf);
    return e;
}

Ursa__TrainJob *job_last_recipe(rstore *r, const char *ds, char *model) {
    redisReply *ids = NULL, *f = NULL, *spec = NULL;
    Ursa__TrainJob *j = NULL;
    if (registry_list(r, ds, 1, 1, &ids) || ids->type != REDIS_REPLY_ARRAY || !ids->elements)
        goto out;
    const char *fields[] = {"job", NULL};
    if (registry_fields(r, ids->element[0]->str, fields, &f) || f->type != REDIS_REPLY_ARRAY ||
        f->elements != 1 || f->element[0]->type != REDIS_REPLY_STRING)
        goto out;
    if (job_get_field(r, f->element[0]->str, "spec", &spec) == URSA_OK &&
        spec->type == REDIS_REPLY_STRING)
        j = ursa__train_job__unpack(NULL, spec->len, (const uint8_t *)spec->str);
    if (j && model) snprintf(model, 160, "%s", ids->element[0]->str);
out:
    if (ids) freeReplyObject(ids);
    if (f) freeReplyObject(f);
    if (spec) freeReplyObject(spec);
    return j;
}
