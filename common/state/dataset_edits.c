/* dataset_edits.c: cleaning decisions in Redis; see dataset_edits.h. */
#include "dataset_edits.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "kq.h"
#include "msg.h"
#include "topics.h"
#include "util.h"

static const char *const op_names[] = {"", "delete", "relabel", "restore"};

const char *ed_op_name(ed_op op) {
    return op > ED_NONE && op <= ED_RESTORE ? op_names[op] : "?";
}

ed_op ed_op_parse(const char *s) {
    for (int i = ED_DELETE; i <= ED_RESTORE; i++)
        if (s && !strcmp(s, op_names[i])) return (ed_op)i;
    return ED_NONE;
}

static int hex_lower(const char *s, size_t n) {
    if (!s || strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

int ed_image_valid(const char *id) { return hex_lower(id, 32); }

const char *ed_base_name(ed_op op) {
    return op == ED_NONE ? "none" : op == ED_DELETE || op == ED_RELABEL ? op_names[op] : "?";
}

int ed_base_parse(const char *s, ed_op *op) {
    if (s && !strcmp(s, "none")) *op = ED_NONE;
    else if (s && !strcmp(s, "delete")) *op = ED_DELETE;
    else if (s && !strcmp(s, "relabel")) *op = ED_RELABEL;
    else return -1;
    return 0;
}

const char *ds_edit_problem(const char *ds, const ds_edit *e) {
    if (!ds_name_valid(ds)) return "bad dataset name";
    if (!ed_image_valid(e->image)) return "the image id is not 32 lowercase hex digits";
    if (e->op == ED_NONE) return "op is not delete, relabel or restore";
    if (!hex_lower(e->msg_id, 32)) return "no message id";
    if (e->from[0] && !ds_label_valid(e->from)) return "the label it had is not a valid label";
    if (e->op == ED_RELABEL && !ds_label_valid(e->to)) return "the new label is not a valid label";
    if (e->base_op != ED_NONE && e->base_op != ED_DELETE && e->base_op != ED_RELABEL)
        return "the decision it was made against is not none, delete or relabel";
    if (e->base_op == ED_RELABEL && !ds_label_valid(e->base_to))
        return "the label it was made against is not a valid label";
    if (e->op == ED_RESTORE && e->base_op == ED_NONE)
        return "a restore of an image with no decision in force: nothing to undo";
    if (e->op == ED_DELETE && e->base_op == ED_DELETE) return "the image was deleted already";
    return NULL;
}

/* orders the pending edits sent in one millisecond */
static atomic_uint send_counter;

ursa_err ds_edit_send(rstore *r, struct kq_producer *p, const char *ds, ds_edit *e) {
    Ursa__Header h;
    msg_header_init(&h, e->msg_id, ds, NULL);
    e->ts_ms = h.ts_ms;
    if (ds_edit_problem(ds, e)) return URSA_ERR_INVALID;
    Ursa__DatasetEdit m = URSA__DATASET_EDIT__INIT;
    m.header = &h;
    m.op = (char *)ed_op_name(e->op);
    m.image = e->image;
    m.label = e->from;
    m.new_label = e->to;
    m.author = e->author;
    m.reason = e->reason;
    m.base_op = (char *)ed_base_name(e->base_op);
    m.base_label = e->base_op == ED_RELABEL ? e->base_to : "";
    void *buf;
    size_t len;
    char key[128];
    snprintf(key, sizeof key, "%s/%s", ds, e->image);
    ursa_err err = msg_pack(&m.base, &buf, &len);
    if (err) return err;
    /* pending first: Kafka may lose it, Redis keeps it until it is applied */
    static const char lua[] = "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
                              "redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) return 1";
    char pend[128], pendt[128], score[40];
    snprintf(pend, sizeof pend, "ursa:ds:{%s:ed}:pending", ds);
    snprintf(pendt, sizeof pendt, "ursa:ds:{%s:ed}:pendt", ds);
    snprintf(score, sizeof score, "%lld", (long long)e->ts_ms * 1000 +
                                              (long long)(atomic_fetch_add(&send_counter, 1) % 1000));
    const char *argv[] = {"EVAL", lua, "2", pend, pendt, e->msg_id, (const char *)buf, score};
    size_t lens[8];
    for (int i = 0; i < 8; i++) lens[i] = i == 6 ? len : strlen(argv[i]);
    redisReply *rep = NULL;
    err = rstore_cmdargv(r, &rep, 8, argv, lens);
    if (rep) freeReplyObject(rep);
    if (err) {
        free(buf);
        return URSA_ERR_UNAVAILABLE;
    }
    err = kq_produce(p, TOPIC_DATASET_EDITS, key, strlen(key), buf, len, NULL, 0, NULL, NULL);
    free(buf);
    return err;
}

#define RESEND_CHUNK 512

ursa_err ds_edits_resend(rstore *r, struct kq_producer *p, const char *ds, long long older_ms,
                         size_t *n) {
    char pend[128], pendt[128], lock[128], cutoff[40], ttl[24];
    snprintf(pend, sizeof pend, "ursa:ds:{%s:ed}:pending", ds);
    snprintf(pendt, sizeof pendt, "ursa:ds:{%s:ed}:pendt", ds);
    snprintf(lock, sizeof lock, "ursa:ds:{%s:ed}:resend", ds);
    snprintf(cutoff, sizeof cutoff, "%lld", ((long long)util_now_ms() - older_ms) * 1000);
    snprintf(ttl, sizeof ttl, "%lld", older_ms > 0 ? older_ms : 1);
    *n = 0;
    redisReply *rep = NULL;
    ursa_err err = rstore_cmd(r, &rep, "ZRANGEBYSCORE %s -inf %s LIMIT 0 1", pendt, cutoff);
    if (err) return err;
    int overdue = rep->type == REDIS_REPLY_ARRAY && rep->elements > 0;
    freeReplyObject(rep);
    if (!overdue) return URSA_OK;
    if ((err = rstore_cmd(r, &rep, "SET %s 1 PX %s NX", lock, ttl))) return err;
    int mine = rep->type == REDIS_REPLY_STATUS;
    freeReplyObject(rep);
    if (!mine) return URSA_OK; /* another sweep sent them lately */
    for (long off = 0;; off += RESEND_CHUNK) {
        redisReply *ids = NULL;
        if ((err = rstore_cmd(r, &ids, "ZRANGEBYSCORE %s -inf %s LIMIT %ld %d", pendt, cutoff, off,
                              RESEND_CHUNK)))
            return err;
        size_t k = ids->type == REDIS_REPLY_ARRAY ? ids->elements : 0;
        for (size_t i = 0; i < k && !err; i++) {
            redisReply *v = NULL;
            if ((err = rstore_cmd(r, &v, "HGET %s %s", pend, ids->element[i]->str))) break;
            Ursa__DatasetEdit *d = v->type == REDIS_REPLY_STRING
                                       ? ursa__dataset_edit__unpack(NULL, v->len,
                                                                    (const uint8_t *)v->str)
                                       : NULL;
            if (d) {
                char key[128];
                snprintf(key, sizeof key, "%s/%s", ds, d->image);
                err = kq_produce(p, TOPIC_DATASET_EDITS, key, strlen(key), v->str, v->len, NULL,
                                 0, NULL, NULL);
                if (!err) (*n)++;
                ursa__dataset_edit__free_unpacked(d, NULL);
            } else { /* applied meanwhile, or not a DatasetEdit: nothing to send */
                ds_edit_forget(r, ds, ids->element[i]->str);
            }
            freeReplyObject(v);
        }
        freeReplyObject(ids);
        if (err || k < RESEND_CHUNK) break;
    }
    return err;
}

ursa_err ds_edits_delete(rstore *r, const char *ds, long long *removed) {
    static const char *const fam[] = {"cur", "log", "seen", "refused", "pending", "pendt",
                                      "resend", "audit"};
    enum { NFAM = sizeof fam / sizeof *fam };
    char keys[NFAM][128];
    const char *argv[1 + NFAM];
    *removed = 0;
    if (!ds_name_valid(ds)) return URSA_ERR_INVALID;
    argv[0] = "UNLINK";
    for (int i = 0; i < NFAM; i++) {
        snprintf(keys[i], sizeof keys[i], "ursa:ds:{%s:ed}:%s", ds, fam[i]);
        argv[1 + i] = keys[i];
    }
    redisReply *rep = NULL;
    ursa_err err = rstore_cmdargv(r, &rep, 1 + NFAM, argv, NULL);
    if (!err && rep->type == REDIS_REPLY_INTEGER) *removed = rep->integer;
    if (rep) freeReplyObject(rep);
    return err;
}

ursa_err ds_edits_pending(rstore *r, const char *ds, long long *n) {
    redisReply *rep = NULL;
    ursa_err err = rstore_cmd(r, &rep, "ZCARD ursa:ds:{%s:ed}:pendt", ds);
    if (err) return err;
    *n = rep->type == REDIS_REPLY_INTEGER ? rep->integer : 0;
    freeReplyObject(rep);
    return URSA_OK;
}

ursa_err ds_edit_forget(rstore *r, const char *ds, const char *msg_id) {
    ursa_err err = rstore_cmd(r, NULL, "HDEL ursa:ds:{%s:ed}:pending %s", ds, msg_id);
    if (!err) err = rstore_cmd(r, NULL, "ZREM ursa:ds:{%s:ed}:pendt %s", ds, msg_id);
    return err;
}

/* Free text goes into tab-separated records: controls become spaces. */
static void clean_text(char *dst, size_t n, const char *src) {
    size_t k = 0;
    for (; src && *src && k + 1 < n; src++) dst[k++] = (unsigned char)*src < 0x20 || *src == 0x7f ? ' ' : *src;
    dst[k] = '\0';
}

static void keys(const char *ds, char cur[128], char log[128], char seen[128]) {
    snprintf(cur, 128, "ursa:ds:{%s:ed}:cur", ds);
    snprintf(log, 128, "ursa:ds:{%s:ed}:log", ds);
    snprintf(seen, 128, "ursa:ds:{%s:ed}:seen", ds);
}

/* Splits s at tabs into at most n fields (in place); returns how many. */
static int split_tabs(char *s, char **f, int n) {
    int k = 0;
    while (k < n) {
        f[k++] = s;
        char *t = strchr(s, '\t');
        if (!t) break;
        *t = '\0';
        s = t + 1;
    }
    return k;
}

static void refused_key(const char *ds, char out[128]) {
    snprintf(out, 128, "ursa:ds:{%s:ed}:refused", ds);
}

/* KEYS cur, log, seen, pending, pendt, refused; ARGV msg id, image, op,
 * from, to, author, reason, ts, base op, base label. Returns {applied,
 * seq} or {-1, 0, the refused record}. The decision in force is compared
 * with the edit's base in the same script that changes it: nothing runs
 * between the two. */
static const char apply_lua[] =
    "redis.call('HDEL', KEYS[4], ARGV[1])\n"
    "redis.call('ZREM', KEYS[5], ARGV[1])\n"
    "if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then\n"
    "  return {0, redis.call('LLEN', KEYS[2])}\n"
    "end\n"
    "local was = redis.call('HGET', KEYS[6], ARGV[1])\n"
    "if was then return {-1, 0, was} end\n"
    "local op, to, seq = 'none', '', '0'\n"
    "local c = redis.call('HGET', KEYS[1], ARGV[2])\n"
    "if c then\n"
    "  local o, f, t, s = string.match(c, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$')\n"
    "  if o then op, to, seq = o, t, s else op = '?' end\n"
    "end\n"
    "if op ~= ARGV[9] or (op == 'relabel' and to ~= ARGV[10]) then\n"
    "  local r = table.concat({'conflict', op, to, seq}, '\t')\n"
    "  redis.call('HSET', KEYS[6], ARGV[1], r)\n"
    "  return {-1, 0, r}\n"
    "end\n"
    "local n = redis.call('RPUSH', KEYS[2], table.concat({ARGV[8], ARGV[2], ARGV[3],\n"
    "  ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[1]}, '\t'))\n"
    "redis.call('SADD', KEYS[3], ARGV[1])\n"
    "if ARGV[3] == 'restore' then redis.call('HDEL', KEYS[1], ARGV[2])\n"
    "else redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. '\t' .. ARGV[4] .. '\t' ..\n"
    "  ARGV[5] .. '\t' .. n) end\n"
    "return {1, n}\n";

int ds_edit_refusal_parse(const char *value, ds_edit_refusal *out) {
    char buf[320], *f[4];
    memset(out, 0, sizeof *out);
    snprintf(buf, sizeof buf, "%s", value ? value : "");
    int k = split_tabs(buf, f, 4);
    if (k == 4 && !strcmp(f[0], "conflict")) {
        out->conflict = 1;
        if (ed_base_parse(f[1], &out->now_op)) out->now_op = ED_RESTORE; /* unreadable */
        snprintf(out->now_to, sizeof out->now_to, "%s", f[2]);
        out->now_seq = atoll(f[3]);
        return 0;
    }
    if (k >= 2 && !strcmp(f[0], "refused")) {
        /* the reason may hold no tab, but keep what follows one */
        snprintf(out->why, sizeof out->why, "%s", value + strlen("refused\t"));
        return 0;
    }
    return -1;
}

/* "as given (\"cat\")", "deleted", "relabelled to \"dog\"" */
static void state_text(ed_op op, const char *to, const char *given, char *buf, size_t n) {
    if (op == ED_NONE) snprintf(buf, n, "as given (\"%s\")", given);
    else if (op == ED_DELETE) snprintf(buf, n, "deleted");
    else if (op == ED_RELABEL) snprintf(buf, n, "relabelled to \"%s\"", to);
    else snprintf(buf, n, "in an unreadable state");
}

char *ds_edit_refusal_text(const ds_edit *e, const ds_edit_refusal *f, char *buf, size_t n) {
    if (!f->conflict) {
        snprintf(buf, n, "refused: %s", f->why);
        return buf;
    }
    char was[120], now[120], by[40] = "";
    state_text(e->base_op, e->base_to, e->from, was, sizeof was);
    state_text(f->now_op, f->now_to, e->from, now, sizeof now);
    if (f->now_seq > 0) snprintf(by, sizeof by, " (edit #%lld)", f->now_seq);
    snprintf(buf, n, "conflict: decided on the image %s, now it is %s%s", was, now, by);
    return buf;
}

ursa_err ds_edit_apply(rstore *r, const char *ds, const ds_edit *e, int *applied,
                       long long *seq, ds_edit_refusal *ref) {
    if (ds_edit_problem(ds, e)) return URSA_ERR_INVALID;
    char cur[128], log[128], seen[128], author[72], reason[208], ts[24], pend[128], pendt[128],
        refused[128];
    keys(ds, cur, log, seen);
    refused_key(ds, refused);
    snprintf(pend, sizeof pend, "ursa:ds:{%s:ed}:pending", ds);
    snprintf(pendt, sizeof pendt, "ursa:ds:{%s:ed}:pendt", ds);
    clean_text(author, sizeof author, e->author);
    clean_text(reason, sizeof reason, e->reason);
    snprintf(ts, sizeof ts, "%lld", e->ts_ms);
    const char *argv[] = {"EVAL", apply_lua, "6", cur, log, seen, pend, pendt, refused,
                          e->msg_id, e->image, ed_op_name(e->op), e->from,
                          e->op == ED_RELABEL ? e->to : "", author, reason, ts,
                          ed_base_name(e->base_op), e->base_op == ED_RELABEL ? e->base_to : ""};
    redisReply *rep = NULL;
    ursa_err err = rstore_cmdargv(r, &rep, 19, argv, NULL);
    if (err) return err;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 ||
        (rep->element[0]->integer < 0 &&
         (rep->elements != 3 || rep->element[2]->type != REDIS_REPLY_STRING))) {
        freeReplyObject(rep);
        return URSA_ERR_REDIS;
    }
    if (applied) *applied = (int)rep->element[0]->integer;
    if (seq) *seq = rep->element[1]->integer;
    if (ref) {
        memset(ref, 0, sizeof *ref);
        if (rep->element[0]->integer < 0 && ds_edit_refusal_parse(rep->element[2]->str, ref))
            snprintf(ref->why, sizeof ref->why, "refused (unreadable record)");
    }
    freeReplyObject(rep);
    return URSA_OK;
}

/* KEYS seen, refused, pending, pendt; ARGV msg id, record. */
static const char refuse_lua[] =
    "if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end\n"
    "redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])\n"
    "redis.call('HDEL', KEYS[3], ARGV[1])\n"
    "redis.call('ZREM', KEYS[4], ARGV[1])\n"
    "return 1\n";

ursa_err ds_edit_refuse(rstore *r, const char *ds, const char *msg_id, const char *why,
                        int *recorded) {
    char cur[128], log[128], seen[128], refused[128], pend[128], pendt[128], rec[240], text[208];
    keys(ds, cur, log, seen);
    refused_key(ds, refused);
    snprintf(pend, sizeof pend, "ursa:ds:{%s:ed}:pending", ds);
    snprintf(pendt, sizeof pendt, "ursa:ds:{%s:ed}:pendt", ds);
    clean_text(text, sizeof text, why);
    snprintf(rec, sizeof rec, "refused\t%s", text);
    const char *argv[] = {"EVAL", refuse_lua, "4", seen, refused, pend, pendt, msg_id, rec};
    redisReply *rep = NULL;
    ursa_err err = rstore_cmdargv(r, &rep, 9, argv, NULL);
    if (err) return err;
    if (recorded) *recorded = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    return URSA_OK;
}

/* KEYS seen, refused, pending; ARGV msg id. Returns {outcome[, record]}. */
static const char outcome_lua[] =
    "if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return {1} end\n"
    "local r = redis.call('HGET', KEYS[2], ARGV[1])\n"
    "if r then return {2, r} end\n"
    "if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return {0} end\n"
    "return {3}\n";

ursa_err ds_edit_outcome(rstore *r, const char *ds, const char *msg_id, ed_outcome *out,
                         ds_edit_refusal *ref) {
    char cur[128], log[128], seen[128], refused[128], pend[128];
    keys(ds, cur, log, seen);
    refused_key(ds, refused);
    snprintf(pend, sizeof pend, "ursa:ds:{%s:ed}:pending", ds);
    const char *argv[] = {"EVAL", outcome_lua, "3", seen, refused, pend, msg_id};
    redisReply *rep = NULL;
    ursa_err err = rstore_cmdargv(r, &rep, 7, argv, NULL);
    if (err) return err;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER) {
        freeReplyObject(rep);
        return URSA_ERR_REDIS;
    }
    long long k = rep->element[0]->integer;
    *out = k == 1 ? ED_APPLIED : k == 2 ? ED_REFUSED : k == 0 ? ED_PENDING : ED_LOST;
    if (ref && k == 2) {
        if (rep->elements != 2 || rep->element[1]->type != REDIS_REPLY_STRING ||
            ds_edit_refusal_parse(rep->element[1]->str, ref)) {
            memset(ref, 0, sizeof *ref);
            snprintf(ref->why, sizeof ref->why, "refused (unreadable record)");
        }
    }
    freeReplyObject(rep);
    return URSA_OK;
}

