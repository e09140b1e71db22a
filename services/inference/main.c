/* ursa-inference: classification over HTTP (civetweb) and Kafka, on CPU.
 *
 *   POST /v1/classify[?top=K]       the image as the body, or the multipart field "file"
 *   GET  /v1/classify-url?url=U     fetched with the crawler's SSRF guard, cap and timeout
 *   GET  /v1/models                 what is served, and the dataset's published models
 *   GET  /healthz, /readyz          alive; ready only with a model loaded
 *   GET  /metrics                   Prometheus text
 *   GET  /                          the web page
 *   POST /v1/admin/reload           load the newest model again   (admin token)
 *   POST /v1/admin/pin?model=ID     serve this model; empty: follow the newest again
 *
 * The answer: {"model": ID, "predictions": [[label, prob], ...]} sorted by
 * probability. Preprocessing comes from the model's metadata and is the
 * validation transform of training (common/nn/data.h), so ursa predict,
 * this server and onnxruntime give the same probabilities.
 *
 * Models: --inference.model FILE serves a local file and needs no other
 * service; otherwise the newest model of --inference.dataset (or the pinned
 * one) comes from the blob store, or from Redis where the trainer caches it,
 * and a thread following ursa.models.published loads newer ones in the
 * background and swaps them in (batcher.h). Bulk: ursa.classify.requests
 * in, ursa.classify.results out, at least once and idempotent by request
 * id (the first result is kept in Redis and sent again for a replay). */
#include <ctype.h>
#include <libgen.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "batcher.h"
#include "blas.h"
#include "blob.h"
#include "data.h"
#include "dataset.h"
#include "fetch.h"
#include "http.h"
#include "jobs.h"
#include "kq.h"
#include "log.h"
#include "msg.h"
#include "page.h"
#include "rstore.h"
#include "service.h"
#include "statedir.h"
#include "topics.h"
#include "util.h"

static const char usage[] =
    "usage: ursa-inference [settings]\n"
    "       ursa-inference --model FILE.onnx --port P     (its settings without \"inference.\")\n"
    "Serves image classification over HTTP (POST /v1/classify, GET /v1/classify-url, a web\n"
    "page on /) and for ursa.classify.requests, with dynamic batching. With\n"
    "inference.model it serves that file alone, no other service needed; with\n"
    "inference.dataset it serves the dataset's newest published model and swaps in each\n"
    "new one announced on ursa.models.published. Stops cleanly on SIGTERM.\n\n";

static const cfg_def inference_defs[] = {
    {"inference.port", CFG_INT, "8080", 0, 65535, "HTTP port (0: any free port)"},
    {"inference.bind", CFG_STR, "0.0.0.0", 1, 0, "address to listen on"},
    {"inference.port-file", CFG_STR, "", 1, 0,
     "write the port listened on to this file (default: run/inference.port in the state "
     "dir, where `ursa classify` and the tests look)"},
    {"inference.model", CFG_STR, "", 1, 0, "serve this ONNX file (no Kafka or Redis needed)"},
    {"inference.dataset", CFG_STR, "", 1, 0,
     "serve this dataset's newest published model (default: the newest of any dataset)"},
    {"inference.pin", CFG_STR, "", 1, 0, "serve this published model id, not the newest"},
    {"inference.max-batch", CFG_INT, "16", 1, 1024, "largest batch run at once"},
    {"inference.max-delay-us", CFG_INT, "2000", 0, 1e6,
     "how long the first request of a batch waits for more"},
    {"inference.max-queue", CFG_INT, "256", 1, 1e6,
     "requests waiting for the model; beyond it: 503 with Retry-After"},
    {"inference.instances", CFG_INT, "1", 1, 64,
     "model instances running batches side by side, each on cores/instances engine threads: "
     "1 gives the lowest latency; one a core the most throughput for small models"},
    {"inference.http-threads", CFG_INT, "128", 1, 4096,
     "HTTP threads, one per open connection: they parse, decode and wait; the model runs on "
     "the instances' batching threads, so these never multiply the math threads"},
    {"inference.max-body", CFG_INT, "20000000", 1024, 1e9, "largest image accepted (bytes)"},
    {"inference.admin-token", CFG_STR, "", 1, 0,
     "token for /v1/admin/* (Authorization: Bearer TOKEN); empty: admin calls refused"},
    {"inference.bulk", CFG_BOOL, "true", 1, 0,
     "with a dataset: also serve ursa.classify.requests"},
    {NULL, 0, NULL, 0, 0, NULL}};

/* ---- state ---------------------------------------------------------------------- */

enum { R_CLASSIFY, R_CLASSIFY_URL, R_MODELS, R_HEALTH, R_READY, R_METRICS, R_PAGE, R_ADMIN,
       R_OTHER, R__N };
static const char *const route_names[R__N] = {"classify", "classify_url", "models", "healthz",
                                              "readyz", "metrics", "page", "admin", "other"};
static const int codes[] = {200, 400, 403, 404, 405, 413, 415, 422, 429, 500, 503};
#define NCODES (int)(sizeof codes / sizeof codes[0])
static const double lat_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
#define NLAT (int)(sizeof lat_le / sizeof lat_le[0])

