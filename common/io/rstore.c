/* rstore.c: hiredis with reconnect-and-retry, on one Redis or a Redis
 * Cluster; see rstore.h.
 *
 * Cluster mode is ours to write (Debian's hiredis 0.14 has none, and no C
 * cluster client is packaged): the slot map comes from CLUSTER SLOTS, a
 * command goes to the master of its key's slot (CRC16 of the key, or of
 * its {hash tag}), a batch is split per node and pipelined to each, and
 * replies are put back in order. MOVED updates the map and sends again;
 * ASK sends ASKING and the command to the node importing the slot;
 * TRYAGAIN and CLUSTERDOWN wait and send again; a lost node is dropped and
 * the map read again. Every command ursa sends is idempotent, so sending
 * one twice is safe (rstore.h). */
#include "rstore.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

enum { NSLOTS = 16384, MAX_SEEDS = 16, MAX_NODES = 64 };

typedef struct {
    char host[256];
    int port;
    redisContext *ctx;
} rnode;

struct rstore {
    char host[256];
    int port, db;
    char user[128], password[256]; /* AUTH [user] password, when given */
    int timeout_ms, retry_ms;
    redisContext *ctx;
    char last_error[256];
    /* the seed nodes of redis://h1:p1,h2:p2; one Redis or a cluster is
     * decided on first contact (CLUSTER SLOTS) */
    rnode seeds[MAX_SEEDS];
    int nseeds;
    int mode; /* 0 not known yet, 1 one Redis, 2 cluster */
    rnode nodes[MAX_NODES]; /* a cluster's masters, as CLUSTER SLOTS names them */
    int nnodes;
    int16_t slot_node[NSLOTS]; /* -1: not known */
    int map_stale;             /* read CLUSTER SLOTS again before the next send */
    uint64_t moved, asked;     /* redirects followed, logged every 10 s at most */
    int64_t redirect_logged;
};

struct rstore_batch {
    char **cmds;
    size_t *lens;
    size_t n, cap;
};

/* host[:port] of one seed; p ends at ',', '/' or the end. */
static const char *parse_hostport(const char *p, char *host, size_t hsize, int *port) {
    size_t hl = strcspn(p, ":/,");
    if (hl == 0 || hl >= hsize) return NULL;
    memcpy(host, p, hl);
    host[hl] = '\0';
    p += hl;
    *port = 6379;
    if (*p == ':') {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || v < 1 || v > 65535) return NULL;
        *port = (int)v;
        p = end;
    }
    return p;
}

/* Decodes n bytes of a URL's user or password (%XX escapes) into out; 0
 * when it does not fit or an escape is bad. */
static int url_decode(const char *s, size_t n, char *out, size_t size) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (s[i] == '%') {
            if (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) ||
                !isxdigit((unsigned char)s[i + 2]))
                return 0;
            sscanf(s + i + 1, "%2x", &v);
            i += 2;
        } else {
            v = (unsigned char)s[i];
        }
        if (o + 1 >= size || v == 0) return 0;
        out[o++] = (char)v;
    }
    out[o] = '\0';
    return 1;
}

rstore *rstore_new(const char *url, int timeout_ms, char *errstr, size_t n) {
    rstore *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->port = 6379;
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
    r->retry_ms = 10000;
    for (int i = 0; i < NSLOTS; i++) r->slot_node[i] = -1;
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0) goto bad;
    p += 8;
    const char *at = strchr(p, '@');
    if (at) { /* [user]:password@ (percent-encoded), or password@ */
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        if (colon && !url_decode(p, (size_t)(colon - p), r->user, sizeof r->user)) goto bad;
        if (!url_decode(pw, (size_t)(at - pw), r->password, sizeof r->password)) goto bad;
        p = at + 1;
    }
    for (;;) { /* one or more seeds: h1:p1,h2:p2 */
        if (r->nseeds == MAX_SEEDS) goto bad;
        rnode *sd = &r->seeds[r->nseeds++];
        if (!(p = parse_hostport(p, sd->host, sizeof sd->host, &sd->port))) goto bad;
        if (*p != ',') break;
        p++;
    }
    snprintf(r->host, sizeof r->host, "%s", r->seeds[0].host);
    r->port = r->seeds[0].port;
    if (*p == '/' && p[1]) {
        char *end;
        long db = strtol(p + 1, &end, 10);
        if (*end || db < 0) goto bad;
        r->db = (int)db;
    } else if (*p && strcmp(p, "/") != 0) {
        goto bad;
    }
    return r;