ursa_err ds_edits_seq(rstore *r, const char *ds, long long *seq) {
    char cur[128], log[128], seen[128];
    keys(ds, cur, log, seen);
    redisReply *rep = NULL;
    ursa_err err = rstore_cmd(r, &rep, "LLEN %s", log);
    if (err) return err;
    *seq = rep->type == REDIS_REPLY_INTEGER ? rep->integer : 0;
    freeReplyObject(rep);
    return URSA_OK;
}

static int by_image(const void *a, const void *b) {
    return strcmp(((const ds_edit_cur *)a)->image, ((const ds_edit_cur *)b)->image);
}

/* One field of the cur hash: 0 for a delete or relabel in force. */
static int parse_cur(const char *image, const char *value, ds_edit_cur *c) {
    char buf[256], *f[4];
    snprintf(buf, sizeof buf, "%s", value);
    if (split_tabs(buf, f, 4) != 4 || !ed_image_valid(image)) return -1;
    memset(c, 0, sizeof *c);
    snprintf(c->image, sizeof c->image, "%s", image);
    c->op = ed_op_parse(f[0]);
    snprintf(c->from, sizeof c->from, "%s", f[1]);
    snprintf(c->to, sizeof c->to, "%s", f[2]);
    c->seq = atoll(f[3]);
    return c->op == ED_DELETE || c->op == ED_RELABEL ? 0 : -1;
}

