/* models.c: what ursa-inference serves: loading a model (a local file, or
 * a registered one from the blob store or Redis), pinning one, following
 * ursa.models.published, GET /v1/models and the admin calls; see server.h.
 *
 * One load at a time (load_mu). The handlers that touch Redis or load a
 * model run on the admin pool, never on an HTTP event thread. */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "log.h"
#include "msg.h"
#include "registry.h"
#include "server.h"
#include "util.h"

static served *load_bytes(server *s, const uint8_t *d, size_t len, const char *id, char *err,
                          size_t n) {
    return served_load(d, len, id, (int)cfg_int(s->c, "inference.max-batch"),
                       batcher_instances(s->b), cfg_str(s->c, "inference.tta"), err, n);
}

/* A registered model from the blob store, or Redis's cached copy. */
static served *load_registered(server *s, rstore *r, const char *id, long long *created,
                               char *err, size_t n) {
    redisReply *rep = NULL;
    static const char *const want[] = {"blob", "created_ms", NULL};
    if (registry_fields(r, id, want, &rep) != URSA_OK) {
        snprintf(err, n, "Redis: %s", rstore_last_error(r));
        return NULL;
    }
    char blob[65] = "";
    if (rep->element[0]->type == REDIS_REPLY_STRING)
        snprintf(blob, sizeof blob, "%s", rep->element[0]->str);
    *created = rep->element[1]->type == REDIS_REPLY_STRING ? atoll(rep->element[1]->str) : 0;
    freeReplyObject(rep);
    if (!blob[0]) {
        snprintf(err, n, "no model %s in the registry", id);
        return NULL;
    }
    char *data = NULL;
    size_t len = 0;
    ursa_err e = blob_get(s->bs, blob, (size_t)1 << 31, &data, &len);
    if (e) { /* not on this machine's volume: the cached copy */
        rep = NULL;
        if (registry_onnx(r, id, &rep) == URSA_OK) {
            data = malloc(rep->len ? rep->len : 1);
            if (data) memcpy(data, rep->str, rep->len), len = rep->len;
        }
        if (rep) freeReplyObject(rep);
        if (!data) {
            snprintf(err, n, "model %s: blob %.12s: %s, and no copy in Redis", id, blob,
                     ursa_err2str(e));
            return NULL;
        }
    }
    served *m = load_bytes(s, (const uint8_t *)data, len, id, err, n);
    free(data);
    return m;
}

int models_reload(server *s, int force, char *err, size_t n) {
    pthread_mutex_lock(&s->load_mu);
    int rc = -1;
    served *m = NULL, *cur = batcher_current(s->b);
    const char *file = cfg_str(s->c, "inference.model");
    rstore *r = NULL;
    long long created = 0;
    if (*file) {
        char *data = NULL;
        size_t len = 0;
        if (util_read_file(file, (size_t)1 << 31, &data, &len) != URSA_OK) {
            snprintf(err, n, "cannot read %s", file);
            goto out;
        }
        char base[4096];
        snprintf(base, sizeof base, "%s", file);
        m = load_bytes(s, (const uint8_t *)data, len, basename(base), err, n);
        free(data);
    } else {
        char e2[256];
        if (!(r = rstore_new(s->a.redis, 3000, e2, sizeof e2))) {
            snprintf(err, n, "%s", e2);
            goto out;
        }
        rstore_set_retry_ms(r, 3000);
        char id[160];
        snprintf(id, sizeof id, "%s", s->pin);
        if (!id[0]) {
            redisReply *rep = NULL;
            ursa_err e = registry_list(r, s->dataset, 1, 1, &rep);
            if (e != URSA_OK) {
                snprintf(err, n, "Redis: %s", rstore_last_error(r));
                goto out;
            }
            if (rep->elements) snprintf(id, sizeof id, "%s", rep->element[0]->str);
            freeReplyObject(rep);
            if (!id[0]) {
                snprintf(err, n, "%s%s has no published model yet", *s->dataset ? "dataset " : "",
                         *s->dataset ? s->dataset : "the registry");
                goto out;
            }
        }
        if (cur && !force && !strcmp(served_id(cur), id)) {
            rc = 0; /* already served */
            goto out;
        }
        m = load_registered(s, r, id, &created, err, n);
    }
    if (m) {
        char q[200];
        ULOG_INFO("event=model_loaded model=%s classes=%d size=%d tta=%s previous=%s",
                  served_id(m), served_nclass(m), served_meta(m)->size,
                  nn_tta_name(served_tta(m)),
                  ulog_quote(q, sizeof q, cur ? served_id(cur) : "none"));
        s->cur_created = created;
        batcher_swap(s->b, m);
        metrics_add(s->reloads, 1);
        rc = 0;
    }
out:
    if (rc) metrics_add(s->reload_failures, 1);
    served_release(cur);
    rstore_destroy(r);
    pthread_mutex_unlock(&s->load_mu);
    return rc;
}