bad:
    if (errstr) {
        char shown[600];
        snprintf(errstr, n,
                 "bad Redis URL \"%s\" (want redis://[[user]:password@]host:port[,host:port...]"
                 "[/db])",
                 util_url_redact(url, shown, sizeof shown));
    }
    free(r);
    return NULL;
}

void rstore_destroy(rstore *r) {
    if (!r) return;
    if (r->ctx) redisFree(r->ctx);
    for (int i = 0; i < r->nnodes; i++)
        if (r->nodes[i].ctx) redisFree(r->nodes[i].ctx);
    free(r);
}

int rstore_is_cluster(const rstore *r) { return r->mode == 2; }

void rstore_set_retry_ms(rstore *r, int retry_ms) { r->retry_ms = retry_ms; }
const char *rstore_last_error(const rstore *r) { return r->last_error; }

static void drop(rstore *r, const char *why) {
    snprintf(r->last_error, sizeof r->last_error, "%s", why);
    if (r->ctx) {
        redisFree(r->ctx);
        r->ctx = NULL;
    }
}

/* Connects to host:port and authenticates (and SELECTs db when select_db);
 * NULL with the reason in last_error. */
static redisContext *dial(rstore *r, const char *host, int port, int select_db) {
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err) {
        snprintf(r->last_error, sizeof r->last_error, "%s:%d: %s", host, port,
                 c ? c->errstr : "cannot allocate redis context");
        if (c) redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    redisEnableKeepAlive(c);
    redisReply *rep = NULL;
    if (r->password[0]) {
        rep = r->user[0] ? redisCommand(c, "AUTH %s %s", r->user, r->password)
                         : redisCommand(c, "AUTH %s", r->password);
        if (!rep || rep->type == REDIS_REPLY_ERROR) goto fail;
        freeReplyObject(rep);
    }
    if (select_db && r->db) {
        rep = redisCommand(c, "SELECT %d", r->db);
        if (!rep || rep->type == REDIS_REPLY_ERROR) goto fail;
        freeReplyObject(rep);
    }
    return c;
fail:
    snprintf(r->last_error, sizeof r->last_error, "%s:%d: %s", host, port,
             rep ? rep->str : c->errstr);
    if (rep) freeReplyObject(rep);
    redisFree(c);
    return NULL;
}

/* One connection attempt to one Redis (the seeds in turn); 0 on success. */
static int connect_once(rstore *r) {
    for (int i = 0; i < r->nseeds; i++) {
        rnode *sd = &r->seeds[i];
        if ((r->ctx = dial(r, sd->host, sd->port, 1))) {
            memcpy(r->host, sd->host, sizeof r->host); /* same size; snprintf would alias r */
            r->port = sd->port;
            return 0;
        }
    }
    return -1;
}

/* Error replies that say the server cannot serve right now (loading its
 * AOF after a restart, a script running too long, out of memory, a replica
 * or cluster in transition): the command itself is fine and is sent again,
 * and if the condition outlasts the retry window the caller gets
 * URSA_ERR_UNAVAILABLE, never a per-message failure. */
static int server_busy(const redisReply *rep) {
    static const char *const busy[] = {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN",
                                       "CLUSTERDOWN", "OOM", "READONLY", "NOREPLICAS"};
    if (rep->type != REDIS_REPLY_ERROR || !rep->str) return 0;
    for (size_t i = 0; i < sizeof busy / sizeof busy[0]; i++)
        if (!strncmp(rep->str, busy[i], strlen(busy[i]))) return 1;
    return 0;
}

