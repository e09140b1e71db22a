/* dataset.c: the Redis side of a dataset; see dataset.h for the keys. */
#include "dataset.h"
#include "dataset_edits.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "log.h"
#include "sha256.h"
#include "util.h"

static const char *names[DS__COUNT] = {"queued", "downloaded", "verified",
                                       "duplicate", "rejected", "failed"};

const char *ds_state_name(ds_state s) {
    return (unsigned)s < DS__COUNT ? names[s] : "unknown";
}

int ds_state_final(ds_state s) { return s >= DS_VERIFIED && s < DS__COUNT; }

int ds_name_valid(const char *n) {
    size_t l = strlen(n);
    if (l == 0 || l > DS_NAME_MAX) return 0;
    for (size_t i = 0; i < l; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

int ds_label_valid(const char *l) {
    size_t n = strlen(l);
    if (n == 0 || n > 64 || l[0] == '.' || !util_text_clean(l)) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)l[i];
        if (c < 0x20 || c == 0x7f || c == '|' || c == '/' || c == '\\') return 0;
    }
    return 1;
}

void ds_url_hash(const char *url, char out[65]) { sha256_hex(url, strlen(url), out); }

/* ---- keys ---------------------------------------------------------------------- */

enum { KEY_BYTES = 10, FIELD_OFF = 2, SRC_BYTES = 16, REC_MAX = 64 };

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* hex (at least 2n digits) to n bytes; -1 on a bad digit */
static int unhex(const char *hex, uint8_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int a = hexval(hex[2 * i]), b = a < 0 ? -1 : hexval(hex[2 * i + 1]);
        if (a < 0 || b < 0) return -1;
        out[i] = (uint8_t)(a << 4 | b);
    }
    return 0;
}

/* The bucket key of a hash's first two bytes (family 'u' for URLs, 's' for
 * source blobs), and its tag's count key. */
static void bucket_key(char *out, size_t n, const char *ds, char fam, unsigned b) {
    snprintf(out, n, "ursa:ds:{%s:%02x}:%c:%04x", ds, b >> 8, fam, b);
}
static void count_key(char *out, size_t n, const char *ds, unsigned tag) {
    snprintf(out, n, "ursa:ds:{%s:%02x}:c", ds, tag);
}

/* A URL hash (64 or at least 20 hex) as its bucket and 8-byte field. */
static int url_slot(const char *hash, unsigned *bucket, uint8_t key[KEY_BYTES]) {
    if (!hash || strlen(hash) < DS_KEY_HEX || unhex(hash, key, KEY_BYTES)) return -1;
    *bucket = (unsigned)key[0] << 8 | key[1];
    return 0;
}

/* ---- the script -------------------------------------------------------------- */

/* Every change, by operation (ARGV[1]); keys are declared:
 *   add   KEYS bucket, count    ARGV field, label id (2 bytes)
 *   set   KEYS bucket, count    ARGV field, state, reason, detail, transient, force
 *   claim KEYS source bucket    ARGV field, URL key (10 bytes): the owner's key
 *   image KEYS bucket, count    ARGV field, jpeg (32), src (16), owner key (10),
 *                                    my key (10), owner's record or ''
 *   label KEYS labels           ARGV label...: their ids, new ones assigned
 * States are numbers (ds_state); counts use "<label id>|<state>[|<reason>]". */
static const char *lua =
    "local op = ARGV[1]\n"
    "local rank = {[0]=0, [1]=1, [2]=2, [3]=2, [4]=2, [5]=2}\n"
    "local function lid(v) return tostring(string.byte(v, 2) * 256 + string.byte(v, 3)) end\n"
    "local function st(v) return string.byte(v, 1) % 16 end\n"
    "local function reason(v)\n"
    "  local s = st(v)\n"
    "  if s < 3 or #v < 4 then return nil end\n"
    "  return string.sub(v, 5, 4 + string.byte(v, 4))\n"
    "end\n"
    "local function hex(b) return (string.gsub(b, '.', function(c)\n"
    "  return string.format('%02x', string.byte(c)) end)) end\n"
    "local function move(v, ns, why, detail, tr, force, body)\n"
    "  local old = st(v)\n"
    "  if not force and rank[ns] <= rank[old] then return 0 end\n"
    "  local l, c = lid(v), KEYS[2]\n"
    "  redis.call('HINCRBY', c, l..'|'..old, -1)\n"
    "  local r = reason(v)\n"
    "  if r then redis.call('HINCRBY', c, l..'|'..old..'|'..r, -1) end\n"
    "  redis.call('HINCRBY', c, l..'|'..ns, 1)\n"
    "  local nv = string.char(ns + (tr and 16 or 0))..string.sub(v, 2, 3)\n"
    "  if body then nv = nv..body\n"
    "  elseif why ~= '' then\n"
    "    redis.call('HINCRBY', c, l..'|'..ns..'|'..why, 1)\n"
    "    nv = string.sub(nv..string.char(#why)..why..detail, 1, 64)\n"
    "  end\n"
    "  redis.call('HSET', KEYS[1], ARGV[2], nv)\n"
    "  return 1\n"
    "end\n"
    "if op == 'label' then\n"
    "  local ids = {}\n"
    "  for i = 2, #ARGV do\n"
    "    local id = redis.call('HGET', KEYS[1], 'l:'..ARGV[i])\n"
    "    if not id then\n"
    "      id = redis.call('HLEN', KEYS[1]) / 2 + 1\n"
    "      if id > 65535 then return redis.error_reply('too many labels') end\n"
    "      redis.call('HSET', KEYS[1], 'l:'..ARGV[i], id, 'i:'..id, ARGV[i])\n"
    "    end\n"
    "    ids[#ids + 1] = tonumber(id)\n"
    "  end\n"
    "  return ids\n"
    "end\n"
    "if op == 'claim' then\n"
    "  redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3])\n"
    "  return redis.call('HGET', KEYS[1], ARGV[2])\n"
    "end\n"
    "if op == 'unclaim' then\n"
    "  if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[3] then redis.call('HDEL', KEYS[1], ARGV[2]) end\n"
    "  return 0\n"
    "end\n"
    "if op == 'add' then\n"
    "  if redis.call('HSETNX', KEYS[1], ARGV[2], string.char(0)..ARGV[3]) == 0 then return 0 end\n"
    "  local l = tostring(string.byte(ARGV[3], 1) * 256 + string.byte(ARGV[3], 2))\n"
    "  redis.call('HINCRBY', KEYS[2], l..'|0', 1)\n"
    "  redis.call('HINCRBY', KEYS[2], 'total', 1)\n"
    "  return 1\n"
    "end\n"
    "local v = redis.call('HGET', KEYS[1], ARGV[2])\n"
    "if not v then return -1 end\n"
    "local now = st(v)\n"
    "if op == 'set' then\n"
    "  local moved = move(v, tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6] == '1', ARGV[7] == '1')\n"
    "  if moved == 0 and rank[now] == 2 then return 2 end\n"
    "  return moved\n"
    "end\n"
    "if op == 'image' then\n"
    "  local jpeg, src, owner, me, orec = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]\n"
    "  if rank[now] == 2 then\n"
    "    if now == 2 and string.sub(v, 36, 51) == src then return 12 end\n"
    "    return -2\n"
    "  end\n"
    "  if owner == me then return move(v, 2, '', '', false, false, jpeg..src) * 0 + 2 end\n"
    "  if orec ~= '' and string.sub(orec, 2, 3) == string.sub(v, 2, 3) then\n"
    "    move(v, 3, 'duplicate', 'same bytes as URL '..hex(owner), false, false)\n"
    "    return 3\n"
    "  end\n"
    "  move(v, 4, 'label_conflict', 'same image as URL '..hex(owner), false, false)\n"
    "  return 4\n"
    "end\n"
    "return redis.error_reply('unknown op')\n";