ursa_err ds_edit_current(rstore *r, const char *ds, const char *image, ds_edit_cur *out,
                         int *found) {
    char cur[128], log[128], seen[128];
    keys(ds, cur, log, seen);
    redisReply *rep = NULL;
    ursa_err err = rstore_cmd(r, &rep, "HGET %s %s", cur, image);
    if (err) return err;
    *found = rep->type == REDIS_REPLY_STRING && parse_cur(image, rep->str, out) == 0;
    freeReplyObject(rep);
    return URSA_OK;
}

ursa_err ds_edits_current(rstore *r, const char *ds, ds_edit_cur **out, size_t *n) {
    char cur[128], log[128], seen[128];
    keys(ds, cur, log, seen);
    *out = NULL;
    *n = 0;
    size_t cap = 0, k = 0;
    ds_edit_cur *v = NULL;
    char cursor[32] = "0";
    do { /* HSCAN: a dataset may carry many decisions */
        redisReply *rep = NULL;
        ursa_err err = rstore_cmd(r, &rep, "HSCAN %s %s COUNT 1000", cur, cursor);
        if (err) {
            free(v);
            return err;
        }
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
            rep->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(rep);
            free(v);
            return URSA_ERR_REDIS;
        }
        snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
        redisReply *a = rep->element[1];
        for (size_t i = 0; i + 1 < a->elements; i += 2) {
            if (k == cap) {
                size_t nc = cap ? cap * 2 : 256;
                ds_edit_cur *nv = realloc(v, nc * sizeof *v);
                if (!nv) {
                    freeReplyObject(rep);
                    free(v);
                    return URSA_ERR_NOMEM;
                }
                v = nv;
                cap = nc;
            }
            if (parse_cur(a->element[i]->str, a->element[i + 1]->str, &v[k]) == 0) k++;
        }
        freeReplyObject(rep);
    } while (strcmp(cursor, "0") != 0);
    /* HSCAN may return a field twice: keep one */
    if (k) qsort(v, k, sizeof *v, by_image);
    size_t w = 0;
    for (size_t i = 0; i < k; i++)
        if (!w || strcmp(v[w - 1].image, v[i].image)) v[w++] = v[i];
    *out = v;
    *n = w;
    return URSA_OK;
}

