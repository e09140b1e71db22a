/* dataset.c: the Redis side of a dataset; see dataset.h for the keys. */
#include "dataset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"

static const char *names[DS__COUNT] = {"queued", "downloaded", "verified",
                                       "duplicate", "rejected", "failed"};

const char *ds_state_name(ds_state s) {
    return (unsigned)s < DS__COUNT ? names[s] : "unknown";
}

int ds_state_final(ds_state s) { return s >= DS_VERIFIED && s < DS__COUNT; }

static ds_state parse_state(const char *s) {
    for (int i = 0; i < DS__COUNT; i++)
        if (!strcmp(s, names[i])) return (ds_state)i;
    return DS_QUEUED;
}

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
    if (n == 0 || n > 64 || l[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)l[i];
        if (c < 0x20 || c == 0x7f || c == '|' || c == '/' || c == '\\') return 0;
    }
    return 1;
}

void ds_url_hash(const char *url, char out[65]) { sha256_hex(url, strlen(url), out); }

/* The one script behind every change. ARGV[1] is the key prefix, ARGV[2] the
 * operation. */
static const char *lua =
    "local p, op, h = ARGV[1], ARGV[2], ARGV[3]\n"
    "local rank = {queued=0, downloaded=1, verified=2, duplicate=2, rejected=2, failed=2}\n"
    "local function move(label, ns, reason, detail, transient, force)\n"
    "  local old = redis.call('HGET', p..'state', h) or 'queued'\n"
    "  if not force and rank[ns] <= rank[old] then return 0 end\n"
    "  if old == ns and not force then return 0 end\n"
    "  redis.call('HINCRBY', p..'count', label..'|'..old, -1)\n"
    "  local oldr = redis.call('HGET', p..'reason', h)\n"
    "  if oldr then redis.call('HINCRBY', p..'count', label..'|'..old..'|'..oldr, -1) end\n"
    "  redis.call('HSET', p..'state', h, ns)\n"
    "  redis.call('HINCRBY', p..'count', label..'|'..ns, 1)\n"
    "  if reason ~= '' then\n"
    "    redis.call('HSET', p..'reason', h, reason)\n"
    "    redis.call('HSET', p..'detail', h, detail)\n"
    "    redis.call('HINCRBY', p..'count', label..'|'..ns..'|'..reason, 1)\n"
    "  else redis.call('HDEL', p..'reason', h) redis.call('HDEL', p..'detail', h) end\n"
    "  if transient then redis.call('SADD', p..'transient', h)\n"
    "  else redis.call('SREM', p..'transient', h) end\n"
    "  return 1\n"
    "end\n"
    "if op == 'add' then\n"
    "  if redis.call('HSETNX', p..'url', h, ARGV[4]) == 0 then return 0 end\n"
    "  redis.call('HSET', p..'label', h, ARGV[5])\n"
    "  redis.call('HSET', p..'state', h, 'queued')\n"
    "  redis.call('HINCRBY', p..'count', ARGV[5]..'|queued', 1)\n"
    "  redis.call('HINCRBY', p..'count', 'total', 1)\n"
    "  return 1\n"
    "end\n"
    "local label = redis.call('HGET', p..'label', h)\n"
    "if not label then return -1 end\n"

    "local now = redis.call('HGET', p..'state', h) or 'queued'\n"
    "if op == 'set' then\n"
    "  local moved = move(label, ARGV[4], ARGV[5], ARGV[6], ARGV[7] == '1', ARGV[8] == '1')\n"
    "  if moved == 0 and rank[now] == 2 then return 2 end\n"
    "  return moved\n"
    "end\n"
    "if op == 'image' then\n"
    "  local src, jpeg, w, ht = ARGV[4], ARGV[5], ARGV[6], ARGV[7]\n"
    "  if rank[now] == 2 then\n"
    "    local cur = redis.call('HGET', p..'images', src)\n"
    "    if now == 'verified' and cur and string.find(cur, h, 1, true) then return 'verified' end\n"
    "    return 'final'\n"
    "  end\n"
    "  local cur = redis.call('HGET', p..'images', src)\n"
    "  if not cur then\n"
    "    redis.call('HSET', p..'images', src, label..'\\t'..jpeg..'\\t'..w..'\\t'..ht..'\\t'..h)\n"
    "    move(label, 'verified', '', '', false, false)\n"
    "    return 'verified'\n"
    "  end\n"
    "  local l, _, _, _, uh = string.match(cur, '^(.*)\\t(.*)\\t(.*)\\t(.*)\\t(.*)$')\n"
    "  if uh == h then move(label, 'verified', '', '', false, false) return 'verified' end\n"
    "  if l == label then\n"
    "    move(label, 'duplicate', 'duplicate', 'same bytes as URL '..uh, false, false)\n"
    "    return 'duplicate'\n"
    "  end\n"
    "  move(label, 'rejected', 'label_conflict', 'same image as URL '..uh..' labelled '..l, false, false)\n"
    "  redis.call('SADD', p..'conflicts', h)\n"
    "  return 'rejected'\n"
    "end\n"
    "return redis.error_reply('unknown op')\n";

static void prefix(const char *ds, char *out, size_t n) { snprintf(out, n, "ursa:ds:%s:", ds); }

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

static ursa_err add_op(rstore_batch *b, const ds_op *o) {
    char p[128];
    prefix(o->ds, p, sizeof p);
    if (o->kind == DS_OP_IMAGE)
        return rstore_batch_add(b, "EVALSHA %s 0 %s image %s %s %s %d %d", lua_sha, p,
                                o->url_hash, o->src_blob, o->jpeg_blob, o->w, o->h);
    return rstore_batch_add(b, "EVALSHA %s 0 %s set %s %s %s %s %s %s", lua_sha, p, o->url_hash,
                            ds_state_name(o->state), o->reason ? o->reason : "",
                            o->detail ? o->detail : "", o->transient ? "1" : "0",
                            o->force ? "1" : "0");
}