/* ---- Redis Cluster ------------------------------------------------------------ */

unsigned rstore_key_slot(const char *key, size_t len) {
    const char *open = memchr(key, '{', len);
    if (open) { /* a non-empty {tag} hashes alone */
        const char *close = memchr(open + 1, '}', len - (size_t)(open + 1 - key));
        if (close && close > open + 1) {
            key = open + 1;
            len = (size_t)(close - key);
        }
    }
    uint16_t crc = 0; /* CRC16-CCITT (XModem), as the cluster spec */
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint8_t)key[i] << 8);
        for (int k = 0; k < 8; k++)
            crc = crc & 0x8000 ? (uint16_t)(crc << 1 ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc & (NSLOTS - 1);
}

static int node_index(rstore *r, const char *host, int port) {
    for (int i = 0; i < r->nnodes; i++)
        if (r->nodes[i].port == port && !strcmp(r->nodes[i].host, host)) return i;
    if (r->nnodes == MAX_NODES) return -1;
    rnode *n = &r->nodes[r->nnodes];
    memset(n, 0, sizeof *n);
    snprintf(n->host, sizeof n->host, "%s", host);
    n->port = port;
    return r->nnodes++;
}

static void node_drop(rstore *r, int i, const char *why) {
    snprintf(r->last_error, sizeof r->last_error, "%s:%d: %s", r->nodes[i].host,
             r->nodes[i].port, why);
    if (r->nodes[i].ctx) redisFree(r->nodes[i].ctx);
    r->nodes[i].ctx = NULL;
    r->map_stale = 1;
}

/* The slot map from a CLUSTER SLOTS reply (masters only). */
static void load_slots(rstore *r, const redisReply *rep, const char *asked_host) {
    for (int i = 0; i < NSLOTS; i++) r->slot_node[i] = -1;
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *e = rep->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2)
            continue;
        long long a = e->element[0]->integer, b = e->element[1]->integer;
        const redisReply *m = e->element[2];
        const char *host = m->element[0]->str && m->element[0]->str[0] ? m->element[0]->str
                                                                         : asked_host;
        int idx = node_index(r, host, (int)m->element[1]->integer);
        for (long long sl = a; idx >= 0 && sl <= b && sl < NSLOTS; sl++)
            if (sl >= 0) r->slot_node[sl] = (int16_t)idx;
    }
}

/* Reads the slot map again from any node that answers. 0 on success. */
static int refresh(rstore *r) {
    int tries = r->nnodes + r->nseeds;
    for (int t = 0; t < tries; t++) {
        int seed = t >= r->nnodes;
        rnode *n = seed ? &r->seeds[t - r->nnodes] : &r->nodes[t];
        redisContext *c = seed ? NULL : n->ctx;
        if (!c && !(c = dial(r, n->host, n->port, 0))) continue;
        redisReply *rep = redisCommand(c, "CLUSTER SLOTS");
        if (!seed) n->ctx = c;
        if (!rep) {
            if (!seed) node_drop(r, t, c->errstr);
            else redisFree(c);
            continue;
        }
        int ok = rep->type == REDIS_REPLY_ARRAY && rep->elements > 0;
        if (ok) load_slots(r, rep, n->host);
        freeReplyObject(rep);
        if (seed) redisFree(c);
        if (ok) {
            r->map_stale = 0;
            return 0;
        }
    }
    return -1;
}

/* One Redis or a cluster, decided on first contact: CLUSTER SLOTS answers
 * on a cluster node and is refused elsewhere. 0 once decided. */