/* The script's SHA-1, as Redis names it; loaded on first use and again
 * whenever Redis answers NOSCRIPT (after a restart). */
static char lua_sha[41];

static ursa_err load_script(rstore *r) {
    redisReply *rep;
    ursa_err err = rstore_cmd(r, &rep, "SCRIPT LOAD %s", lua);
    if (err) return err;
    if (rep->type == REDIS_REPLY_STRING && rep->len == 40) memcpy(lua_sha, rep->str, 41);
    else err = URSA_ERR_REDIS;
    freeReplyObject(rep);
    return err;
}

static int noscript(const redisReply *rep) {
    return rep->type == REDIS_REPLY_ERROR && !strncmp(rep->str, "NOSCRIPT", 8);
}

/* Runs a batch built by add(b, i) for i < n through EVALSHA, loading the
 * script again when Redis lost it; *rep gets the n replies. */
typedef ursa_err batch_fill(void *opaque, rstore_batch *b, size_t i);
static ursa_err eval_batch(rstore *r, size_t n, batch_fill *fill, void *opaque,
                           redisReply ***rep) {
    *rep = NULL;
    for (int round = 0; round < 3; round++) {
        ursa_err err = URSA_OK;
        if (!lua_sha[0] && (err = load_script(r))) return err;
        rstore_batch *b = rstore_batch_new();
        if (!b) return URSA_ERR_NOMEM;
        for (size_t i = 0; i < n && !err; i++) err = fill(opaque, b, i);
        if (!err) err = rstore_batch_exec(r, b, rep);
        rstore_batch_destroy(b);
        if (err) return err;
        int reload = 0;
        for (size_t i = 0; i < n && !reload; i++) reload = noscript((*rep)[i]);
        if (!reload) return URSA_OK;
        rstore_replies_free(*rep, n);
        *rep = NULL;
        lua_sha[0] = '\0'; /* Redis lost its scripts (restart): load and send again */
    }
    return URSA_ERR_REDIS;
}

/* ---- changes ------------------------------------------------------------------- */

typedef struct {
    ds_op *ops;
    size_t n;
    uint8_t (*key)[KEY_BYTES];  /* each op's URL key */
    uint8_t (*src)[SRC_BYTES];  /* IMAGE: source id */
    uint8_t (*jpeg)[32];        /* IMAGE */
    redisReply **owner;         /* IMAGE: claim replies (owner's URL key) */
    redisReply **orec;          /* IMAGE: the owner's record when not us */
    int *bad;                   /* malformed op: not sent */
} apply_ctx;

/* A claim made for a URL the dataset does not have (deleted, or never
 * ingested) is taken back, or it would stand for bytes no URL brought. */
static int claimed_for_nothing(const apply_ctx *a, size_t i, const redisReply *change) {
    const redisReply *ow = a->owner ? a->owner[i] : NULL;
    return a->ops[i].kind == DS_OP_IMAGE && !a->bad[i] && change &&
           change->type == REDIS_REPLY_INTEGER && change->integer == -1 && ow &&
           ow->type == REDIS_REPLY_STRING && ow->len == KEY_BYTES &&
           memcmp(ow->str, a->key[i], KEY_BYTES) == 0;
}

typedef struct {
    apply_ctx *a;
    redisReply **change;
} unclaim_ctx;

static ursa_err fill_unclaim(void *opaque, rstore_batch *b, size_t i) {
    unclaim_ctx *u = opaque;
    apply_ctx *a = u->a;
    if (!claimed_for_nothing(a, i, u->change[i])) return rstore_batch_add(b, "PING");
    char k[160];
    unsigned sb = (unsigned)a->src[i][0] << 8 | a->src[i][1];
    bucket_key(k, sizeof k, a->ops[i].ds, 's', sb);
    return rstore_batch_add(b, "EVALSHA %s 1 %s unclaim %b %b", lua_sha, k,
                            a->src[i] + FIELD_OFF, (size_t)(KEY_BYTES - FIELD_OFF), a->key[i],
                            (size_t)KEY_BYTES);
}