ursa_err ds_apply(rstore *r, ds_op *ops, size_t n) {
    if (!n) return URSA_OK;
    ursa_err err = URSA_OK;
    for (int round = 0; round < 3; round++) {
        if (!lua_sha[0] && (err = load_script(r))) return err;
        rstore_batch *b = rstore_batch_new();
        if (!b) return URSA_ERR_NOMEM;
        for (size_t i = 0; i < n && !err; i++) err = add_op(b, &ops[i]);
        redisReply **rep = NULL;
        if (!err) err = rstore_batch_exec(r, b, &rep);
        rstore_batch_destroy(b);
        if (err) return err;
        int reload = 0;
        for (size_t i = 0; i < n; i++) {
            redisReply *x = rep[i];
            ds_op *o = &ops[i];
            o->err = URSA_OK;
            if (noscript(x)) {
                reload = 1;
            } else if (x->type == REDIS_REPLY_ERROR) {
                o->err = URSA_ERR_REDIS;
            } else if (o->kind == DS_OP_STATE) {
                if (x->type != REDIS_REPLY_INTEGER || x->integer < 0) o->err = URSA_ERR_NOT_FOUND;
                o->changed = x->type == REDIS_REPLY_INTEGER && x->integer == 1;
                o->already_final = x->type == REDIS_REPLY_INTEGER && x->integer == 2;
            } else {
                if (x->type != REDIS_REPLY_STRING) o->err = URSA_ERR_NOT_FOUND;
                else if (!strcmp(x->str, "final")) o->already_final = 1;
                else o->outcome = parse_state(x->str);
            }
        }
        rstore_replies_free(rep, n);
        if (!reload) return URSA_OK;
        lua_sha[0] = '\0'; /* Redis lost its scripts (restart): load and send again */
    }
    return URSA_ERR_REDIS;
}

ursa_err ds_add_urls(rstore *r, const char *ds, size_t n, const char *const *urls,
                     const char *const *labels, int *added) {
    char p[128];
    prefix(ds, p, sizeof p);
    ursa_err err = rstore_cmd(r, NULL, "SADD ursa:datasets %s", ds);
    if (err) return err;
    if ((err = load_script(r))) return err; /* the batches below use EVALSHA */
    const size_t chunk = 1000;
    for (size_t off = 0; off < n; off += chunk) {
        size_t m = n - off < chunk ? n - off : chunk;
        rstore_batch *b = rstore_batch_new();
        if (!b) return URSA_ERR_NOMEM;
        for (size_t i = 0; i < m && !err; i++) {
            char h[65];
            ds_url_hash(urls[off + i], h);
            err = rstore_batch_add(b, "EVALSHA %s 0 %s add %s %s %s", lua_sha, p, h,
                                   urls[off + i], labels[off + i]);
        }
        redisReply **rep = NULL;
        if (!err) err = rstore_batch_exec(r, b, &rep);
        for (size_t i = 0; !err && i < m; i++) {
            if (rep[i]->type == REDIS_REPLY_ERROR) err = URSA_ERR_REDIS;
            else if (added) added[off + i] = rep[i]->integer == 1;
        }
        if (rep) rstore_replies_free(rep, m);
        rstore_batch_destroy(b);
        if (err) return err;
    }
    return URSA_OK;
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

ursa_err ds_add_image(rstore *r, const char *ds, const char *h, const char *src,
                      const char *jpeg, int w, int ht, ds_state *outcome) {
    ds_op o = {.kind = DS_OP_IMAGE, .ds = ds, .url_hash = h, .src_blob = src,
               .jpeg_blob = jpeg, .w = w, .h = ht};
    ursa_err err = ds_apply(r, &o, 1);
    if (!err) err = o.err;
    if (!err && outcome) *outcome = o.outcome;
    return err;
}

/* ---- manifests ------------------------------------------------------------------- */

ursa_err ds_exists(rstore *r, const char *ds, int *exists) {
    redisReply *rep = NULL;
    ursa_err e = rstore_cmd(r, &rep, "SISMEMBER ursa:datasets %s", ds);
    if (e) return e;
    *exists = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    return URSA_OK;
}

static int by_src(const void *a, const void *b) {
    return strcmp(((const ds_image *)a)->src, ((const ds_image *)b)->src);
}

ursa_err ds_manifest_read(rstore *r, const char *ds, ds_image **out, size_t *n) {
    redisReply *rep = NULL;
    *out = NULL;
    *n = 0;
    ursa_err e = rstore_cmd(r, &rep, "HGETALL ursa:ds:%s:images", ds);
    if (e) return e;
    ds_image *im = calloc(rep->elements / 2 + 1, sizeof *im);
    if (!im) {
        freeReplyObject(rep);
        return URSA_ERR_NOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        ds_image *d = &im[k];
        if (strlen(rep->element[i]->str) != 64 ||
            sscanf(rep->element[i + 1]->str, "%71[^\t]\t%64[0-9a-f]", d->label, d->jpeg) != 2 ||
            strlen(d->jpeg) != 64)
            continue; /* not written by ds_add_image: skip */
        memcpy(d->src, rep->element[i]->str, 65);
        k++;
    }
    freeReplyObject(rep);
    qsort(im, k, sizeof *im, by_src);
    *out = im;
    *n = k;
    return URSA_OK;
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
                    3 && strlen(d->src) == 64 && strlen(d->jpeg) == 64)
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