static int probe(rstore *r) {
    for (int i = 0; i < r->nseeds; i++) {
        rnode *sd = &r->seeds[i];
        redisContext *c = dial(r, sd->host, sd->port, 0);
        if (!c) continue;
        redisReply *rep = redisCommand(c, "CLUSTER SLOTS");
        if (!rep || (rep->type == REDIS_REPLY_ERROR &&
                     (!strncmp(rep->str, "LOADING", 7) || !strncmp(rep->str, "BUSY", 4)))) {
            snprintf(r->last_error, sizeof r->last_error, "%s", rep ? rep->str : c->errstr);
            if (rep) freeReplyObject(rep);
            redisFree(c);
            continue;
        }
        if (rep->type == REDIS_REPLY_ARRAY) {
            r->mode = 2;
            load_slots(r, rep, sd->host);
            r->map_stale = rep->elements == 0;
            freeReplyObject(rep);
            redisFree(c);
            ULOG_INFO("event=redis_cluster nodes=%d seed=%s:%d", r->nnodes, sd->host, sd->port);
            return 0;
        }
        freeReplyObject(rep); /* "cluster support disabled": one Redis */
        redisFree(c);
        r->mode = 1;
        memcpy(r->host, sd->host, sizeof r->host); /* same size; snprintf would alias r */
        r->port = sd->port;
        return 0;
    }
    return -1;
}

static ursa_err decide_mode(rstore *r) {
    int64_t deadline = util_mono_ms() + r->retry_ms;
    for (int attempt = 1; !r->mode; attempt++) {
        if (probe(r) == 0) break;
        int64_t wait = util_backoff_ms(attempt, 50, 1000);
        if (util_mono_ms() + wait > deadline) {
            char q[300];
            ULOG_WARN("event=redis_unavailable host=%s port=%d err=%s", r->seeds[0].host,
                      r->seeds[0].port, ulog_quote(q, sizeof q, r->last_error));
            return URSA_ERR_UNAVAILABLE;
        }
        util_sleep_ms(wait);
    }
    return URSA_OK;
}

/* The arguments of a formatted command (RESP array of bulk strings). */
static int resp_args(const char *cmd, size_t len, const char **arg, size_t *alen, int max) {
    const char *p = cmd, *end = cmd + len;
    if (p >= end || *p != '*') return -1;
    long n = strtol(p + 1, NULL, 10);
    p = memchr(p, '\n', (size_t)(end - p));
    int k = 0;
    for (long i = 0; p && i < n && k < max; i++) {
        p++;
        if (p >= end || *p != '$') return -1;
        long l = strtol(p + 1, NULL, 10);
        p = memchr(p, '\n', (size_t)(end - p));
        if (!p || l < 0 || p + 1 + l > end) return -1;
        arg[k] = p + 1;
        alen[k++] = (size_t)l;
        p = p + 1 + l + 1; /* past CR, at LF */
    }
    return k;
}

static int arg_is(const char *a, size_t l, const char *name) {
    return l == strlen(name) && !strncasecmp(a, name, l);
}

enum { ROUTE_ANY = -2, ROUTE_ALL = -3, ROUTE_UNKNOWN = -1, ROUTE_SKIP = -4 };

/* Where a command goes: a node index, ROUTE_ANY (no key), ROUTE_ALL
 * (SCRIPT: every master needs the script) or ROUTE_UNKNOWN (slot not
 * mapped yet). */
static int route_of(rstore *r, const char *cmd, size_t len) {
    const char *arg[4];
    size_t alen[4];
    int n = resp_args(cmd, len, arg, alen, 4);
    if (n < 1) return ROUTE_ANY;
    if (arg_is(arg[0], alen[0], "SCRIPT")) return ROUTE_ALL;
    int k = 1;
    if (arg_is(arg[0], alen[0], "EVAL") || arg_is(arg[0], alen[0], "EVALSHA") ||
        arg_is(arg[0], alen[0], "EVAL_RO") || arg_is(arg[0], alen[0], "EVALSHA_RO")) {
        if (n < 4 || strtol(arg[2], NULL, 10) < 1) return ROUTE_ANY;
        k = 3;
    } else if (n < 2 || arg_is(arg[0], alen[0], "PING") || arg_is(arg[0], alen[0], "INFO") ||
               arg_is(arg[0], alen[0], "DBSIZE") || arg_is(arg[0], alen[0], "CLUSTER") ||
               arg_is(arg[0], alen[0], "TIME")) {
        return ROUTE_ANY;
    }
    return r->slot_node[rstore_key_slot(arg[k], alen[k])];
}

