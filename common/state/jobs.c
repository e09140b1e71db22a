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

/* the jobs not final: what the trainers' sweep walks instead of every job */
#define JOBS_ACTIVE "ursa:jobs:active"

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
    if (!le) le = rstore_cmd(r, NULL, "ZADD " JOBS_ACTIVE " NX %s %s", now, id);
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
    /* an ended job leaves the sweep's set; a lost ZREM is the sweep's to
     * make good (it drops ended jobs it meets) */
    if (final || v == 0) rstore_cmd(r, NULL, "ZREM " JOBS_ACTIVE " %s", id);
    return URSA_OK;
}

ursa_err job_set_state(rstore *r, const char *id, job_state s, const char *const *kv, int *moved) {
    return set_fields(r, id, job_state_name(s), job_state_final(s), kv, moved);
}

ursa_err job_update(rstore *r, const char *id, const char *const *kv) {
    return set_fields(r, id, "", 0, kv, NULL);
}

/* Takes the lease of a job that has none for holder, moves the job (not
 * final) to cancelled, and lets the lease go: with the lease held, no
 * worker can start the job between the check and the move, and a worker
 * that took it first keeps it (then *ended is 0). */
static ursa_err cancel_unowned(rstore *r, const char *id, const char *holder, const char *why,
                               int *ended) {
    int got = 0;
    *ended = 0;
    ursa_err e = job_lease(r, id, holder, 10000, &got);
    if (e || !got) return e;
    const char *kv[] = {"cancel", "1", "error", why, NULL};
    e = job_set_state(r, id, JOB_CANCELLED, kv, ended);
    job_lease_release(r, id, holder);
    return e;
}

ursa_err job_delete(rstore *r, const char *id, job_state *state) {
    static const char script[] =
        "local s = redis.call('HGET', KEYS[1], 'state') "
        "if not s then return '' end "
        "if s == 'queued' or s == 'running' then return s end "
        "redis.call('DEL', KEYS[1]) return 'deleted'";
    redisReply *rep = NULL;
    ursa_err e = rstore_cmd(r, &rep, "EXISTS ursa:job:%s", id);
    if (e) return e;
    int exists = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    if (!exists) return URSA_ERR_NOT_FOUND;
    /* the tombstone first: a replay between the two cannot make it again */
    if ((e = rstore_cmd(r, NULL, "SET ursa:job:%s:deleted 1 EX 604800", id))) return e;
    char key[80], now[24];
    key_now(id, key, now);
    if ((e = eval(r, &rep, script, key, NULL, 0))) return e;
    const char *got = rep->type == REDIS_REPLY_STRING ? rep->str : "";
    int st = strcmp(got, "deleted") ? job_state_parse(got) : -2;
    freeReplyObject(rep);
    if (st >= 0) { /* queued or running: kept, and so is it in the lists */
        *state = (job_state)st;
        rstore_cmd(r, NULL, "DEL ursa:job:%s:deleted", id);
        return URSA_ERR_INVALID;
    }
    if (st == -1) return URSA_ERR_NOT_FOUND; /* gone meanwhile */
    /* the rest lives under other keys (other slots of a cluster): each is
     * idempotent, and readers skip an id whose fields are gone */
    rstore_cmd(r, NULL, "DEL ursa:job:%s:rows", id);
    rstore_cmd(r, NULL, "DEL ursa:job:%s:lease", id);
    rstore_cmd(r, NULL, "ZREM " JOBS_ACTIVE " %s", id);
    return rstore_cmd(r, NULL, "ZREM ursa:jobs %s", id);
}

int job_is_deleted(rstore *r, const char *id) {
    redisReply *rep = NULL;
    if (rstore_cmd(r, &rep, "EXISTS ursa:job:%s:deleted", id)) return 0;
    int d = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    return d;
}