static ursa_err fill_claim(void *opaque, rstore_batch *b, size_t i) {
    apply_ctx *a = opaque;
    ds_op *o = &a->ops[i];
    if (o->kind != DS_OP_IMAGE || a->bad[i]) return rstore_batch_add(b, "PING");
    char k[160];
    unsigned sb = (unsigned)a->src[i][0] << 8 | a->src[i][1];
    bucket_key(k, sizeof k, o->ds, 's', sb);
    return rstore_batch_add(b, "EVALSHA %s 1 %s claim %b %b", lua_sha, k, a->src[i] + FIELD_OFF,
                            (size_t)(KEY_BYTES - FIELD_OFF), a->key[i], (size_t)KEY_BYTES);
}

/* The owner's record, when a source blob was claimed by another URL. */
static int foreign_owner(const apply_ctx *a, size_t i) {
    const redisReply *ow = a->owner ? a->owner[i] : NULL;
    return a->ops[i].kind == DS_OP_IMAGE && !a->bad[i] && ow && ow->type == REDIS_REPLY_STRING &&
           ow->len == KEY_BYTES && memcmp(ow->str, a->key[i], KEY_BYTES) != 0;
}

static ursa_err fill_owner(void *opaque, rstore_batch *b, size_t i) {
    apply_ctx *a = opaque;
    if (!foreign_owner(a, i)) return rstore_batch_add(b, "PING");
    const uint8_t *ow = (const uint8_t *)a->owner[i]->str;
    char k[160];
    bucket_key(k, sizeof k, a->ops[i].ds, 'u', (unsigned)ow[0] << 8 | ow[1]);
    return rstore_batch_add(b, "HGET %s %b", k, ow + FIELD_OFF, (size_t)(KEY_BYTES - FIELD_OFF));
}

static ursa_err fill_change(void *opaque, rstore_batch *b, size_t i) {
    apply_ctx *a = opaque;
    ds_op *o = &a->ops[i];
    if (a->bad[i]) return rstore_batch_add(b, "PING");
    unsigned bk = (unsigned)a->key[i][0] << 8 | a->key[i][1];
    char k[160], c[160];
    bucket_key(k, sizeof k, o->ds, 'u', bk);
    count_key(c, sizeof c, o->ds, bk >> 8);
    const uint8_t *f = a->key[i] + FIELD_OFF;
    size_t fl = KEY_BYTES - FIELD_OFF;
    if (o->kind == DS_OP_IMAGE) {
        const redisReply *ow = a->owner[i];
        const redisReply *orec = a->orec ? a->orec[i] : NULL;
        const char *rec = orec && orec->type == REDIS_REPLY_STRING ? orec->str : "";
        size_t rl = orec && orec->type == REDIS_REPLY_STRING ? orec->len : 0;
        return rstore_batch_add(b, "EVALSHA %s 2 %s %s image %b %b %b %b %b %b", lua_sha, k, c,
                                f, fl, a->jpeg[i], (size_t)32, a->src[i], (size_t)SRC_BYTES,
                                ow->str, (size_t)ow->len, a->key[i], (size_t)KEY_BYTES, rec, rl);
    }
    char reason[32];
    snprintf(reason, sizeof reason, "%s", o->reason ? o->reason : ""); /* at most 31 */
    return rstore_batch_add(b, "EVALSHA %s 2 %s %s set %b %d %s %s %s %s", lua_sha, k, c, f, fl,
                            (int)o->state, reason, o->detail ? o->detail : "",
                            o->transient ? "1" : "0", o->force ? "1" : "0");
}

ursa_err ds_apply(rstore *r, ds_op *ops, size_t n) {
    if (!n) return URSA_OK;
    apply_ctx a = {ops, n, calloc(n, KEY_BYTES), calloc(n, SRC_BYTES), calloc(n, 32), NULL,
                   NULL, calloc(n, sizeof(int))};
    ursa_err err = URSA_OK;
    redisReply **rep = NULL;
    int images = 0;
    if (!a.key || !a.src || !a.jpeg || !a.bad) {
        err = URSA_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned bk;
        ops[i].err = URSA_OK;
        ops[i].changed = ops[i].already_final = ops[i].replayed = 0;
        a.bad[i] = url_slot(ops[i].url_hash, &bk, a.key[i]) != 0;
        if (ops[i].kind == DS_OP_IMAGE) {
            images = 1;
            a.bad[i] |= !ops[i].src_blob || !ops[i].jpeg_blob || strlen(ops[i].src_blob) < 32 ||
                        strlen(ops[i].jpeg_blob) != 64 ||
                        unhex(ops[i].src_blob, a.src[i], SRC_BYTES) ||
                        unhex(ops[i].jpeg_blob, a.jpeg[i], 32);
        }
    }
    /* images: claim the source bytes (their own tag), look up the owner's
     * record where another URL has them, then move the URL's state */
    if (images && (err = eval_batch(r, n, fill_claim, &a, &a.owner))) goto out;
    int foreign = 0;
    for (size_t i = 0; i < n && images; i++) {
        if (ops[i].kind != DS_OP_IMAGE || a.bad[i]) continue;
        if (a.owner[i]->type != REDIS_REPLY_STRING || a.owner[i]->len != KEY_BYTES) {
            ops[i].err = URSA_ERR_REDIS;
            a.bad[i] = 1;
        }
        foreign |= foreign_owner(&a, i);
    }
    if (foreign) {
        rstore_batch *b = rstore_batch_new();
        if (!b) {
            err = URSA_ERR_NOMEM;
            goto out;
        }
        for (size_t i = 0; i < n && !err; i++) err = fill_owner(&a, b, i);
        if (!err) err = rstore_batch_exec(r, b, &a.orec);
        rstore_batch_destroy(b);
        if (err) goto out;
    }
    if ((err = eval_batch(r, n, fill_change, &a, &rep))) goto out;
    int unclaim = 0;
    for (size_t i = 0; i < n && images; i++) unclaim |= claimed_for_nothing(&a, i, rep[i]);
    if (unclaim) {
        unclaim_ctx u = {&a, rep};
        redisReply **urep = NULL;
        if ((err = eval_batch(r, n, fill_unclaim, &u, &urep))) goto out;
        rstore_replies_free(urep, n);
    }
    for (size_t i = 0; i < n; i++) {
        redisReply *x = rep[i];
        ds_op *o = &ops[i];
        if (a.bad[i]) {
            if (!o->err) o->err = URSA_ERR_INVALID;
        } else if (x->type == REDIS_REPLY_ERROR) {
            o->err = URSA_ERR_REDIS;
        } else if (x->type != REDIS_REPLY_INTEGER || x->integer == -1) {
            o->err = URSA_ERR_NOT_FOUND;
        } else if (o->kind == DS_OP_STATE) {
            o->changed = x->integer == 1;
            o->already_final = x->integer == 2;
        } else if (x->integer == -2) {
            o->already_final = 1;
        } else if (x->integer == 12) { /* verified before, from these bytes */
            o->outcome = DS_VERIFIED;
            o->replayed = 1;
        } else {
            o->outcome = (ds_state)x->integer;
        }
    }
out:
    if (rep) rstore_replies_free(rep, n);
    if (a.owner) rstore_replies_free(a.owner, n);
    if (a.orec) rstore_replies_free(a.orec, n);
    free(a.key);
    free(a.src);
    free(a.jpeg);
    free(a.bad);
    return err;
}