/* ---- GET /v1/models ------------------------------------------------------------ */

/* The dataset's newest published models, read from Redis into f (the
 * array's inside). A stalled Redis must not hold the answer: one try, with
 * a short deadline (PUB_TIMEOUT_MS); the caller serves the last list read
 * instead. */
enum { PUB_TIMEOUT_MS = 500 };
static ursa_err read_published(server *s, FILE *f) {
    char e[256];
    rstore *r = rstore_new(s->a.redis, PUB_TIMEOUT_MS, e, sizeof e);
    if (!r) return URSA_ERR_UNAVAILABLE;
    rstore_set_retry_ms(r, 0);
    redisReply *rep = NULL;
    ursa_err re = registry_list(r, s->dataset, 1, 50, &rep);
    for (size_t i = 0; re == URSA_OK && i < rep->elements; i++) {
        redisReply *h = NULL;
        if (i) fprintf(f, ", ");
        fprintf(f, "{\"id\": ");
        util_json_str(f, rep->element[i]->str);
        static const char *const want[] = {"arch", "error_rate", "created_ms", NULL};
        if ((re = registry_fields(r, rep->element[i]->str, want, &h)) == URSA_OK &&
            h->elements == 3 && h->element[0]->type == REDIS_REPLY_STRING) {
            char *end;
            fprintf(f, ", \"arch\": ");
            util_json_str(f, h->element[0]->str);
            /* numbers only as numbers: the registry is input too */
            const char *er = h->element[1]->str, *cm = h->element[2]->str;
            double erv = er ? strtod(er, &end) : 0;
            if (er && !*end && end != er) fprintf(f, ", \"error_rate\": %.6g", erv);
            else fprintf(f, ", \"error_rate\": null");
            long long cmv = cm ? strtoll(cm, &end, 10) : 0;
            if (cm && !*end && end != cm) fprintf(f, ", \"created_ms\": %lld", cmv);
            else fprintf(f, ", \"created_ms\": null");
        }
        if (h) freeReplyObject(h);
        fprintf(f, "}");
    }
    if (rep) freeReplyObject(rep);
    rstore_destroy(r);
    return re;
}

/* "published": [...] from Redis ("published_age_s": 0), or when Redis does
 * not answer the last list read, with its age (null: none was read) and
 * "published_error". */
static void write_published(server *s, FILE *out) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ursa_err err = f ? read_published(s, f) : URSA_ERR_NOMEM;
    if (f && fclose(f)) err = URSA_ERR_NOMEM;
    int64_t now = util_mono_ms();
    pthread_mutex_lock(&s->pub_mu);
    if (!err) {
        free(s->pub);
        s->pub = buf, buf = NULL;
        s->pub_at = now;
    }
    fprintf(out, ", \"published\": [%s]", s->pub ? s->pub : "");
    if (!err)
        fprintf(out, ", \"published_age_s\": 0");
    else if (s->pub)
        fprintf(out, ", \"published_age_s\": %.0f, \"published_error\": \"Redis does not answer\"",
                (double)(now - s->pub_at) / 1000);
    else
        fprintf(out, ", \"published_age_s\": null, \"published_error\": \"Redis does not answer\"");
    pthread_mutex_unlock(&s->pub_mu);
    free(buf);
}