const ds_edit_cur *ds_edits_find(const ds_edit_cur *cur, size_t n, const char *image) {
    ds_edit_cur key;
    snprintf(key.image, sizeof key.image, "%s", image);
    return n ? bsearch(&key, cur, n, sizeof *cur, by_image) : NULL;
}

long long ds_edits_label_delta(const ds_edit_cur *cur, size_t n, const char *label) {
    long long d = 0;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(cur[i].from, label)) d--;
        if (cur[i].op == ED_RELABEL && !strcmp(cur[i].to, label)) d++;
    }
    return d;
}

ursa_err ds_edits_log(rstore *r, const char *ds, long long first, size_t max, ds_edit **out,
                      size_t *n) {
    char cur[128], log[128], seen[128];
    keys(ds, cur, log, seen);
    *out = NULL;
    *n = 0;
    if (first < 1) first = 1;
    if (!max) return URSA_OK;
    redisReply *rep = NULL;
    ursa_err err = rstore_cmd(r, &rep, "LRANGE %s %lld %lld", log, first - 1,
                              first - 1 + (long long)max - 1);
    if (err) return err;
    if (rep->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(rep);
        return URSA_ERR_REDIS;
    }
    ds_edit *v = calloc(rep->elements + 1, sizeof *v);
    if (!v) {
        freeReplyObject(rep);
        return URSA_ERR_NOMEM;
    }
    for (size_t i = 0; i < rep->elements; i++) {
        char buf[1024], *f[8];
        snprintf(buf, sizeof buf, "%s", rep->element[i]->str ? rep->element[i]->str : "");
        ds_edit *e = &v[i];
        e->seq = first + (long long)i;
        if (split_tabs(buf, f, 8) != 8) continue;
        e->ts_ms = atoll(f[0]);
        snprintf(e->image, sizeof e->image, "%s", f[1]);
        e->op = ed_op_parse(f[2]);
        snprintf(e->from, sizeof e->from, "%s", f[3]);
        snprintf(e->to, sizeof e->to, "%s", f[4]);
        snprintf(e->author, sizeof e->author, "%s", f[5]);
        snprintf(e->reason, sizeof e->reason, "%s", f[6]);
        snprintf(e->msg_id, sizeof e->msg_id, "%s", f[7]);
    }
    *n = rep->elements;
    freeReplyObject(rep);
    *out = v;
    return URSA_OK;
}