/* Label ids of a dataset, assigning new ones: one script call a label, in
 * one pipelined round trip. */
typedef struct {
    const char *key;
    const char *const *labels;
} label_ctx;

static ursa_err fill_label(void *opaque, rstore_batch *b, size_t i) {
    label_ctx *a = opaque;
    return rstore_batch_add(b, "EVALSHA %s 1 %s label %s", lua_sha, a->key, a->labels[i]);
}

static ursa_err label_ids(rstore *r, const char *ds, size_t n, const char *const *labels,
                          unsigned *ids) {
    char key[128];
    snprintf(key, sizeof key, "ursa:ds:%s:labels", ds);
    label_ctx a = {key, labels};
    redisReply **rep = NULL;
    ursa_err err = eval_batch(r, n, fill_label, &a, &rep);
    for (size_t i = 0; !err && i < n; i++) {
        if (rep[i]->type != REDIS_REPLY_ARRAY || rep[i]->elements != 1) err = URSA_ERR_REDIS;
        else ids[i] = (unsigned)rep[i]->element[0]->integer;
    }
    if (rep) rstore_replies_free(rep, n);
    return err;
}

typedef struct {
    const char *ds;
    const char *const *urls;
    const uint8_t *lid; /* 2 bytes a URL */
} add_ctx;

static ursa_err fill_add(void *opaque, rstore_batch *b, size_t i) {
    add_ctx *a = opaque;
    char h[65], k[160], c[160];
    uint8_t key[KEY_BYTES];
    unsigned bk;
    ds_url_hash(a->urls[i], h);
    url_slot(h, &bk, key);
    bucket_key(k, sizeof k, a->ds, 'u', bk);
    count_key(c, sizeof c, a->ds, bk >> 8);
    return rstore_batch_add(b, "EVALSHA %s 2 %s %s add %b %b", lua_sha, k, c, key + FIELD_OFF,
                            (size_t)(KEY_BYTES - FIELD_OFF), a->lid + 2 * i, (size_t)2);
}

ursa_err ds_add_urls(rstore *r, blob_store *bs, const char *ds, size_t n,
                     const char *const *urls, const char *const *labels, int *added) {
    /* the URL text first: once a URL is in Redis its text can be found */
    size_t cap = 1;
    for (size_t i = 0; i < n; i++) cap += strlen(urls[i]) + strlen(labels[i]) + 2;
    char *list = malloc(cap), blob[65];
    uint8_t *lid = malloc(2 * (n ? n : 1));
    unsigned *ids = malloc(sizeof *ids * (n ? n : 1));
    const char **uniq = malloc(sizeof *uniq * (n ? n : 1));
    ursa_err err = URSA_OK;
    if (!list || !lid || !ids || !uniq) {
        err = URSA_ERR_NOMEM;
        goto out;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        o += (size_t)sprintf(list + o, "%s\t%s\n", urls[i], labels[i]);
    if ((err = blob_put(bs, list, o, blob))) goto out;
    if ((err = rstore_cmd(r, NULL, "SADD ursa:datasets %s", ds)) ||
        (err = rstore_cmd(r, NULL, "SADD ursa:ds:%s:lists %s", ds, blob)))
        goto out;
    /* label ids: the distinct labels, in one call */
    size_t nu = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < nu && strcmp(uniq[j], labels[i])) j++;
        if (j == nu) uniq[nu++] = labels[i];
    }
    if (nu && (err = label_ids(r, ds, nu, uniq, ids))) goto out;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (strcmp(uniq[j], labels[i])) j++;
        lid[2 * i] = (uint8_t)(ids[j] >> 8);
        lid[2 * i + 1] = (uint8_t)ids[j];
    }
    const size_t chunk = 2000;
    for (size_t off = 0; off < n && !err; off += chunk) {
        size_t m = n - off < chunk ? n - off : chunk;
        add_ctx a = {ds, urls + off, lid + 2 * off};
        redisReply **rep = NULL;
        if ((err = eval_batch(r, m, fill_add, &a, &rep))) break;
        for (size_t i = 0; !err && i < m; i++) {
            if (rep[i]->type == REDIS_REPLY_ERROR) err = URSA_ERR_REDIS;
            else if (added) added[off + i] = rep[i]->integer == 1;
        }
        rstore_replies_free(rep, m);
    }
out:
    free(list);
    free(lid);
    free(ids);
    free(uniq);
    return err;
}