static void models_job(server *s, http_req *r) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        http_error(r, 503, "Retry-After: 1\r\n", "out of memory");
        return;
    }
    served *m = batcher_current(s->b);
    fprintf(f, "{\"serving\": ");
    if (m) {
        const nn_meta *mt = served_meta(m);
        fprintf(f, "{\"id\": ");
        util_json_str(f, served_id(m));
        fprintf(f, ", \"size\": %d, \"tta\": \"%s\", \"classes\": [", mt->size,
                nn_tta_name(served_tta(m)));
        char cn[32];
        for (int i = 0; i < served_nclass(m); i++) {
            if (i) fprintf(f, ", ");
            util_json_str(f, nn_class_name(mt, i, cn, sizeof cn));
        }
        fprintf(f, "]}");
    } else {
        fprintf(f, "null");
    }
    served_release(m);
    fprintf(f, ", \"dataset\": ");
    util_json_str(f, s->dataset);
    fprintf(f, ", \"pinned\": ");
    pthread_mutex_lock(&s->load_mu);
    if (s->pin[0]) util_json_str(f, s->pin);
    else fprintf(f, "null");
    pthread_mutex_unlock(&s->load_mu);
    if (s->have_stack) write_published(s, f);
    else fprintf(f, ", \"published\": []");
    fprintf(f, "}\n");
    if (fclose(f)) http_error(r, 503, "Retry-After: 1\r\n", "out of memory");
    else http_reply(r, 200, "application/json", NULL, buf, len);
    free(buf);
}

int h_models(void *ctx, http_req *r) {
    server *s = ctx;
    return s->have_stack ? defer_admin(s, r, models_job) : (models_job(s, r), 200);
}

/* ---- admin ---------------------------------------------------------------------- */

/* "Bearer TOKEN" against the token, in time that depends on the token's
 * length only, over the whole of both. */
static int authorized(const server *s, const char *h) {
    if (!s->token_len || !h || strncmp(h, "Bearer ", 7)) return 0;
    h += 7;
    size_t n = strlen(h);
    volatile unsigned diff = n != s->token_len;
    for (size_t i = 0; i < s->token_len; i++)
        diff |= (unsigned char)s->token[i] ^ (unsigned char)(i < n ? h[i] : 0);
    return diff == 0;
}

static void reload_job(server *s, http_req *r) {
    char err[512];
    if (models_reload(s, 1, err, sizeof err)) http_error(r, 503, "Retry-After: 5\r\n", "%s", err);
    else http_reply(r, 200, "application/json", NULL, "{\"reloaded\": true}\n", 19);
}

static void pin_job(server *s, http_req *r) {
    char id[160] = "", err[512], old[160];
    if (http_query(r, "model", id, sizeof id) < 0) id[0] = '\0'; /* none: follow the newest */
    pthread_mutex_lock(&s->load_mu);
    snprintf(old, sizeof old, "%s", s->pin);
    snprintf(s->pin, sizeof s->pin, "%s", id);
    pthread_mutex_unlock(&s->load_mu);
    if (models_reload(s, 0, err, sizeof err)) {
        pthread_mutex_lock(&s->load_mu);
        snprintf(s->pin, sizeof s->pin, "%s", old);
        pthread_mutex_unlock(&s->load_mu);
        http_error(r, 404, NULL, "%s", err);
        return;
    }
    if (id[0]) http_reply(r, 200, "application/json", NULL, "{\"pinned\": true}\n", 17);
    else http_reply(r, 200, "application/json", NULL, "{\"pinned\": false}\n", 18);
}