typedef struct {
    const cfg *c;
    batcher *b;
    service_addrs a;
    int have_stack;       /* Redis, Kafka and blobs are configured */
    const char *dataset;  /* followed dataset, or "" */
    char pin[160];        /* pinned model id, or "" */
    long long cur_created; /* created_ms of the served model (registry) */
    pthread_mutex_t load_mu; /* one load at a time; guards pin and cur_created */
    blob_store *bs;
    fetch_opts fo;
    size_t max_body;
    const char *token;
    /* metrics */
    pthread_mutex_t mmu;
    uint64_t req[R__N][NCODES];
    uint64_t lat[NLAT + 1];
    double lat_sum;
    uint64_t lat_n;
    atomic_ullong reloads, reload_failures;
} server;

static volatile sig_atomic_t run = 1;

static void count(server *s, int route, int status, double secs) {
    pthread_mutex_lock(&s->mmu);
    for (int i = 0; i < NCODES; i++)
        if (codes[i] == status) s->req[route][i]++;
    if (route == R_CLASSIFY || route == R_CLASSIFY_URL) {
        int k = 0;
        while (k < NLAT && secs > lat_le[k]) k++;
        s->lat[k]++;
        s->lat_sum += secs;
        s->lat_n++;
    }
    pthread_mutex_unlock(&s->mmu);
}

/* ---- loading models ----------------------------------------------------------------- */

static served *load_bytes(server *s, const uint8_t *d, size_t len, const char *id, char *err,
                          size_t n) {
    return served_load(d, len, id, (int)cfg_int(s->c, "inference.max-batch"),
                       batcher_instances(s->b), err, n);
}