/* "MOVED 3999 127.0.0.1:6381" / "ASK ...": the target node, or -1. */
static int redirect_target(rstore *r, const redisReply *rep, int *ask, unsigned *slot) {
    if (rep->type != REDIS_REPLY_ERROR || !rep->str) return -1;
    *ask = !strncmp(rep->str, "ASK ", 4);
    if (!*ask && strncmp(rep->str, "MOVED ", 6)) return -1;
    char host[256];
    int port;
    if (sscanf(rep->str + (*ask ? 4 : 6), "%u %255[^:]:%d", slot, host, &port) != 3) return -1;
    if (!host[0]) snprintf(host, sizeof host, "%s", r->seeds[0].host);
    return node_index(r, host, port);
}

/* Sends one command (SCRIPT LOAD) to every master; *out gets the first
 * master's reply. -1 when a master could not be reached. */
static int to_all_masters(rstore *r, const char *cmd, size_t len, redisReply **out) {
    int ok = 1;
    for (int k = 0; k < r->nnodes; k++) {
        int master = 0;
        for (int sl = 0; sl < NSLOTS && !master; sl++) master = r->slot_node[sl] == k;
        if (!master) continue;
        rnode *nd = &r->nodes[k];
        void *v = NULL;
        if ((!nd->ctx && !(nd->ctx = dial(r, nd->host, nd->port, 0))) ||
            redisAppendFormattedCommand(nd->ctx, cmd, len) != REDIS_OK ||
            redisGetReply(nd->ctx, &v) != REDIS_OK || !v) {
            if (nd->ctx) node_drop(r, k, nd->ctx->errstr);
            ok = 0;
            continue;
        }
        if (server_busy(v)) ok = 0;
        if (!*out && !server_busy(v)) *out = v;
        else freeReplyObject(v);
    }
    if (!ok && *out) {
        freeReplyObject(*out);
        *out = NULL;
    }
    return ok ? 0 : -1;
}

/* Sends n formatted commands on the cluster: split per node, pipelined,
 * redirects followed, until every one has a final reply or retry_ms
 * passes (then nothing is returned). */