int h_admin(void *ctx, http_req *r) {
    server *s = ctx;
    if (!authorized(s, http_header(r, "Authorization")))
        return http_error(r, 403, NULL, "%s",
                          s->token_len ? "admin calls need Authorization: Bearer TOKEN"
                                       : "admin calls are off (no inference.admin-token-file, "
                                         "no URSA_INFERENCE_ADMIN_TOKEN)");
    const char *p = http_path(r);
    if (!strcmp(p, "/v1/admin/reload")) return defer_admin(s, r, reload_job);
    if (!strcmp(p, "/v1/admin/pin")) {
        if (*cfg_str(s->c, "inference.model"))
            return http_error(r, 400, NULL, "this server serves a local file; nothing to pin");
        char id[160];
        if (http_query(r, "model", id, sizeof id) == -2)
            return http_error(r, 400, NULL, "the model id is longer than %zu bytes", sizeof id - 1);
        return defer_admin(s, r, pin_job);
    }
    return http_error(r, 404, NULL, "admin calls: /v1/admin/reload, /v1/admin/pin?model=ID");
}

int models_read_token(server *s, char *err, size_t n) {
    const char *file = cfg_str(s->c, "inference.admin-token-file");
    char *data = NULL;
    size_t len = 0;
    if (*file) {
        if (util_read_file(file, 4096, &data, &len) != URSA_OK) {
            snprintf(err, n, "cannot read the admin token file %s (at most 4 KiB)", file);
            return -1;
        }
    } else {
        const char *e = getenv("URSA_INFERENCE_ADMIN_TOKEN");
        if (e) data = strdup(e), len = data ? strlen(data) : 0;
        /* copied: neither in /proc/PID/environ nor in children's */
        util_env_scrub("URSA_INFERENCE_ADMIN_TOKEN");
    }
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' '))
        len--;
    int rc = 0;
    if (len >= sizeof s->token) {
        snprintf(err, n, "the admin token is longer than %zu bytes", sizeof s->token - 1);
        rc = -1;
    } else {
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)data[i] < 0x21 || (unsigned char)data[i] > 0x7e) {
                snprintf(err, n, "the admin token must be printable ASCII without spaces");
                rc = -1;
                break;
            }
    }
    if (!rc) {
        if (len) memcpy(s->token, data, len);
        s->token[len] = '\0';
        s->token_len = len;
    }
    if (data) explicit_bzero(data, len);
    free(data);
    return rc;
}

/* ---- following ursa.models.published ---------------------------------------------- */

ursa_err on_published(void *opaque, const kq_msg *msg, kq_job *job, char *reason, size_t rn) {
    (void)job;
    server *s = opaque;
    Ursa__ModelPublished *p = ursa__model_published__unpack(NULL, msg->len, msg->value);
    if (!p) {
        snprintf(reason, rn, "not a ModelPublished protobuf");
        return URSA_ERR_PERMANENT;
    }
    int ours = !*s->dataset || (p->dataset && !strcmp(p->dataset, s->dataset));
    char id[160];
    snprintf(id, sizeof id, "%s", p->model_id ? p->model_id : "");
    ursa__model_published__free_unpacked(p, NULL);
    if (!ours) return URSA_OK;
    pthread_mutex_lock(&s->load_mu);
    int pinned = s->pin[0] != 0;
    pthread_mutex_unlock(&s->load_mu);
    char q[200];
    if (pinned) {
        ULOG_INFO("event=model_announced model=%s note=\"pinned: not loaded\"",
                  ulog_quote(q, sizeof q, id));
        return URSA_OK;
    }
    char err[512];
    if (models_reload(s, 0, err, sizeof err)) { /* the newest: this one, or one newer still */
        char qe[600];
        ULOG_WARN("event=reload_failed model=%s err=%s", ulog_quote(q, sizeof q, id),
                  ulog_quote(qe, sizeof qe, err));
        snprintf(reason, rn, "%s", err);
        return URSA_ERR_TRANSIENT;
    }
    return URSA_OK;
}