ursa_err ds_set_state(rstore *r, const char *ds, const char *h, ds_state s,
                      const char *reason, const char *detail, int transient, int force,
                      int *changed) {
    ds_op o = {.kind = DS_OP_STATE, .ds = ds, .url_hash = h, .state = s, .reason = reason,
               .detail = detail, .transient = transient, .force = force};
    ursa_err err = ds_apply(r, &o, 1);
    if (!err) err = o.err;
    if (!err && changed) *changed = o.changed;
    return err;
}

ursa_err ds_url_state(rstore *r, const char *ds, const char *h, ds_state *s) {
    uint8_t key[KEY_BYTES];
    unsigned bk;
    char k[160];
    if (url_slot(h, &bk, key)) return URSA_ERR_INVALID;
    bucket_key(k, sizeof k, ds, 'u', bk);
    redisReply *rep;
    ursa_err err = rstore_cmd(r, &rep, "HGET %s %b", k, key + FIELD_OFF,
                              (size_t)(KEY_BYTES - FIELD_OFF));
    if (err) return err;
    if (rep->type == REDIS_REPLY_STRING && rep->len > 0) *s = (ds_state)((uint8_t)rep->str[0] % 16);
    else err = rep->type == REDIS_REPLY_NIL ? URSA_ERR_NOT_FOUND : URSA_ERR_REDIS;
    freeReplyObject(rep);
    return err;
}

ursa_err ds_add_image(rstore *r, const char *ds, const char *h, const char *src,
                      const char *jpeg, ds_state *outcome) {
    ds_op o = {.kind = DS_OP_IMAGE, .ds = ds, .url_hash = h, .src_blob = src,
               .jpeg_blob = jpeg};
    ursa_err err = ds_apply(r, &o, 1);
    if (!err) err = o.err;
    if (!err && outcome) *outcome = o.outcome;
    return err;
}

/* ---- group commit ----------------------------------------------------------------- */

void ds_batch_add(ds_batch *g, int wrote_blob) {
    if (g->n++ == 0) g->first_ms = util_mono_ms();
    g->blobs_unsynced |= wrote_blob;
}

int ds_batch_due(const ds_batch *g) {
    int64_t now = util_mono_ms();
    return g->n && now >= g->retry_at &&
           (g->n >= DS_BATCH_ITEMS || now - g->first_ms >= DS_BATCH_MS);
}

ursa_err ds_batch_commit(ds_batch *g, rstore *r, blob_store *bs, ds_op *ops, size_t n) {
    if (g->blobs_unsynced && blob_store_sync(bs) != URSA_OK) {
        int64_t now = util_mono_ms();
        if (now - g->sync_logged_ms >= 30000) { /* an outage: once, then every 30 s */
            ULOG_ERROR("event=blob_sync_failed items=%d store=\"%s\" note=\"the batch waits "
                       "and is tried every second\"", g->n, blob_store_where(bs));
            g->sync_logged_ms = now;
        }
        g->retry_at = now + 1000;
        return URSA_ERR_IO;
    }
    g->sync_logged_ms = 0;
    g->blobs_unsynced = 0;
    ursa_err err = ds_apply(r, ops, n);
    if (err) {
        ULOG_WARN("event=flush_deferred items=%d err=\"%s\" redis=\"%s\"", g->n,
                  ursa_err2str(err), rstore_last_error(r));
        g->retry_at = util_mono_ms() + 1000;
        return err;
    }
    g->n = 0;
    g->retry_at = 0;
    return URSA_OK;
}

/* ---- whole-dataset reads --------------------------------------------------------- */

/* Label names by id. */
typedef struct {
    char (*name)[72];
    size_t n;
} label_table;

static ursa_err labels_read(rstore *r, const char *ds, label_table *t) {
    memset(t, 0, sizeof *t);
    redisReply *rep = NULL;
    ursa_err err = rstore_cmd(r, &rep, "HGETALL ursa:ds:%s:labels", ds);
    if (err) return err;
    size_t max = 0;
    for (size_t i = 0; i + 1 < rep->elements; i += 2)
        if (!strncmp(rep->element[i]->str, "i:", 2)) {
            size_t id = (size_t)atol(rep->element[i]->str + 2);
            if (id > max && id < 65536) max = id;
        }
    t->name = calloc(max + 1, sizeof *t->name);
    if (!t->name) err = URSA_ERR_NOMEM;
    for (size_t i = 0; !err && i + 1 < rep->elements; i += 2)
        if (!strncmp(rep->element[i]->str, "i:", 2)) {
            size_t id = (size_t)atol(rep->element[i]->str + 2);
            if (id <= max) snprintf(t->name[id], 72, "%s", rep->element[i + 1]->str);
        }
    t->n = max + 1;
    freeReplyObject(rep);
    return err;
}

static const char *label_name(const label_table *t, unsigned id) {
    return id < t->n && t->name[id][0] ? t->name[id] : "?";
}

/* Decodes one bucket field and record. 0 on success. */
static int decode(unsigned bucket, const redisReply *f, const redisReply *v,
                  const label_table *t, ds_record *rec) {
    if (f->len != KEY_BYTES - FIELD_OFF || v->len < 3) return -1;
    memset(rec, 0, sizeof *rec);
    uint8_t key[KEY_BYTES] = {(uint8_t)(bucket >> 8), (uint8_t)bucket};
    memcpy(key + FIELD_OFF, f->str, KEY_BYTES - FIELD_OFF);
    util_hex(key, KEY_BYTES, rec->key);
    const uint8_t *p = (const uint8_t *)v->str;
    rec->state = (ds_state)(p[0] & 15);
    rec->transient = (p[0] & 16) != 0;
    if ((unsigned)rec->state >= DS__COUNT) return -1;
    snprintf(rec->label, sizeof rec->label, "%s", label_name(t, (unsigned)p[1] << 8 | p[2]));
    if (rec->state == DS_VERIFIED) {
        if (v->len < 3 + 32 + SRC_BYTES) return -1;
        util_hex(p + 3, 32, rec->jpeg);
        util_hex(p + 35, SRC_BYTES, rec->src);
    } else if (rec->state >= DS_DUPLICATE && v->len >= 4) {
        size_t rl = p[3] < v->len - 4 ? p[3] : v->len - 4;
        snprintf(rec->reason, sizeof rec->reason, "%.*s", (int)rl, (const char *)p + 4);
        snprintf(rec->detail, sizeof rec->detail, "%.*s", (int)(v->len - 4 - rl),
                 (const char *)p + 4 + rl);
    }
    return 0;
}