ursa_err ds_audit_record(rstore *r, const char *ds, const char *job_id, const char *manifest) {
    char key[128];
    snprintf(key, sizeof key, "ursa:ds:{%s:ed}:audit", ds);
    return rstore_cmd(r, NULL, "HSET %s latest %s m:%s %s", key, job_id, manifest, job_id);
}

/* Confident learning flags the images whose out-of-fold prediction
 * confidently disagrees with the label, so its suggestions are about as
 * good as the share of those disagreements that are label errors. Datasets
 * carry a few percent of wrong labels, rarely more than 10%: above an error
 * of 25% at least three disagreements in five are the models' own
 * mistakes, and most suggestions would break correct labels. The bound is
 * fixed, not relative to chance (1 - 1/nclass): that share depends on the
 * error, not on how many classes there are, and for two classes 25% is
 * already half of chance. With fewer than two classes there is nothing to
 * judge; NaN is unreliable too. */
int ds_audit_unreliable(double oof_error, int nclass) {
    return nclass < 2 || !(oof_error <= 0.25);
}

ursa_err ds_audit_latest(rstore *r, const char *ds, char *job_id, size_t size) {
    char key[128];
    snprintf(key, sizeof key, "ursa:ds:{%s:ed}:audit", ds);
    redisReply *rep = NULL;
    ursa_err err = rstore_cmd(r, &rep, "HGET %s latest", key);
    if (err) return err;
    snprintf(job_id, size, "%s", rep->type == REDIS_REPLY_STRING ? rep->str : "");
    freeReplyObject(rep);
    return URSA_OK;
}