/* A registered model from the blob store, or Redis's cached copy. */
static served *load_registered(server *s, rstore *r, const char *id, long long *created,
                               char *err, size_t n) {
    redisReply *rep = NULL;
    if (rstore_cmd(r, &rep, "HMGET ursa:model:%s blob created_ms", id) != URSA_OK) {
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
        if (rstore_cmd(r, &rep, "GET ursa:model:%s:onnx", id) == URSA_OK &&
            rep->type == REDIS_REPLY_STRING) {
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

/* Loads what should be served now (the file, the pin, or the dataset's
 * newest) if it is not what is served; force loads it again anyway. */
static int reload(server *s, int force, char *err, size_t n) {
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
            ursa_err e = *s->dataset
                             ? rstore_cmd(r, &rep, "ZREVRANGE ursa:ds:%s:models 0 0", s->dataset)
                             : rstore_cmd(r, &rep, "ZREVRANGE ursa:models 0 0");
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
        ULOG_INFO("event=model_loaded model=%s classes=%d size=%d previous=%s", served_id(m),
                  served_nclass(m), served_meta(m)->size,
                  ulog_quote(q, sizeof q, cur ? served_id(cur) : "none"));
        s->cur_created = created;
        batcher_swap(s->b, m);
        atomic_fetch_add(&s->reloads, 1);
        rc = 0;
    }
out:
    if (rc) atomic_fetch_add(&s->reload_failures, 1);
    served_release(cur);
    rstore_destroy(r);
    pthread_mutex_unlock(&s->load_mu);
    return rc;
}

/* ---- HTTP helpers ------------------------------------------------------------------- */

#define json_str util_json_str

/* The part named "file" of a multipart/form-data body, in place. */
static int multipart_file(const char *ctype, const char *body, size_t len, const char **data,
                          size_t *dlen) {
    const char *bp = strstr(ctype, "boundary=");
    if (!bp) return -1;
    bp += 9;
    char boundary[200];
    size_t bl = 0;
    int quoted = *bp == '"';
    if (quoted) bp++;
    boundary[bl++] = '-', boundary[bl++] = '-';
    while (*bp && bl < sizeof boundary - 1 && (quoted ? *bp != '"' : (*bp != ';' && *bp != ' ')))
        boundary[bl++] = *bp++;
    boundary[bl] = '\0';
    const char *p = body, *end = body + len;
    while ((p = memmem(p, (size_t)(end - p), boundary, bl))) {
        p += bl;
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') break; /* the closing boundary */
        const char *hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!hend) break;
        size_t hl = (size_t)(hend - p);
        char *hdr = strndup(p, hl);
        int is_file = hdr && (strstr(hdr, "name=\"file\"") != NULL);
        free(hdr);
        const char *start = hend + 4;
        const char *next = memmem(start, (size_t)(end - start), boundary, bl);
        if (!next) break;
        if (is_file) {
            *data = start;
            *dlen = (size_t)(next - start) >= 2 ? (size_t)(next - start) - 2 : 0; /* CRLF */
            return 0;
        }
        p = next;
    }
    return -1;
}

/* What classifying one image gave: the model (a reference), the classes
 * ranked by probability, cut to top; or, for a status other than 200, why. */
typedef struct {
    served *m;
    float *probs;
    int *order, k;
    char why[512];
} verdict;

static void verdict_free(verdict *v) {
    free(v->probs);
    free(v->order);
    served_release(v->m);
    memset(v, 0, sizeof *v);
}

/* Decodes, preprocesses and classifies image bytes with the current model;
 * returns the HTTP status (200, or 415/422 for the image, 503 for us). */
static int classify_bytes(server *s, const uint8_t *d, size_t len, int top, verdict *v) {
    memset(v, 0, sizeof *v);
    if (!(v->m = batcher_current(s->b))) {
        snprintf(v->why, sizeof v->why, "no model loaded yet");
        return 503;
    }
    const nn_meta *mt = served_meta(v->m);
    img_rgb im;
    img_reject rej;
    batcher_arriving(s->b, 1);
    ursa_err e = nn_decode_image(d, len, mt, &im, &rej);
    if (e) {
        batcher_arriving(s->b, -1);
        if (e == URSA_ERR_NOMEM) {
            snprintf(v->why, sizeof v->why, "out of memory decoding");
            return 503;
        }
        snprintf(v->why, sizeof v->why, "not a decodable image: %s (%s)", rej.reason, rej.detail);
        return !strcmp(rej.reason, "not_an_image") || !strcmp(rej.reason, "unsupported_format") ||
                       !strcmp(rej.reason, "empty")
                   ? 415
                   : 422;
    }
    int c = served_nclass(v->m), in_c = served_in_c(v->m), status = 200;
    float *x = malloc(sizeof(float) * (size_t)in_c * mt->size * mt->size);
    v->probs = malloc(sizeof(float) * (size_t)c);
    v->order = malloc(sizeof(int) * (size_t)c);
    if (!x || !v->probs || !v->order) {
        batcher_arriving(s->b, -1);
        snprintf(v->why, sizeof v->why, "out of memory");
        status = 503;
    } else {
        nn_preprocess(&im, mt, in_c, x);
        e = batcher_run(s->b, v->m, x, v->probs);
        if (e) {
            snprintf(v->why, sizeof v->why, "%s",
                     e == URSA_ERR_UNAVAILABLE ? "busy: the queue is full" : ursa_err2str(e));
            status = 503;
        } else {
            nn_rank(v->probs, c, v->order);
            v->k = top <= 0 || top > c ? c : top;
        }
    }
    img_free(&im);
    free(x);
    return status;
}

/* The answer as JSON: {"model": ..., "predictions": [[label, prob], ...]}. */
static char *verdict_json(const verdict *v, size_t *len) {
    char *json = NULL, buf[32];
    FILE *f = open_memstream(&json, len);
    if (!f) return NULL;
    fprintf(f, "{\"model\": ");
    json_str(f, served_id(v->m));
    fprintf(f, ", \"predictions\": [");
    for (int j = 0; j < v->k; j++) {
        float p = v->probs[v->order[j]];
        fprintf(f, "%s[", j ? ", " : "");
        json_str(f, nn_class_name(served_meta(v->m), v->order[j], buf, sizeof buf));
        if (isfinite(p)) fprintf(f, ", %.6g]", p);
        else fprintf(f, ", null]");
    }
    fprintf(f, "]}\n");
    if (fclose(f)) {
        free(json);
        return NULL;
    }
    return json;
}

static int query_int(const http_req *r, const char *name, int def) {
    char v[32];
    if (http_query(r, name, v, sizeof v) < 0) return def;
    char *end;
    long n = strtol(v, &end, 10);
    return *end || n < 0 || n > 100000 ? -1 : (int)n;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static int answer_classified(server *s, http_req *conn, int route, double t0,
                             const uint8_t *d, size_t len, int top) {
    verdict v;
    size_t jl = 0;
    int st = classify_bytes(s, d, len, top, &v);
    char *json = st == 200 ? verdict_json(&v, &jl) : NULL;
    if (st == 200 && !json) {
        st = 503;
        snprintf(v.why, sizeof v.why, "out of memory");
    }
    if (st == 200) http_reply(conn, 200, "application/json", NULL, json, jl);
    else http_error(conn, st, st == 503 ? "Retry-After: 1\r\n" : NULL, "%s", v.why);
    free(json);
    verdict_free(&v);
    count(s, route, st, now_s() - t0);
    return st;
}

/* ---- handlers ------------------------------------------------------------------------- */

static int h_classify(server *s, http_req *conn) {
    double t0 = now_s();
    const http_req *ri = conn;
    int st;
    if (strcmp(ri->method, "POST")) {
        st = http_error(conn, 405, "Allow: POST\r\n", "POST the image (raw body, or multipart "
                                                       "field \"file\")");
        count(s, R_CLASSIFY, st, 0);
        return st;
    }
    int top = query_int(ri, "top", 0);
    if (top < 0) {
        count(s, R_CLASSIFY, http_error(conn, 400, NULL, "top must be a number >= 0"), 0);
        return 400;
    }
    const char *body = conn->body, *ctype = conn->content_type;
    size_t len = conn->body_len;
    const char *d = body;
    size_t dl = len;
    if (!strncasecmp(ctype, "multipart/form-data", 19) &&
        multipart_file(ctype, body, len, &d, &dl)) {
        count(s, R_CLASSIFY, http_error(conn, 400, NULL, "multipart body without a \"file\" part"), 0);
        return 400;
    }
    if (!dl) {
        count(s, R_CLASSIFY, http_error(conn, 400, NULL, "empty body: send the image"), 0);
        return 400;
    }
    return answer_classified(s, conn, R_CLASSIFY, t0, (const uint8_t *)d, dl, top);
}

typedef struct {
    int done;
    int status;
    char why[512];
    uint8_t *data;
    size_t len;
} fetched;

static void fetch_done(void *opaque, const fetch_result *r) {
    fetched *f = opaque;
    f->done = 1;
    if (!r->ok) {
        f->status = !strcmp(r->reason, "too_large") ? 413 : 422;
        snprintf(f->why, sizeof f->why, "cannot fetch the URL: %s (%s)", r->reason,
                 r->detail ? r->detail : "");
        return;
    }
    f->data = malloc(r->len ? r->len : 1);
    if (f->data) memcpy(f->data, r->body, r->len), f->len = r->len;
    f->status = f->data ? 200 : 503;
}

/* Downloads one URL under the SSRF guard, the timeouts and the size cap;
 * f->status 200 with f->data (the caller frees) or the reason. */
static void fetch_one(server *s, const char *url, fetched *f) {
    char err[256];
    fetch_opts fo = s->fo;
    fo.max_bytes = s->max_body;
    memset(f, 0, sizeof *f);
    fetch_ctx *fc = fetch_new(&fo, err, sizeof err);
    if (!fc || fetch_start(fc, url, fetch_done, f) != URSA_OK) {
        f->status = 503;
        snprintf(f->why, sizeof f->why, "cannot start the download");
    } else {
        while (!f->done) fetch_run(fc, 100);
    }
    fetch_destroy(fc);
}

static int h_classify_url(server *s, http_req *conn) {
    double t0 = now_s();
    char url[4096];
    int top = query_int(conn, "top", 0), st;
    if (http_query(conn, "url", url, sizeof url) <= 0 || top < 0) {
        st = http_error(conn, 400, NULL, "give ?url=... (http or https), and top=K >= 0");
        count(s, R_CLASSIFY_URL, st, 0);
        return st;
    }
    if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) {
        st = http_error(conn, 400, NULL, "not an http:// or https:// URL");
        count(s, R_CLASSIFY_URL, st, 0);
        return st;
    }
    fetched f;
    fetch_one(s, url, &f);
    if (f.status != 200) {
        st = http_error(conn, f.status, f.status == 503 ? "Retry-After: 1\r\n" : NULL, "%s", f.why);
        count(s, R_CLASSIFY_URL, st, now_s() - t0);
        return st;
    }
    st = answer_classified(s, conn, R_CLASSIFY_URL, t0, f.data, f.len, top);
    free(f.data);
    return st;
}

/* a 200 response body written with stdio, then sent whole */
typedef struct {
    FILE *f;
    char *buf;
    size_t len;
} body;

static FILE *body_open(body *b) {
    b->buf = NULL;
    b->len = 0;
    return b->f = open_memstream(&b->buf, &b->len);
}

static int body_send(server *s, http_req *conn, int route, const char *ctype, body *b) {
    fclose(b->f);
    http_reply(conn, 200, ctype, NULL, b->buf, b->len);
    free(b->buf);
    count(s, route, 200, 0);
    return 200;
}

static int h_models(server *s, http_req *conn) {
    body b;
    FILE *f = body_open(&b);
    if (!f) return http_reply(conn, 500, "text/plain", NULL, "", 0);
    served *m = batcher_current(s->b);
    fprintf(f, "{\"serving\": ");
    if (m) {
        const nn_meta *mt = served_meta(m);
        fprintf(f, "{\"id\": ");
        json_str(f, served_id(m));
        fprintf(f, ", \"size\": %d, \"classes\": [", mt->size);
        char cn[32];
        for (int i = 0; i < served_nclass(m); i++) {
            if (i) fprintf(f, ", ");
            json_str(f, nn_class_name(mt, i, cn, sizeof cn));
        }
        fprintf(f, "]}");
    } else {
        fprintf(f, "null");
    }
    fprintf(f, ", \"dataset\": ");
    json_str(f, s->dataset);
    fprintf(f, ", \"pinned\": ");
    pthread_mutex_lock(&s->load_mu);
    if (s->pin[0]) json_str(f, s->pin);
    else fprintf(f, "null");
    pthread_mutex_unlock(&s->load_mu);
    fprintf(f, ", \"published\": [");
    if (s->have_stack) {
        char e[256];
        rstore *r = rstore_new(s->a.redis, 2000, e, sizeof e);
        redisReply *rep = NULL;
        ursa_err re = URSA_ERR_UNAVAILABLE;
        if (r)
            re = *s->dataset ? rstore_cmd(r, &rep, "ZREVRANGE ursa:ds:%s:models 0 49", s->dataset)
                             : rstore_cmd(r, &rep, "ZREVRANGE ursa:models 0 49");
        if (re == URSA_OK) {
            for (size_t i = 0; i < rep->elements; i++) {
                redisReply *h = NULL;
                if (i) fprintf(f, ", ");
                fprintf(f, "{\"id\": ");
                json_str(f, rep->element[i]->str);
                if (rstore_cmd(r, &h, "HMGET ursa:model:%s arch error_rate created_ms",
                               rep->element[i]->str) == URSA_OK && h->elements == 3 &&
                    h->element[0]->type == REDIS_REPLY_STRING) {
                    fprintf(f, ", \"arch\": ");
                    json_str(f, h->element[0]->str);
                    fprintf(f, ", \"error_rate\": %s, \"created_ms\": %s",
                            h->element[1]->str ? h->element[1]->str : "null",
                            h->element[2]->str ? h->element[2]->str : "null");
                }
                if (h) freeReplyObject(h);
                fprintf(f, "}");
            }
        }
        if (rep) freeReplyObject(rep);
        rstore_destroy(r);
    }
    fprintf(f, "]}\n");
    served_release(m);
    return body_send(s, conn, R_MODELS, "application/json", &b);
}

static int h_health(server *s, http_req *conn) {
    count(s, R_HEALTH, 200, 0);
    return http_reply(conn, 200, "text/plain", NULL, "ok\n", 3);
}

static int h_ready(server *s, http_req *conn) {
    served *m = batcher_current(s->b);
    int st = m ? http_reply(conn, 200, "text/plain", NULL, "ready\n", 6)
               : http_reply(conn, 503, "text/plain", "Retry-After: 1\r\n", "no model loaded\n", 16);
    served_release(m);
    count(s, R_READY, st, 0);
    return st;
}

static int h_metrics(server *s, http_req *conn) {
    body b;
    FILE *f = body_open(&b);
    if (!f) return http_reply(conn, 500, "text/plain", NULL, "", 0);
    batcher_stats bst;
    batcher_get_stats(s->b, &bst);
    pthread_mutex_lock(&s->mmu);
    fprintf(f, "# HELP ursa_inference_requests_total HTTP requests by route and status.\n"
               "# TYPE ursa_inference_requests_total counter\n");
    for (int r = 0; r < R__N; r++)
        for (int i = 0; i < NCODES; i++)
            if (s->req[r][i])
                fprintf(f, "ursa_inference_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                        route_names[r], codes[i], (unsigned long long)s->req[r][i]);
    fprintf(f, "# HELP ursa_inference_request_seconds Classification latency.\n"
               "# TYPE ursa_inference_request_seconds histogram\n");
    uint64_t cum = 0;
    for (int k = 0; k < NLAT; k++) {
        cum += s->lat[k];
        fprintf(f, "ursa_inference_request_seconds_bucket{le=\"%g\"} %llu\n", lat_le[k],
                (unsigned long long)cum);
    }
    cum += s->lat[NLAT];
    fprintf(f, "ursa_inference_request_seconds_bucket{le=\"+Inf\"} %llu\n"
               "ursa_inference_request_seconds_sum %.6f\n"
               "ursa_inference_request_seconds_count %llu\n",
            (unsigned long long)cum, s->lat_sum, (unsigned long long)s->lat_n);
    pthread_mutex_unlock(&s->mmu);
    static const char *const ble[] = {"1", "2", "4", "8", "16", "32", "64", "+Inf"};
    fprintf(f, "# HELP ursa_inference_batch_size Images per forward pass.\n"
               "# TYPE ursa_inference_batch_size histogram\n");
    cum = 0;
    for (int k = 0; k < 8; k++) {
        cum += bst.batch_hist[k];
        fprintf(f, "ursa_inference_batch_size_bucket{le=\"%s\"} %llu\n", ble[k],
                (unsigned long long)cum);
    }
    fprintf(f, "ursa_inference_batch_size_sum %llu\nursa_inference_batch_size_count %llu\n",
            (unsigned long long)bst.images, (unsigned long long)bst.batches);
    fprintf(f, "# HELP ursa_inference_queue_depth Requests waiting for the model.\n"
               "# TYPE ursa_inference_queue_depth gauge\nursa_inference_queue_depth %d\n"
               "# HELP ursa_inference_rejected_total Requests refused with a full queue.\n"
               "# TYPE ursa_inference_rejected_total counter\nursa_inference_rejected_total %llu\n",
            bst.queued, (unsigned long long)bst.rejected);
    served *m = batcher_current(s->b);
    fprintf(f, "# HELP ursa_inference_model The model served (value 1).\n"
               "# TYPE ursa_inference_model gauge\n");
    if (m) {
        fprintf(f, "ursa_inference_model{id=");
        json_str(f, served_id(m));
        fprintf(f, "} 1\n");
    }
    served_release(m);
    fprintf(f, "# HELP ursa_inference_reloads_total Models loaded and swapped in.\n"
               "# TYPE ursa_inference_reloads_total counter\nursa_inference_reloads_total %llu\n"
               "# HELP ursa_inference_reload_failures_total Loads that failed.\n"
               "# TYPE ursa_inference_reload_failures_total counter\n"
               "ursa_inference_reload_failures_total %llu\n",
            (unsigned long long)atomic_load(&s->reloads),
            (unsigned long long)atomic_load(&s->reload_failures));
    return body_send(s, conn, R_METRICS, "text/plain; version=0.0.4", &b);
}

static int h_page(server *cb, http_req *conn) {
    if (strcmp(conn->path, "/") && strcmp(conn->path, "/index.html")) {
        count(cb, R_OTHER, 404, 0);
        return http_error(conn, 404, NULL, "no such page: see / and /v1/classify");
    }
    count(cb, R_PAGE, 200, 0);
    return http_reply(conn, 200, "text/html; charset=utf-8", NULL, page_html, sizeof page_html - 1);
}

static int authorized(server *s, http_req *conn) {
    const char *h = conn->authorization;
    return *s->token && !strncmp(h, "Bearer ", 7) && !strcmp(h + 7, s->token);
}

static int h_admin(server *s, http_req *conn) {
    const http_req *ri = conn;
    int st;
    char err[512];
    if (!authorized(s, conn)) {
        st = http_error(conn, 403, NULL, *s->token ? "admin calls need Authorization: Bearer "
                                                      "TOKEN"
                                                    : "admin calls are off (no "
                                                      "inference.admin-token)");
    } else if (strcmp(ri->method, "POST")) {
        st = http_error(conn, 405, "Allow: POST\r\n", "admin calls are POSTs");
    } else if (!strcmp(ri->path, "/v1/admin/reload")) {
        st = reload(s, 1, err, sizeof err) ? http_error(conn, 503, "Retry-After: 5\r\n", "%s", err)
                                           : http_reply(conn, 200, "application/json", NULL,
                                                   "{\"reloaded\": true}\n", 19);
    } else if (!strcmp(ri->path, "/v1/admin/pin")) {
        char id[160] = "";
        http_query(conn, "model", id, sizeof id);
        if (*cfg_str(s->c, "inference.model")) {
            st = http_error(conn, 400, NULL, "this server serves a local file; nothing to pin");
        } else {
            pthread_mutex_lock(&s->load_mu);
            char old[160];
            snprintf(old, sizeof old, "%s", s->pin);
            snprintf(s->pin, sizeof s->pin, "%s", id);
            pthread_mutex_unlock(&s->load_mu);
            if (reload(s, 0, err, sizeof err)) {
                pthread_mutex_lock(&s->load_mu);
                snprintf(s->pin, sizeof s->pin, "%s", old);
                pthread_mutex_unlock(&s->load_mu);
                st = http_error(conn, 404, NULL, "%s", err);
            } else {
                st = http_reply(conn, 200, "application/json", NULL,
                           id[0] ? "{\"pinned\": true}\n" : "{\"pinned\": false}\n",
                           id[0] ? 17 : 18);
            }
        }
    } else {
        st = http_error(conn, 404, NULL, "admin calls: /v1/admin/reload, /v1/admin/pin?model=ID");
    }
    count(s, R_ADMIN, st, 0);
    return st;
}

static int route(void *ctx, http_req *r) {
    server *s = ctx;
    const char *p = r->path;
    if (!strcmp(p, "/v1/classify")) return h_classify(s, r);
    if (!strcmp(p, "/v1/classify-url")) return h_classify_url(s, r);
    if (!strcmp(p, "/v1/models")) return h_models(s, r);
    if (!strncmp(p, "/v1/admin/", 10)) return h_admin(s, r);
    if (!strcmp(p, "/healthz")) return h_health(s, r);
    if (!strcmp(p, "/readyz")) return h_ready(s, r);
    if (!strcmp(p, "/metrics")) return h_metrics(s, r);
    return h_page(s, r);
}

/* ---- Kafka: new models, bulk requests --------------------------------------------------- */

static ursa_err on_published(void *opaque, const kq_msg *msg, kq_job *job, char *reason,
                             size_t rn) {
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
    if (pinned) {
        ULOG_INFO("event=model_announced model=%s note=\"pinned: not loaded\"", id);
        return URSA_OK;
    }
    char err[512];
    if (reload(s, 0, err, sizeof err)) { /* the newest: this one, or one newer still */
        ULOG_WARN("event=reload_failed model=%s err=\"%s\"", id, err);
        snprintf(reason, rn, "%s", err);
        return URSA_ERR_TRANSIENT;
    }
    return URSA_OK;
}

typedef struct {
    server *s;
    kq_consumer *kc;
    volatile sig_atomic_t run;
    pthread_t th;
} follower;

static void *follow_loop(void *arg) {
    follower *fl = arg;
    kq_consumer_run(fl->kc, &fl->run);
    return NULL;
}

/* Bulk: one ClassifyRequest; the result is kept in Redis by request id, so
 * a replay sends the same answer again. */
typedef struct {
    server *s;
    rstore *r;
} bulk;

static ursa_err on_request(void *opaque, const kq_msg *msg, kq_job *job, char *reason, size_t rn) {
    bulk *bk = opaque;
    server *s = bk->s;
    Ursa__ClassifyRequest *q = ursa__classify_request__unpack(NULL, msg->len, msg->value);
    if (!q) {
        snprintf(reason, rn, "not a ClassifyRequest protobuf");
        return URSA_ERR_PERMANENT;
    }
    ursa_err ret = URSA_OK;
    if (!job_id_valid(q->request_id) ||
        (q->dataset[0] && *s->dataset && strcmp(q->dataset, s->dataset))) {
        snprintf(reason, rn, "bad request id, or dataset %s is not served here", q->dataset);
        ursa__classify_request__free_unpacked(q, NULL);
        return URSA_ERR_PERMANENT;
    }
    redisReply *rep = NULL;
    if (rstore_cmd(bk->r, &rep, "GET ursa:classify:%s", q->request_id) != URSA_OK) {
        snprintf(reason, rn, "Redis: %s", rstore_last_error(bk->r));
        ursa__classify_request__free_unpacked(q, NULL);
        return URSA_ERR_UNAVAILABLE;
    }
    if (rep->type == REDIS_REPLY_STRING) { /* answered before: the same answer again */
        ret = kq_job_produce(job, TOPIC_CLASSIFY_RESULTS, q->request_id, strlen(q->request_id),
                             rep->str, rep->len);
        freeReplyObject(rep);
        ursa__classify_request__free_unpacked(q, NULL);
        return ret;
    }
    freeReplyObject(rep);
    /* the image */
    uint8_t *data = NULL;
    size_t len = 0;
    char why[512] = "";
    if (q->blob[0]) {
        char *b = NULL;
        ursa_err e = blob_key_valid(q->blob) ? blob_get(s->bs, q->blob, s->max_body, &b, &len)
                                             : URSA_ERR_INVALID;
        if (e) snprintf(why, sizeof why, "blob %.12s: %s", q->blob, ursa_err2str(e));
        data = (uint8_t *)b;
    } else if (q->url[0]) {
        fetched f;
        fetch_one(s, q->url, &f);
        data = f.data;
        len = f.len;
        if (!data) snprintf(why, sizeof why, "%s", f.why);
    } else {
        snprintf(why, sizeof why, "the request has neither url nor blob");
    }
    verdict v;
    memset(&v, 0, sizeof v);
    int st = 422;
    if (data) st = classify_bytes(s, data, len, (int)q->top_k, &v);
    else snprintf(v.why, sizeof v.why, "%s", why);
    free(data);
    if (st == 503) { /* no model, or busy: not the request's fault */
        snprintf(reason, rn, "%s", v.why);
        verdict_free(&v);
        ursa__classify_request__free_unpacked(q, NULL);
        return URSA_ERR_UNAVAILABLE;
    }
    Ursa__Header h;
    char hid[33];
    msg_header_init(&h, hid, s->dataset, NULL);
    Ursa__ClassifyResult res = URSA__CLASSIFY_RESULT__INIT;
    res.header = &h;
    res.request_id = q->request_id;
    res.model_id = v.m ? (char *)served_id(v.m) : "";
    res.error = st == 200 ? "" : v.why;
    Ursa__Prediction *preds = calloc((size_t)v.k + 1, sizeof *preds);
    Ursa__Prediction **pp = calloc((size_t)v.k + 1, sizeof *pp);
    char (*labels)[32] = calloc((size_t)v.k + 1, 32);
    if (preds && pp && labels) {
        for (int k = 0; k < v.k; k++) {
            ursa__prediction__init(&preds[k]);
            preds[k].label = (char *)nn_class_name(served_meta(v.m), v.order[k], labels[k], 32);
            preds[k].prob = v.probs[v.order[k]];
            pp[k] = &preds[k];
        }
        res.n_predictions = (size_t)v.k;
        res.predictions = pp;
    } else {
        ret = URSA_ERR_TRANSIENT;
        snprintf(reason, rn, "out of memory");
    }
    void *buf = NULL;
    size_t blen = 0;
    if (ret == URSA_OK) ret = msg_pack(&res.base, &buf, &blen);
    if (ret == URSA_OK &&
        rstore_cmd(bk->r, NULL, "SET ursa:classify:%s %b NX EX 604800", q->request_id, buf, blen) !=
            URSA_OK) {
        snprintf(reason, rn, "Redis: %s", rstore_last_error(bk->r));
        ret = URSA_ERR_UNAVAILABLE;
    }
    if (ret == URSA_OK) { /* the stored answer wins a race with another instance */
        redisReply *again = NULL;
        if (rstore_cmd(bk->r, &again, "GET ursa:classify:%s", q->request_id) == URSA_OK &&
            again->type == REDIS_REPLY_STRING)
            ret = kq_job_produce(job, TOPIC_CLASSIFY_RESULTS, q->request_id,
                                 strlen(q->request_id), again->str, again->len);
        if (again) freeReplyObject(again);
    }
    free(buf);
    free(labels);
    free(preds);
    free(pp);
    verdict_free(&v);
    ursa__classify_request__free_unpacked(q, NULL);
    return ret;
}

/* ---- main ----------------------------------------------------------------------------- */

static int tick(void *opaque, int timeout_ms) {
    bulk *bk = opaque;
    if (service_beat_due()) {
        served *m = batcher_current(bk->s->b);
        const char *kv[] = {"model", m ? served_id(m) : "-", NULL};
        service_beat(bk->r, "inference", kv);
        served_release(m);
    }
    if (timeout_ms > 0) util_sleep_ms(timeout_ms < 50 ? timeout_ms : 50);
    return 0;
}

int main(int argc, char **argv) {
    char nerr[200];
    if (nn_engine_init(argv, nerr, sizeof nerr) != URSA_OK) {
        fprintf(stderr, "ursa-inference: %s\n", nerr);
        return 2;
    }
    const cfg_def *const tables[] = {cfg_defs_base, cfg_defs_kafka, cfg_defs_redis, cfg_defs_blob,
                                     fetch_cfg_defs, inference_defs, NULL};
    cfg *c;
    int argi, rc = service_setup("inference", usage, tables, argc, argv, &c, &argi);
    if (rc >= 0) return rc;
    service_signals(&run);
    static server s;
    s.c = c;
    s.dataset = cfg_str(c, "inference.dataset");
    snprintf(s.pin, sizeof s.pin, "%s", cfg_str(c, "inference.pin"));
    s.max_body = (size_t)cfg_int(c, "inference.max-body");
    s.token = cfg_str(c, "inference.admin-token");
    s.fo = fetch_opts_from_cfg(c);
    pthread_mutex_init(&s.load_mu, NULL);
    pthread_mutex_init(&s.mmu, NULL);
    const char *file = cfg_str(c, "inference.model");
    rc = 2;
    if (*s.dataset && !ds_name_valid(s.dataset)) {
        fprintf(stderr, "ursa-inference: bad dataset name \"%s\"\n", s.dataset);
        goto out0;
    }
    batcher_opts bo = {(int)cfg_int(c, "inference.max-batch"),
                       (int)cfg_int(c, "inference.max-delay-us"),
                       (int)cfg_int(c, "inference.max-queue"),
                       (int)cfg_int(c, "inference.instances")};
    s.b = batcher_new(&bo);
    if (!s.b) {
        fprintf(stderr, "ursa-inference: cannot start the batching threads\n");
        rc = 1;
        goto out0;
    }
    char err[512];
    service_conns sc;
    memset(&sc, 0, sizeof sc);
    kq_consumer *kc = NULL;
    follower fl;
    memset(&fl, 0, sizeof fl);
    bulk bk = {&s, NULL};
    rc = 1;
    if (!*file) {
        if (service_connect(c, "ursa-inference", &sc, &rc)) goto out;
        s.a = sc.a;
        s.bs = sc.bs;
        s.have_stack = 1;
        bk.r = sc.r;
    }
    if (reload(&s, 0, err, sizeof err)) {
        if (*file) {
            fprintf(stderr, "ursa-inference: %s\n", err);
            goto out;
        }
        ULOG_WARN("event=no_model_yet err=\"%s\" note=\"serving 503 until one is published\"", err);
    }
    /* HTTP */
    int threads = (int)cfg_int(c, "inference.http-threads");
    http_server *hs = http_start(cfg_str(c, "inference.bind"), (int)cfg_int(c, "inference.port"),
                                 threads, s.max_body, 10000, route, &s, err, sizeof err);
    if (!hs) {
        fprintf(stderr, "ursa-inference: %s\n", err);
        ULOG_ERROR("event=listen_failed err=\"%s\"", err);
        goto out;
    }
    int port = http_port(hs);
    char ports[80];
    snprintf(ports, sizeof ports, "%s:%d", cfg_str(c, "inference.bind"), port);
    char pfb[4200];
    const char *pf = cfg_str(c, "inference.port-file");
    if (!*pf && statedir_path(c, "run/inference.port", pfb, sizeof pfb) == URSA_OK) pf = pfb;
    if (*pf) {
        char p[16];
        int n = snprintf(p, sizeof p, "%d\n", port);
        util_write_file_atomic(pf, p, (size_t)n);
    }
    ULOG_INFO("event=started addr=%s threads=%d max_batch=%d max_delay_us=%d max_queue=%d "
              "instances=%d engine_threads=%d dataset=%s file=%s blas=%s",
              ports, threads, bo.max_batch, bo.max_delay_us, bo.max_queue, bo.instances,
              nn_threads() / bo.instances > 0 ? nn_threads() / bo.instances : 1, s.dataset, file,
              nn_blas_core());
    if (*file) {
        while (run) util_sleep_ms(200);
    } else {
        /* every instance follows every announcement: a group of its own */
        char group[200], host[64] = "host";
        gethostname(host, sizeof host - 1);
        snprintf(group, sizeof group, "ursa-inference-follow-%s-%d", host, (int)getpid());
        const char *ft[] = {TOPIC_MODELS_PUBLISHED, NULL};
        fl.s = &s;
        fl.run = 1;
        if (!(fl.kc = kq_consumer_new(c, sc.a.kafka, group, ft, sc.p, on_published, &s, err,
                                      sizeof err)) ||
            pthread_create(&fl.th, NULL, follow_loop, &fl) != 0) {
            ULOG_ERROR("event=follow_failed err=\"%s\"", err);
            http_stop(hs);
            goto out;
        }
        if (cfg_bool(c, "inference.bulk")) {
            char bg[120];
            /* the group of topics.c for the default deployment; one of its own for a
             * deployment that serves one dataset */
            if (*s.dataset) snprintf(bg, sizeof bg, "ursa-inference-%s", s.dataset);
            else snprintf(bg, sizeof bg, "ursa-inference");
            const char *bt[] = {TOPIC_CLASSIFY_REQUESTS, NULL};
            if (!(kc = kq_consumer_new(c, sc.a.kafka, bg, bt, sc.p, on_request, &bk, err,
                                       sizeof err))) {
                ULOG_ERROR("event=bulk_failed err=\"%s\"", err);
            } else {
                kq_consumer_set_tick(kc, tick, &bk);
                kq_consumer_run(kc, &run);
            }
        }
        while (run) {
            tick(&bk, 200);
        }
        fl.run = 0;
        pthread_join(fl.th, NULL);
    }
    ULOG_INFO("event=stopping");
    http_stop(hs);
    rc = 0;
out:
    kq_consumer_destroy(kc);
    kq_consumer_destroy(fl.kc);
    batcher_free(s.b);
    service_disconnect(&sc);
out0:
    cfg_destroy(c);
    return rc;
}