enum { SCAN_ROUND = 2048, NBUCKETS = 65536 };

ursa_err ds_scan(rstore *r, const char *ds, ds_scan_fn *fn, void *opaque) {
    label_table t;
    ursa_err err = labels_read(r, ds, &t);
    if (err) return err;
    int stop = 0;
    for (unsigned b0 = 0; b0 < NBUCKETS && !err && !stop; b0 += SCAN_ROUND) {
        rstore_batch *b = rstore_batch_new();
        if (!b) {
            err = URSA_ERR_NOMEM;
            break;
        }
        for (unsigned k = b0; k < b0 + SCAN_ROUND && !err; k++) {
            char key[160];
            bucket_key(key, sizeof key, ds, 'u', k);
            err = rstore_batch_add(b, "HGETALL %s", key);
        }
        redisReply **rep = NULL;
        if (!err) err = rstore_batch_exec(r, b, &rep);
        rstore_batch_destroy(b);
        for (unsigned k = 0; !err && k < SCAN_ROUND && !stop; k++) {
            const redisReply *x = rep[k];
            if (x->type != REDIS_REPLY_ARRAY) {
                err = x->type == REDIS_REPLY_ERROR ? URSA_ERR_REDIS : URSA_OK;
                continue;
            }
            for (size_t i = 0; i + 1 < x->elements && !stop; i += 2) {
                ds_record rec;
                if (decode(b0 + k, x->element[i], x->element[i + 1], &t, &rec) == 0)
                    stop = fn(opaque, &rec);
            }
        }
        if (rep) rstore_replies_free(rep, SCAN_ROUND);
    }
    free(t.name);
    return err;
}

ursa_err ds_counts_read(rstore *r, const char *ds, ds_count **out, size_t *n,
                        long long *total) {
    *out = NULL;
    *n = 0;
    *total = 0;
    label_table t;
    ursa_err err = labels_read(r, ds, &t);
    if (err) return err;
    rstore_batch *b = rstore_batch_new();
    for (unsigned tag = 0; b && tag < 256 && !err; tag++) {
        char key[160];
        count_key(key, sizeof key, ds, tag);
        err = rstore_batch_add(b, "HGETALL %s", key);
    }
    redisReply **rep = NULL;
    if (!b) err = URSA_ERR_NOMEM;
    if (!err) err = rstore_batch_exec(r, b, &rep);
    rstore_batch_destroy(b);
    ds_count *c = NULL;
    size_t nc = 0, cap = 0;
    for (unsigned tag = 0; !err && tag < 256; tag++) {
        const redisReply *x = rep[tag];
        for (size_t i = 0; x->type == REDIS_REPLY_ARRAY && i + 1 < x->elements; i += 2) {
            const char *f = x->element[i]->str;
            long long v = atoll(x->element[i + 1]->str);
            if (!strcmp(f, "total")) {
                *total += v;
                continue;
            }
            unsigned id, s;
            int used = 0;
            if (sscanf(f, "%u|%u%n", &id, &s, &used) != 2 || s >= DS__COUNT) continue;
            const char *reason = f[used] == '|' ? f + used + 1 : "";
            const char *label = label_name(&t, id);
            size_t j = 0;
            while (j < nc && !(c[j].state == (ds_state)s && !strcmp(c[j].label, label) &&
                               !strcmp(c[j].reason, reason)))
                j++;
            if (j == nc) {
                if (nc == cap) {
                    cap = cap ? 2 * cap : 64;
                    ds_count *nn = realloc(c, cap * sizeof *c);
                    if (!nn) {
                        err = URSA_ERR_NOMEM;
                        break;
                    }
                    c = nn;
                }
                memset(&c[nc], 0, sizeof c[nc]);
                snprintf(c[nc].label, sizeof c[nc].label, "%s", label);
                snprintf(c[nc].reason, sizeof c[nc].reason, "%s", reason);
                c[nc++].state = (ds_state)s;
            }
            c[j].n += v;
        }
    }
    if (rep) rstore_replies_free(rep, 256);
    free(t.name);
    if (err) {
        free(c);
        return err;
    }
    *out = c;
    *n = nc;
    return URSA_OK;
}

typedef struct {
    const char *key; /* 20 hex */
    size_t i;
} key_ix;

static int cmp_key_ix(const void *a, const void *b) {
    return strcmp(((const key_ix *)a)->key, ((const key_ix *)b)->key);
}

ursa_err ds_list_blobs(rstore *r, const char *ds, redisReply **keys) {
    return rstore_cmd(r, keys, "SMEMBERS ursa:ds:%s:lists", ds);
}

ursa_err ds_urls_find(rstore *r, blob_store *bs, const char *ds, size_t n,
                      const char *const *keys, char **urls) {
    for (size_t i = 0; i < n; i++) urls[i] = NULL;
    if (!n) return URSA_OK;
    key_ix *ix = malloc(n * sizeof *ix);
    if (!ix) return URSA_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) ix[i].key = keys[i], ix[i].i = i;
    qsort(ix, n, sizeof *ix, cmp_key_ix);
    redisReply *lists = NULL;
    ursa_err err = rstore_cmd(r, &lists, "SMEMBERS ursa:ds:%s:lists", ds);
    size_t left = n;
    for (size_t l = 0; !err && lists && l < lists->elements && left; l++) {
        char *data = NULL;
        size_t len = 0;
        if (blob_get(bs, lists->element[l]->str, (size_t)1 << 34, &data, &len)) continue;
        for (char *p = data, *end = data + len; p < end && left;) {
            char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl) break;
            char *tab = memchr(p, '\t', (size_t)(nl - p));
            if (tab) {
                char h[65];
                sha256_hex(p, (size_t)(tab - p), h);
                h[DS_KEY_HEX] = '\0';
                key_ix q = {h, 0}, *hit = bsearch(&q, ix, n, sizeof *ix, cmp_key_ix);
                /* every entry with this key (a key may be asked for twice) */
                while (hit && hit > ix && !strcmp(hit[-1].key, h)) hit--;
                for (; hit && hit < ix + n && !strcmp(hit->key, h); hit++)
                    if (!urls[hit->i] && (urls[hit->i] = strndup(p, (size_t)(tab - p)))) left--;
            }
            p = nl + 1;
        }
        free(data);
    }
    if (lists) freeReplyObject(lists);
    free(ix);
    return err;
}