ursa_err job_cancel(rstore *r, const char *id, job_state *state, int *ended) {
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
    int dummy;
    if (!ended) ended = &dummy;
    *ended = 0;
    ursa_err e = eval(r, &rep, script, key, args, 1);
    if (e) return e;
    int st = rep->type == REDIS_REPLY_STRING ? job_state_parse(rep->str) : -1;
    freeReplyObject(rep);
    if (st < 0) return URSA_ERR_NOT_FOUND;
    *state = (job_state)st;
    if (st == JOB_QUEUED) {
        *ended = 1;
        rstore_cmd(r, NULL, "ZREM " JOBS_ACTIVE " %s", id);
    } else if (st == JOB_RUNNING) { /* nobody to stop it (its worker died): now */
        char holder[64];
        snprintf(holder, sizeof holder, "cancel:%s", now);
        e = cancel_unowned(r, id, holder, "cancelled by the user (no worker held it)", ended);
    }
    return e;
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

ursa_err job_lease_holder(rstore *r, const char *id, char *out, size_t n) {
    redisReply *rep = NULL;
    out[0] = '\0';
    ursa_err e = rstore_cmd(r, &rep, "GET ursa:job:%s:lease", id);
    if (e) return e;
    if (rep->type == REDIS_REPLY_STRING) snprintf(out, n, "%s", rep->str);
    freeReplyObject(rep);
    return URSA_OK;
}

/* ---- the sweep: jobs nobody holds ------------------------------------------------ */

#define SWEEP_CHUNK 256
#define REQUEUE_GAP_MAX_MS 300000 /* a job waiting its turn is sent again at most this often */

/* Compare-and-set on the job's requeued time (ARGV[2] is what the sweep
 * read): of two trainers sweeping at once, one sends the job again. The
 * spec comes back, or nil when the job ended or another sweep was first. */
static const char requeue_lua[] =
    "local s = redis.call('HGET', KEYS[1], 'state') "
    "if s ~= 'queued' and s ~= 'running' then return false end "
    "if (redis.call('HGET', KEYS[1], 'requeued') or '0') ~= ARGV[2] then return false end "
    "redis.call('HSET', KEYS[1], 'requeued', ARGV[1]) "
    "redis.call('HINCRBY', KEYS[1], 'requeues', 1) "
    "return redis.call('HGET', KEYS[1], 'spec')";

static ursa_err requeue(rstore *r, struct kq_producer *p, const char *id, const char *seen,
                        int *sent) {
    char key[80], now[24];
    key_now(id, key, now);
    const char *args[] = {now, seen};
    redisReply *rep = NULL;
    *sent = 0;
    ursa_err e = eval(r, &rep, requeue_lua, key, args, 2);
    if (e) return e;
    if (rep->type == REDIS_REPLY_STRING && rep->len) {
        e = kq_produce(p, TOPIC_TRAIN_JOBS, id, strlen(id), rep->str, rep->len, NULL, 0, NULL,
                       NULL);
        *sent = e == URSA_OK;
    }
    freeReplyObject(rep);
    return e;
}

static long long reply_ll(const redisReply *a, size_t i) {
    return a->element[i]->type == REDIS_REPLY_STRING ? atoll(a->element[i]->str) : 0;
}

ursa_err job_sweep(rstore *r, struct kq_producer *p, int all, int ttl_ms, int gap_ms,
                   job_sweep_cb *cb, void *opaque) {
    const char *set = all ? "ursa:jobs" : JOBS_ACTIVE;
    long long now = util_now_ms();
    ursa_err err = URSA_OK;
    for (long start = 0; !err;) {
        redisReply *ids = NULL;
        err = rstore_cmd(r, &ids, "ZRANGE %s %ld %ld WITHSCORES", set, start,
                         start + SWEEP_CHUNK - 1);
        if (err) break;
        size_t n = ids->type == REDIS_REPLY_ARRAY ? ids->elements / 2 : 0;
        rstore_batch *b = n ? rstore_batch_new() : NULL;
        redisReply **rep = NULL;
        for (size_t i = 0; b && i < n; i++) {
            const char *id = ids->element[2 * i]->str;
            rstore_batch_add(b, "HMGET ursa:job:%s state cancel created_ms beat_ms requeued "
                                "requeues", id);
            rstore_batch_add(b, "EXISTS ursa:job:%s:lease", id);
        }
        if (n && (!b || (err = rstore_batch_exec(r, b, &rep)))) {
            if (!err) err = URSA_ERR_NOMEM;
            rstore_batch_destroy(b);
            freeReplyObject(ids);
            break;
        }
        rstore_batch_destroy(b);
        long removed = 0;
        for (size_t i = 0; i < n && !err; i++) {
            const char *id = ids->element[2 * i]->str;
            long long listed = atoll(ids->element[2 * i + 1]->str);
            const redisReply *f = rep[2 * i], *l = rep[2 * i + 1];
            if (!job_id_valid(id) || f->type != REDIS_REPLY_ARRAY || f->elements != 6) continue;
            int st = f->element[0]->type == REDIS_REPLY_STRING ? job_state_parse(f->element[0]->str)
                                                               : -1;
            if (st < 0 || job_state_final((job_state)st)) {
                /* ended, or listed by a job_create that died before the hash */
                if (!all && (st >= 0 || now - listed > 60000) &&
                    rstore_cmd(r, NULL, "ZREM " JOBS_ACTIVE " %s", id) == URSA_OK)
                    removed++;
                continue;
            }
            if (all) rstore_cmd(r, NULL, "ZADD " JOBS_ACTIVE " NX %lld %s", listed, id);
            if (l->type == REDIS_REPLY_INTEGER && l->integer) continue; /* a live owner */
            if (f->element[1]->type == REDIS_REPLY_STRING && !strcmp(f->element[1]->str, "1")) {
                job_state was;
                int ended = 0;
                err = job_cancel(r, id, &was, &ended);
                if (err == URSA_ERR_NOT_FOUND) err = URSA_OK;
                if (ended && cb) cb(opaque, id, "cancelled", "cancel requested; no worker held it");
                continue;
            }
            long long created = reply_ll(f, 2), beat = reply_ll(f, 3), req = reply_ll(f, 4);
            long long gap = gap_ms;
            for (long long k = reply_ll(f, 5); k > 0 && gap < REQUEUE_GAP_MAX_MS; k--) gap *= 2;
            if (gap > REQUEUE_GAP_MAX_MS) gap = REQUEUE_GAP_MAX_MS;
            long long idle = now - (created > beat ? created : beat);
            if (idle < ttl_ms || now - req < gap) continue;
            char seen[24];
            if (f->element[4]->type == REDIS_REPLY_STRING)
                snprintf(seen, sizeof seen, "%s", f->element[4]->str);
            else
                snprintf(seen, sizeof seen, "0");
            int sent = 0;
            err = requeue(r, p, id, seen, &sent);
            if (sent && cb) {
                char why[96];
                snprintf(why, sizeof why, "%s; no worker for %lld s", job_state_name((job_state)st),
                         idle / 1000);
                cb(opaque, id, "requeued", why);
            }
        }
        if (rep) rstore_replies_free(rep, 2 * n);
        freeReplyObject(ids);
        if (n < SWEEP_CHUNK) break;
        start += SWEEP_CHUNK - removed; /* ZREM moved the later ones up */
    }
    return err;
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

ursa_err job_list_active(rstore *r, redisReply **ids) {
    return rstore_cmd(r, ids, "ZRANGE " JOBS_ACTIVE " 0 -1");
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