static ursa_err cluster_exec(rstore *r, char *const *cmds, const size_t *lens, size_t n,
                             redisReply **out) {
    int64_t deadline = util_mono_ms() + r->retry_ms;
    int *target = malloc(n * sizeof *target), *ask = malloc(n * sizeof *ask);
    if (!target || !ask) {
        free(target);
        free(ask);
        return URSA_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) out[i] = NULL, ask[i] = -1;
    size_t left = n;
    ursa_err err = URSA_OK;
    for (int attempt = 1; left; attempt++) {
        if (r->map_stale) refresh(r);
        int anynode = -1;
        for (int k = 0; k < r->nnodes && anynode < 0; k++)
            for (int sl = 0; sl < NSLOTS && anynode < 0; sl += 64)
                if (r->slot_node[sl] == k) anynode = k;
        for (size_t i = 0; i < n; i++) {
            if (out[i]) continue;
            target[i] = ask[i] >= 0 ? ask[i] : route_of(r, cmds[i], lens[i]);
            if (target[i] == ROUTE_ALL) { /* SCRIPT: every master needs it, now */
                if (to_all_masters(r, cmds[i], lens[i], &out[i]) == 0) left--;
                target[i] = ROUTE_SKIP;
            }
            if (target[i] == ROUTE_ANY) target[i] = anynode;
            if (target[i] == ROUTE_UNKNOWN) r->map_stale = 1;
        }
        int redirected = 0;
        for (int k = 0; k < r->nnodes; k++) {
            int mine = 0;
            for (size_t i = 0; i < n; i++) mine += !out[i] && target[i] == k;
            if (!mine) continue;
            rnode *nd = &r->nodes[k];
            if (!nd->ctx && !(nd->ctx = dial(r, nd->host, nd->port, 0))) {
                r->map_stale = 1;
                continue;
            }
            for (size_t i = 0; i < n; i++) {
                if (out[i] || target[i] != k) continue;
                if (ask[i] >= 0) redisAppendCommand(nd->ctx, "ASKING");
                redisAppendFormattedCommand(nd->ctx, cmds[i], lens[i]);
            }
            for (size_t i = 0; i < n && nd->ctx; i++) {
                if (out[i] || target[i] != k) continue;
                void *v = NULL;
                if (ask[i] >= 0) {
                    if (redisGetReply(nd->ctx, &v) != REDIS_OK || !v) break;
                    freeReplyObject(v);
                    v = NULL;
                }
                if (redisGetReply(nd->ctx, &v) != REDIS_OK || !v) break;
                redisReply *x = v;
                int is_ask = 0;
                unsigned slot = 0;
                int to = redirect_target(r, x, &is_ask, &slot);
                if (to >= 0) {
                    r->moved += !is_ask;
                    r->asked += is_ask;
                    if (util_mono_ms() - r->redirect_logged >= 10000) {
                        r->redirect_logged = util_mono_ms();
                        ULOG_INFO("event=redis_redirects moved=%llu ask=%llu last=\"%s\"",
                                  (unsigned long long)r->moved, (unsigned long long)r->asked,
                                  x->str);
                    }
                    if (is_ask) ask[i] = to;
                    else if (slot < NSLOTS) r->slot_node[slot] = (int16_t)to, r->map_stale = 1,
                                                                ask[i] = -1;
                    redirected = 1;
                    freeReplyObject(x);
                } else if (server_busy(x)) {
                    snprintf(r->last_error, sizeof r->last_error, "%s", x->str);
                    freeReplyObject(x);
                } else {
                    out[i] = x;
                    ask[i] = -1;
                    left--;
                }
            }
            /* a read that failed above left replies unread: the connection
             * is unusable, and what it did not answer goes again */
            if (nd->ctx && nd->ctx->err) node_drop(r, k, nd->ctx->errstr);
        }
        if (!left) break;
        if (redirected && attempt < 16) continue; /* follow at once */
        int64_t wait = util_backoff_ms(attempt, 20, 500);
        if (util_mono_ms() + wait > deadline) {
            err = URSA_ERR_UNAVAILABLE;
            char q[300];
            ULOG_WARN("event=redis_unavailable cluster=1 left=%zu err=%s", left,
                      ulog_quote(q, sizeof q, r->last_error));
            break;
        }
        util_sleep_ms(wait);
    }
    if (err)
        for (size_t i = 0; i < n; i++)
            if (out[i]) freeReplyObject(out[i]), out[i] = NULL;
    free(target);
    free(ask);
    return err;
}

/* Runs fn until it succeeds on a live connection or retry_ms passes. */
typedef int (*attempt_fn)(rstore *r, void *arg); /* 0 ok, -1 connection lost */

static ursa_err with_retry(rstore *r, attempt_fn fn, void *arg) {
    int64_t deadline = util_mono_ms() + r->retry_ms;
    for (int attempt = 1;; attempt++) {
        if (r->ctx || connect_once(r) == 0) {
            if (fn(r, arg) == 0) {
                if (attempt > 1)
                    ULOG_INFO("event=redis_reconnected host=%s port=%d attempts=%d",
                              r->host, r->port, attempt);
                return URSA_OK;
            }
        }
        int64_t wait = util_backoff_ms(attempt, 50, 1000);
        if (util_mono_ms() + wait > deadline) {
            char q[300];
            ULOG_WARN("event=redis_unavailable host=%s port=%d err=%s", r->host,
                      r->port, ulog_quote(q, sizeof q, r->last_error));
            return URSA_ERR_UNAVAILABLE;
        }
        util_sleep_ms(wait);
    }
}

typedef struct {
    int argc;
    const char **argv;
    const size_t *argvlen;
    redisReply *reply;
} cmd_arg;