/* ---- manifests ------------------------------------------------------------------- */

ursa_err ds_label_exists(rstore *r, const char *ds, const char *label, int *exists) {
    redisReply *rep = NULL;
    ursa_err err = rstore_cmd(r, &rep, "HEXISTS ursa:ds:%s:labels l:%s", ds, label);
    if (err) return err;
    *exists = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    return URSA_OK;
}

ursa_err ds_list(rstore *r, redisReply **out) {
    return rstore_cmd(r, out, "SMEMBERS ursa:datasets");
}

ursa_err ds_exists(rstore *r, const char *ds, int *exists) {
    redisReply *rep = NULL;
    ursa_err e = rstore_cmd(r, &rep, "SISMEMBER ursa:datasets %s", ds);
    if (e) return e;
    *exists = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    return URSA_OK;
}

enum { DEL_TAGS_A_ROUND = 16 };

ursa_err ds_delete(rstore *r, const char *ds, long long *removed) {
    *removed = 0;
    if (!ds_name_valid(ds)) return URSA_ERR_INVALID;
    /* out of the list first: a delete cut short leaves keys no one lists,
     * and the next delete of the name removes them */
    ursa_err err = rstore_cmd(r, NULL, "SREM ursa:datasets %s", ds);
    /* a tag's keys share its slot: one UNLINK of its counts and its 512
     * buckets, whether they exist or not */
    for (unsigned t0 = 0; t0 < 256 && !err; t0 += DEL_TAGS_A_ROUND) {
        rstore_batch *b = rstore_batch_new();
        if (!b) return URSA_ERR_NOMEM;
        for (unsigned t = t0; t < t0 + DEL_TAGS_A_ROUND && !err; t++) {
            const char *argv[2 + 2 * 256];
            /* "ursa:ds:{" + a name of up to 64 + ":TT}:u:TTBB": 86 bytes */
            char keys[1 + 2 * 256][32 + DS_NAME_MAX];
            int n = 0;
            argv[n++] = "UNLINK";
            count_key(keys[0], sizeof keys[0], ds, t);
            argv[n++] = keys[0];
            for (unsigned k = 0; k < 256; k++) {
                bucket_key(keys[1 + 2 * k], sizeof keys[0], ds, 'u', t << 8 | k);
                bucket_key(keys[2 + 2 * k], sizeof keys[0], ds, 's', t << 8 | k);
                argv[n++] = keys[1 + 2 * k];
                argv[n++] = keys[2 + 2 * k];
            }
            err = rstore_batch_add_argv(b, n, argv);
        }
        redisReply **rep = NULL;
        if (!err) err = rstore_batch_exec(r, b, &rep);
        size_t nr = rstore_batch_len(b);
        rstore_batch_destroy(b);
        for (size_t i = 0; !err && i < nr; i++) {
            if (rep[i]->type == REDIS_REPLY_INTEGER) *removed += rep[i]->integer;
            else err = URSA_ERR_REDIS;
        }
        if (rep) rstore_replies_free(rep, nr);
    }
    static const char *const own[] = {"labels", "lists"};
    for (size_t i = 0; i < sizeof own / sizeof *own && !err; i++) {
        redisReply *rep = NULL;
        err = rstore_cmd(r, &rep, "UNLINK ursa:ds:%s:%s", ds, own[i]);
        if (!err && rep->type == REDIS_REPLY_INTEGER) *removed += rep->integer;
        if (rep) freeReplyObject(rep);
    }
    return err;
}

static int by_src(const void *a, const void *b) {
    return strcmp(((const ds_image *)a)->src, ((const ds_image *)b)->src);
}

typedef struct {
    ds_image *im;
    size_t n, cap;
    int oom;
} manifest_acc;

static int add_verified(void *opaque, const ds_record *rec) {
    manifest_acc *m = opaque;
    if (rec->state != DS_VERIFIED) return 0;
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 1024;
        ds_image *nn = realloc(m->im, cap * sizeof *nn);
        if (!nn) return m->oom = 1;
        m->im = nn;
        m->cap = cap;
    }
    ds_image *d = &m->im[m->n++];
    memcpy(d->src, rec->src, sizeof rec->src);
    memcpy(d->jpeg, rec->jpeg, sizeof d->jpeg);
    snprintf(d->label, sizeof d->label, "%s", rec->label);
    return 0;
}

