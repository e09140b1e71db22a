/* rstore.c: hiredis with reconnect-and-retry; see rstore.h. */
#include "rstore.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

struct rstore {
    char host[256];
    int port, db;
    char password[256];
    int timeout_ms, retry_ms;
    redisContext *ctx;
    char last_error[256];
};

struct rstore_batch {
    char **cmds;
    size_t *lens;
    size_t n, cap;
};

rstore *rstore_new(const char *url, int timeout_ms, char *errstr, size_t n) {
    rstore *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->port = 6379;
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
    r->retry_ms = 10000;
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0) goto bad;
    p += 8;
    const char *at = strchr(p, '@');
    if (at) { /* [user]:password@ ; only the password matters to AUTH */
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        size_t pl = (size_t)(at - pw);
        if (pl >= sizeof r->password) goto bad;
        memcpy(r->password, pw, pl);
        p = at + 1;
    }
    size_t hl = strcspn(p, ":/");
    if (hl == 0 || hl >= sizeof r->host) goto bad;
    memcpy(r->host, p, hl);
    p += hl;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535) goto bad;
        r->port = (int)port;
        p = end;
    }
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
    if (errstr) snprintf(errstr, n, "bad Redis URL \"%s\" (want redis://host:port[/db])", url);
    free(r);
    return NULL;
}

void rstore_destroy(rstore *r) {
    if (!r) return;
    if (r->ctx) redisFree(r->ctx);
    free(r);
}

void rstore_set_retry_ms(rstore *r, int retry_ms) { r->retry_ms = retry_ms; }
const char *rstore_last_error(const rstore *r) { return r->last_error; }

static void drop(rstore *r, const char *why) {
    snprintf(r->last_error, sizeof r->last_error, "%s", why);
    if (r->ctx) {
        redisFree(r->ctx);
        r->ctx = NULL;
    }
}

/* One connection attempt; 0 on success. */
static int connect_once(rstore *r) {
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(r->host, r->port, tv);
    if (!c || c->err) {
        drop(r, c ? c->errstr : "cannot allocate redis context");
        if (c) redisFree(c);
        return -1;
    }
    redisSetTimeout(c, tv);
    redisEnableKeepAlive(c);
    r->ctx = c;
    redisReply *rep = NULL;
    if (r->password[0]) {
        rep = redisCommand(c, "AUTH %s", r->password);
        if (!rep || rep->type == REDIS_REPLY_ERROR) goto fail;
        freeReplyObject(rep);
    }
    if (r->db) {
        rep = redisCommand(c, "SELECT %d", r->db);
        if (!rep || rep->type == REDIS_REPLY_ERROR) goto fail;
        freeReplyObject(rep);
    }
    return 0;
fail:
    drop(r, rep ? rep->str : c->errstr);
    if (rep) freeReplyObject(rep);
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

ursa_err rstore_cmdargv(rstore *r, redisReply **reply, int argc,
                        const char **argv, const size_t *argvlen) {
    cmd_arg a = {argc, argv, argvlen, NULL};
    if (reply) *reply = NULL;
    ursa_err err = with_retry(r, attempt_cmd, &a);
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
    ursa_err err = with_retry(r, attempt_raw, &a);
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

ursa_err rstore_batch_add(rstore_batch *b, const char *fmt, ...) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        char **c = realloc(b->cmds, cap * sizeof *c);
        if (!c) return URSA_ERR_NOMEM;
        b->cmds = c;
        size_t *l = realloc(b->lens, cap * sizeof *l);
        if (!l) return URSA_ERR_NOMEM;
        b->lens = l;
        b->cap = cap;
    }
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
    ursa_err err = with_retry(r, attempt_batch, &a);
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