static int attempt_cmd(rstore *r, void *arg) {
    cmd_arg *a = arg;
    a->reply = redisCommandArgv(r->ctx, a->argc, a->argv, a->argvlen);
    if (!a->reply) {
        drop(r, r->ctx->errstr);
        return -1;
    }
    if (server_busy(a->reply)) {
        snprintf(r->last_error, sizeof r->last_error, "%s", a->reply->str);
        freeReplyObject(a->reply);
        a->reply = NULL;
        return -1;
    }
    return 0;
}

static ursa_err finish_reply(rstore *r, redisReply *rep, redisReply **out) {
    if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(r->last_error, sizeof r->last_error, "%s", rep->str);
        freeReplyObject(rep);
        if (out) *out = NULL;
        return URSA_ERR_REDIS;
    }
    if (out) *out = rep;
    else freeReplyObject(rep);
    return URSA_OK;
}

static ursa_err cluster_one(rstore *r, char *cmd, size_t len, redisReply **reply) {
    redisReply *rep = NULL;
    ursa_err err = cluster_exec(r, &cmd, &len, 1, &rep);
    if (err) return err;
    return finish_reply(r, rep, reply);
}

ursa_err rstore_cmdargv(rstore *r, redisReply **reply, int argc,
                        const char **argv, const size_t *argvlen) {
    cmd_arg a = {argc, argv, argvlen, NULL};
    if (reply) *reply = NULL;
    ursa_err err = r->mode ? URSA_OK : decide_mode(r);
    if (err) return err;
    if (r->mode == 2) {
        char *cmd = NULL;
        int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
        if (len < 0) return URSA_ERR_NOMEM;
        err = cluster_one(r, cmd, (size_t)len, reply);
        redisFreeCommand(cmd);
        return err;
    }
    err = with_retry(r, attempt_cmd, &a);
    if (err) return err;
    return finish_reply(r, a.reply, reply);
}

typedef struct {
    const char *cmd;
    size_t len;
    redisReply *reply;
} raw_arg;

static int attempt_raw(rstore *r, void *arg) {
    raw_arg *a = arg;
    void *rep = NULL;
    if (redisAppendFormattedCommand(r->ctx, a->cmd, a->len) != REDIS_OK ||
        redisGetReply(r->ctx, &rep) != REDIS_OK || !rep) {
        drop(r, r->ctx->errstr);
        return -1;
    }
    if (server_busy(rep)) {
        snprintf(r->last_error, sizeof r->last_error, "%s", ((redisReply *)rep)->str);
        freeReplyObject(rep);
        return -1;
    }
    a->reply = rep;
    return 0;
}

ursa_err rstore_cmd(rstore *r, redisReply **reply, const char *fmt, ...) {
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (reply) *reply = NULL;
    if (len < 0) return len == -2 ? URSA_ERR_INVALID : URSA_ERR_NOMEM;
    raw_arg a = {cmd, (size_t)len, NULL};
    ursa_err err = r->mode ? URSA_OK : decide_mode(r);
    if (!err && r->mode == 2) {
        err = cluster_one(r, cmd, (size_t)len, reply);
        redisFreeCommand(cmd);
        return err;
    }
    if (!err) err = with_retry(r, attempt_raw, &a);
    redisFreeCommand(cmd);
    if (err) return err;
    return finish_reply(r, a.reply, reply);
}

rstore_batch *rstore_batch_new(void) { return calloc(1, sizeof(rstore_batch)); }

void rstore_batch_destroy(rstore_batch *b) {
    if (!b) return;
    for (size_t i = 0; i < b->n; i++) redisFreeCommand(b->cmds[i]);
    free(b->cmds);
    free(b->lens);
    free(b);
}

size_t rstore_batch_len(const rstore_batch *b) { return b->n; }