ursa_err ds_image_get(rstore *r, const char *ds, const char *image, ds_record *rec) {
    uint8_t src[SRC_BYTES], key[KEY_BYTES];
    if (!image || strlen(image) < 2 * SRC_BYTES || unhex(image, src, SRC_BYTES))
        return URSA_ERR_NOT_FOUND;
    /* the source index names the URL that brought these bytes */
    char k[160];
    bucket_key(k, sizeof k, ds, 's', (unsigned)src[0] << 8 | src[1]);
    redisReply *rep = NULL;
    ursa_err err = rstore_cmd(r, &rep, "HGET %s %b", k, (const char *)src + FIELD_OFF,
                              (size_t)(KEY_BYTES - FIELD_OFF));
    if (err) return err;
    int found = rep->type == REDIS_REPLY_STRING && rep->len == KEY_BYTES;
    if (found) memcpy(key, rep->str, KEY_BYTES);
    freeReplyObject(rep);
    if (!found) return URSA_ERR_NOT_FOUND;
    unsigned bucket = (unsigned)key[0] << 8 | key[1];
    bucket_key(k, sizeof k, ds, 'u', bucket);
    if ((err = rstore_cmd(r, &rep, "HGET %s %b", k, (const char *)key + FIELD_OFF,
                          (size_t)(KEY_BYTES - FIELD_OFF))))
        return err;
    label_table t = {0};
    redisReply f = {.type = REDIS_REPLY_STRING, .str = (char *)key + FIELD_OFF,
                    .len = KEY_BYTES - FIELD_OFF};
    if (rep->type != REDIS_REPLY_STRING || (err = labels_read(r, ds, &t)) ||
        decode(bucket, &f, rep, &t, rec) || rec->state != DS_VERIFIED ||
        strncmp(rec->src, image, 2 * SRC_BYTES))
        err = err ? err : URSA_ERR_NOT_FOUND;
    freeReplyObject(rep);
    free(t.name);
    return err;
}

typedef struct {
    ds_image_url *v;
    size_t n, cap;
    int oom;
} image_url_acc;

static int add_image_url(void *opaque, const ds_record *rec) {
    image_url_acc *a = opaque;
    if (rec->state != DS_VERIFIED) return 0;
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 1024;
        ds_image_url *nv = realloc(a->v, cap * sizeof *nv);
        if (!nv) return a->oom = 1;
        a->v = nv;
        a->cap = cap;
    }
    ds_image_url *u = &a->v[a->n++];
    memcpy(u->src, rec->src, sizeof u->src);
    memcpy(u->key, rec->key, sizeof u->key);
    return 0;
}

static int by_image_src(const void *a, const void *b) {
    return strcmp(((const ds_image_url *)a)->src, ((const ds_image_url *)b)->src);
}

ursa_err ds_image_urls(rstore *r, const char *ds, ds_image_url **out, size_t *n) {
    image_url_acc a = {0};
    ursa_err e = ds_scan(r, ds, add_image_url, &a);
    if (!e && a.oom) e = URSA_ERR_NOMEM;
    if (e) {
        free(a.v);
        return e;
    }
    if (a.n) qsort(a.v, a.n, sizeof *a.v, by_image_src);
    *out = a.v;
    *n = a.n;
    return URSA_OK;
}

const ds_image_url *ds_image_url_find(const ds_image_url *v, size_t n, const char *src) {
    ds_image_url key;
    snprintf(key.src, sizeof key.src, "%.32s", src);
    return n ? bsearch(&key, v, n, sizeof *v, by_image_src) : NULL;
}

ursa_err ds_manifest_read_ex(rstore *r, const char *ds, int keep_deleted, ds_image **out,
                             size_t *n, long long *edit_seq) {
    manifest_acc m = {0};
    ds_edit_cur *cur = NULL;
    size_t ncur = 0;
    long long seq = 0;
    *out = NULL;
    *n = 0;
    ursa_err e = ds_edits_seq(r, ds, &seq);
    if (!e) e = ds_edits_current(r, ds, &cur, &ncur);
    if (!e) e = ds_scan(r, ds, add_verified, &m);
    if (!e && m.oom) e = URSA_ERR_NOMEM;
    if (e) {
        free(m.im);
        free(cur);
        return e;
    }
    size_t w = 0;
    for (size_t i = 0; i < m.n; i++) {
        ds_image d = m.im[i];
        const ds_edit_cur *c = ncur ? ds_edits_find(cur, ncur, d.src) : NULL;
        if (c && c->op == ED_RELABEL) snprintf(d.label, sizeof d.label, "%s", c->to);
        d.edit = c ? (unsigned char)c->op : 0;
        if (c && c->op == ED_DELETE && !keep_deleted) continue;
        m.im[w++] = d;
    }
    free(cur);
    if (w) qsort(m.im, w, sizeof *m.im, by_src);
    *out = m.im;
    *n = w;
    if (edit_seq) *edit_seq = seq;
    return URSA_OK;
}

ursa_err ds_manifest_read(rstore *r, const char *ds, ds_image **out, size_t *n) {
    return ds_manifest_read_ex(r, ds, 0, out, n, NULL);
}

char *ds_manifest_tsv(const ds_image *im, size_t n, size_t *len) {
    size_t cap = n * (64 + 72 + 64 + 3) + 1;
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(s + o, cap - o, "%s\t%s\t%s\n", im[i].src, im[i].label, im[i].jpeg);
    *len = o;
    return s;
}

ursa_err ds_manifest_parse(const char *tsv, size_t len, ds_image **out, size_t *n) {
    size_t lines = 0;
    for (size_t i = 0; i < len; i++) lines += tsv[i] == '\n';
    ds_image *im = calloc(lines + 1, sizeof *im);
    if (!im) return URSA_ERR_NOMEM;
    size_t k = 0;
    const char *p = tsv, *end = tsv + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break;
        char line[256];
        size_t l = (size_t)(nl - p);
        if (l < sizeof line) {
            memcpy(line, p, l);
            line[l] = '\0';
            ds_image *d = &im[k];
            if (sscanf(line, "%64[0-9a-f]\t%71[^\t]\t%64[0-9a-f]", d->src, d->label, d->jpeg) ==
                    3 && strlen(d->src) >= 32 && strlen(d->jpeg) == 64)
                k++;
            else
                memset(d, 0, sizeof *d);
        }
        p = nl + 1;
    }
    if (k != lines) {
        free(im);
        return URSA_ERR_CORRUPT;
    }
    *out = im;
    *n = k;
    return URSA_OK;
}

int ds_in_valid(const char *src_blob, uint64_t seed, double valid_pct) {
    char buf[128];
    int l = snprintf(buf, sizeof buf, "%llu:%s", (unsigned long long)seed, src_blob);
    uint8_t h[32];
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, buf, (size_t)l);
    sha256_final(&c, h);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | h[i];
    return (double)(v >> 11) / 9007199254740992.0 < valid_pct;
}