/* Room for one more command. */
static ursa_err batch_grow(rstore_batch *b) {
    if (b->n < b->cap) return URSA_OK;
    size_t cap = b->cap ? b->cap * 2 : 16;
    char **c = realloc(b->cmds, cap * sizeof *c);
    if (!c) return URSA_ERR_NOMEM;
    b->cmds = c;
    size_t *l = realloc(b->lens, cap * sizeof *l);
    if (!l) return URSA_ERR_NOMEM;
    b->lens = l;
    b->cap = cap;
    return URSA_OK;
}

ursa_err rstore_batch_add(rstore_batch *b, const char *fmt, ...) {
    if (batch_grow(b)) return URSA_ERR_NOMEM;
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len < 0) return len == -2 ? URSA_ERR_INVALID : URSA_ERR_NOMEM;
    b->cmds[b->n] = cmd;
    b->lens[b->n++] = (size_t)len;
    return URSA_OK;
}

ursa_err rstore_batch_add_argv(rstore_batch *b, int argc, const char **argv) {
    if (batch_grow(b)) return URSA_ERR_NOMEM;
    char *cmd = NULL;
    long long len = redisFormatCommandArgv(&cmd, argc, argv, NULL);
    if (len < 0) return URSA_ERR_NOMEM;
    b->cmds[b->n] = cmd;
    b->lens[b->n++] = (size_t)len;
    return URSA_OK;
}

typedef struct {
    rstore_batch *b;
    redisReply **replies;
} batch_arg;

static int attempt_batch(rstore *r, void *arg) {
    batch_arg *a = arg;
    rstore_batch *b = a->b;
    for (size_t i = 0; i < b->n; i++)
        if (redisAppendFormattedCommand(r->ctx, b->cmds[i], b->lens[i]) != REDIS_OK)
            goto lost;
    int busy = 0;
    for (size_t i = 0; i < b->n; i++) {
        void *rep = NULL;
        if (redisGetReply(r->ctx, &rep) != REDIS_OK || !rep) {
            for (size_t j = 0; j < i; j++) { /* the whole batch goes again */
                freeReplyObject(a->replies[j]);
                a->replies[j] = NULL;
            }
            goto lost;
        }
        a->replies[i] = rep;
        if (server_busy(rep)) {
            busy = 1;
            snprintf(r->last_error, sizeof r->last_error, "%s", ((redisReply *)rep)->str);
        }
    }
    if (busy) { /* the commands are idempotent: the whole batch goes again */
        for (size_t j = 0; j < b->n; j++) {
            freeReplyObject(a->replies[j]);
            a->replies[j] = NULL;
        }
        return -1;
    }
    return 0;
lost:
    drop(r, r->ctx->errstr[0] ? r->ctx->errstr : "connection lost");
    return -1;
}

ursa_err rstore_batch_exec(rstore *r, rstore_batch *b, redisReply ***replies) {
    if (replies) *replies = NULL;
    if (b->n == 0) return URSA_OK;
    batch_arg a = {b, calloc(b->n, sizeof(redisReply *))};
    if (!a.replies) return URSA_ERR_NOMEM;
    ursa_err err = r->mode ? URSA_OK : decide_mode(r);
    if (!err)
        err = r->mode == 2 ? cluster_exec(r, b->cmds, b->lens, b->n, a.replies)
                           : with_retry(r, attempt_batch, &a);
    if (err) {
        free(a.replies);
        return err;
    }
    if (replies) *replies = a.replies;
    else rstore_replies_free(a.replies, b->n);
    return URSA_OK;
}

void rstore_replies_free(redisReply **replies, size_t n) {
    if (!replies) return;
    for (size_t i = 0; i < n; i++)
        if (replies[i]) freeReplyObject(replies[i]);
    free(replies);
}

ursa_err rstore_hgetall(rstore *r, redisReply **reply, const char *key) {
    ursa_err e = rstore_cmd(r, reply, "HGETALL %s", key);
    if (e) return e;
    if ((*reply)->type != REDIS_REPLY_ARRAY || !(*reply)->elements) {
        freeReplyObject(*reply);
        *reply = NULL;
        return URSA_ERR_NOT_FOUND;
    }
    return URSA_OK;
}
