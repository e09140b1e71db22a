/* classify.c: POST /v1/classify and GET /v1/classify-url, and the same
 * classification for the bulk consumer; see server.h.
 *
 * A request's way: the handler (an HTTP event thread) checks it, reserves
 * its image's bytes in the decode pool's budget (from the header's size,
 * before a pixel is decoded; past the budget: 503 with Retry-After),
 * defers the answer and queues the decode. A pool thread decodes (stopping
 * if the client has gone), preprocesses for the current model, gives the
 * bytes back and submits to the batcher. The batching thread that runs the
 * batch answers. classify-url first downloads on the download thread
 * (downloads.c), which holds a socket per download, never a thread.
 *
 * Fair shares (shares.c): one client address may hold at most
 * inference.url-per-client downloads in flight (past it: 429 with
 * Retry-After) and inference.decode-client-share percent of the decode
 * budget (past it: 429; an image larger than the share still goes alone),
 * so a client that floods with slow URLs or pixel-heavy images waits for
 * itself while the others are answered.
 *
 * A small image (INLINE_BYTES of file, INLINE_COST of pixels at the model's
 * size: a thumbnail, tens of microseconds) is decoded right on the event
 * thread instead: the two thread hops of the pool cost more than it does. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "data.h"
#include "log.h"
#include "server.h"
#include "util.h"

double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

void verdict_free(verdict *v) {
    free(v->probs);
    free(v->order);
    served_release(v->m);
    memset(v, 0, sizeof *v);
}

/* the status for a decode that failed */
static int decode_status(ursa_err e, const img_reject *rej, char *why, size_t wn) {
    if (e == URSA_ERR_NOMEM) {
        snprintf(why, wn, "out of memory decoding");
        return 503;
    }
    if (e == URSA_ERR_SHUTDOWN) {
        snprintf(why, wn, "the client went away");
        return 503;
    }
    snprintf(why, wn, "not a decodable image: %s (%s)", rej->reason, rej->detail);
    return !strcmp(rej->reason, "not_an_image") || !strcmp(rej->reason, "unsupported_format") ||
                   !strcmp(rej->reason, "empty")
               ? 415
               : 422;
}

/* Decodes d into the model's input x (allocated): 200, or the status and
 * why */
static int decode_for(server *s, served *m, const uint8_t *d, size_t len, const img_decode_opts *o,
                      float **x, char *why, size_t wn) {
    const nn_meta *mt = served_meta(m);
    img_rgb im;
    img_reject rej;
    ursa_err e = nn_decode_image(d, len, mt, o, &im, &rej);
    if (e) return decode_status(e, &rej, why, wn);
    int in_c = served_in_c(m);
    *x = malloc(sizeof(float) * (size_t)in_c * mt->size * mt->size);
    if (!*x) {
        img_free(&im);
        snprintf(why, wn, "out of memory");
        return 503;
    }
    nn_preprocess(&im, mt, in_c, *x);
    img_free(&im);
    (void)s;
    return 200;
}

/* The answer as JSON: {"model": ..., "predictions": [[label, prob], ...]}. */
static char *verdict_json(const verdict *v, size_t *len) {
    char *json = NULL, buf[32];
    FILE *f = open_memstream(&json, len);
    if (!f) return NULL;
    fprintf(f, "{\"model\": ");
    util_json_str(f, served_id(v->m));
    fprintf(f, ", \"predictions\": [");
    for (int j = 0; j < v->k; j++) {
        float p = v->probs[v->order[j]];
        fprintf(f, "%s[", j ? ", " : "");
        util_json_str(f, nn_class_name(served_meta(v->m), v->order[j], buf, sizeof buf));
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

int classify_wait(server *s, const uint8_t *d, size_t len, int top, verdict *v) {
    memset(v, 0, sizeof *v);
    if (!(v->m = batcher_current(s->b))) {
        snprintf(v->why, sizeof v->why, "no model loaded yet");
        return 503;
    }
    float *x = NULL;
    batcher_arriving(s->b, 1);
    int st = decode_for(s, v->m, d, len, &s->dop, &x, v->why, sizeof v->why);
    int c = served_nclass(v->m);
    if (st == 200) {
        v->probs = malloc(sizeof(float) * (size_t)c);
        v->order = malloc(sizeof(int) * (size_t)c);
        if (!v->probs || !v->order) st = 503, snprintf(v->why, sizeof v->why, "out of memory");
    }
    if (st != 200) {
        batcher_arriving(s->b, -1);
    } else {
        ursa_err e = batcher_run(s->b, v->m, x, v->probs);
        if (e) {
            snprintf(v->why, sizeof v->why, "%s",
                     e == URSA_ERR_UNAVAILABLE ? "busy: the queue is full" : ursa_err2str(e));
            st = 503;
        } else {
            nn_rank(v->probs, c, v->order);
            v->k = top <= 0 || top > c ? c : top;
        }
    }
    free(x);
    return st;
}

/* ---- over HTTP -------------------------------------------------------------------- */

/* One request's work, from the handler to the batch. */
typedef struct {
    server *s;
    http_req *r;
    const char *route;
    double t0;
    int top;
    const uint8_t *data; /* the body's part, or the downloaded bytes (owned) */
    size_t len;
    uint8_t *owned;
    char url[4096];
    char client[48];  /* the client's address, for its shares */
    int url_share;    /* 1 while it holds a download of the client's share */
    size_t reserved; /* bytes held in the decode budget (and the client's share of it) */
    verdict v;
    float *x;
} cjob;

static void cjob_free(cjob *j) {
    if (j->url_share) shares_give(j->s->url_shares, j->client, 1);
    verdict_free(&j->v);
    free(j->x);
    free(j->owned);
    free(j);
}

static void answer(cjob *j, int status, const char *why) {
    if (status == 200) {
        size_t jl = 0;
        char *json = verdict_json(&j->v, &jl);
        if (json) http_reply(j->r, 200, "application/json", NULL, json, jl);
        else http_error(j->r, status = 503, "Retry-After: 1\r\n", "out of memory");
        free(json);
    } else {
        http_error(j->r, status,
                   status == 503 || status == 429 ? "Retry-After: 1\r\n" : NULL, "%s", why);
    }
    if (status == 200 || status == 415 || status == 422)
        metrics_observe(j->s->latency, now_s() - j->t0);
    cjob_free(j);
}

static int client_gone(void *arg) { return http_gone(arg); }
static int job_gone(void *arg) { return http_gone(((cjob *)arg)->r); }

static void batch_done(void *arg, ursa_err e) {
    cjob *j = arg;
    if (e) {
        answer(j, 503, e == URSA_ERR_SHUTDOWN  ? "the server is stopping"
                       : e == URSA_ERR_TIMEOUT ? "the client went away"
                                               : ursa_err2str(e));
        return;
    }
    int c = served_nclass(j->v.m);
    nn_rank(j->v.probs, c, j->v.order);
    j->v.k = j->top <= 0 || j->top > c ? c : j->top;
    answer(j, 200, NULL);
}

#define INLINE_BYTES (32 << 10)
#define INLINE_COST (192 << 10)

/* on a decode pool thread, or inline on the event thread */
static void decode_job(void *arg) {
    cjob *j = arg;
    server *s = j->s;
    img_decode_opts o = s->dop;
    o.cancel = client_gone;
    o.cancel_arg = j->r;
    o.max_cost = j->reserved ? j->reserved : INLINE_COST; /* what libjpeg reads may not cost more */
    char why[512] = "";
    int st = http_gone(j->r) ? 503 : 200;
    if (st != 200) snprintf(why, sizeof why, "the client went away");
    else if (!(j->v.m = batcher_current(s->b))) st = 503, snprintf(why, sizeof why, "no model loaded yet");
    if (st == 200) st = decode_for(s, j->v.m, j->data, j->len, &o, &j->x, why, sizeof why);
    pool_release(s->decode, j->reserved); /* the pixels are gone */
    if (j->reserved) shares_give(s->decode_shares, j->client, j->reserved);
    j->reserved = 0;
    if (st == 200) {
        int c = served_nclass(j->v.m);
        j->v.probs = malloc(sizeof(float) * (size_t)c);
        j->v.order = malloc(sizeof(int) * (size_t)c);
        if (!j->v.probs || !j->v.order) st = 503, snprintf(why, sizeof why, "out of memory");
    }
    if (st != 200) {
        batcher_arriving(s->b, -1);
        answer(j, st, why);
        return;
    }
    if (batcher_submit(s->b, j->v.m, j->x, j->v.probs, batch_done, job_gone, j) != URSA_OK)
        answer(j, 503, "busy: the queue is full");
}

/* The bytes an image's decode holds at most, for the current model's size */
static size_t decode_bytes(server *s, const served *m, const uint8_t *d, size_t len) {
    img_decode_opts o = s->dop;
    o.shrink_to = m ? served_meta(m)->size : 0;
    return img_decode_cost(d, len, &o);
}

/* Reserves j->reserved bytes in the client's share and then in the decode
 * budget: 0; 429 past the client's share or 503 past the budget, with why. */
static int reserve_decode(cjob *j, char *why, size_t wn) {
    server *s = j->s;
    uint64_t held = 0;
    if (shares_take(s->decode_shares, j->client, j->reserved, s->decode_share, &held)) {
        snprintf(why, wn,
                 "busy for you: your address is decoding %llu bytes of pixels, its share of "
                 "the budget is %llu; this image needs %zu",
                 (unsigned long long)held, (unsigned long long)s->decode_share, j->reserved);
        j->reserved = 0;
        atomic_fetch_add(&s->refused_decode, 1);
        return 429;
    }
    if (pool_reserve(s->decode, j->reserved)) {
        shares_give(s->decode_shares, j->client, j->reserved);
        j->reserved = 0;
        pool_stats ps;
        pool_get_stats(s->decode, &ps);
        snprintf(why, wn, "busy: decoding %zu of %zu bytes of pixels, %d images queued",
                 ps.in_use, ps.budget, ps.queued);
        return 503;
    }
    return 0;
}

/* Queues j's decode, the request deferred already (the download thread):
 * 0, or the status reserve_decode refused with. */
static int start_decode(cjob *j, char *why, size_t wn) {
    served *m = batcher_current(j->s->b);
    j->reserved = decode_bytes(j->s, m, j->data, j->len);
    served_release(m);
    int st = reserve_decode(j, why, wn);
    if (st) return st;
    batcher_arriving(j->s->b, 1);
    pool_push(j->s->decode, decode_job, j);
    return 0;
}

static int top_param(http_req *r) {
    char v[32];
    int l = http_query(r, "top", v, sizeof v);
    if (l == -1) return 0; /* absent: every class */
    if (l < 0) return -1;
    char *end;
    long n = strtol(v, &end, 10);
    return *end || !v[0] || n < 0 || n > 100000 ? -1 : (int)n;
}

/* ?model=NAME that is not the served model: 404 naming the one served
 * (1: answered). A model named as it is served, or none, is fine. */
static int model_refused(http_req *r, served *m) {
    char want[200];
    int n = http_query(r, "model", want, sizeof want);
    if (n <= 0 || (m && !strcmp(want, served_id(m)))) return 0;
    http_error(r, 404, NULL, "no model %s is served; this server serves %s", want,
               m ? served_id(m) : "none yet");
    return 1;
}

int h_classify(void *ctx, http_req *r) {
    server *s = ctx;
    int top = top_param(r);
    if (top < 0) return http_error(r, 400, NULL, "top must be a number >= 0");
    size_t len;
    const char *body = http_body(r, &len);
    const char *ctype = http_header(r, "Content-Type");
    const char *d = body;
    size_t dl = len;
    int mp = ctype && !strncasecmp(ctype, "multipart/form-data", 19)
                 ? multipart_file(ctype, body, len, &d, &dl)
                 : 0;
    if (mp == -2)
        return http_error(r, 400, NULL, "several parts named \"file\": send one image a request");
    if (mp) return http_error(r, 400, NULL, "multipart body without a \"file\" part");
    if (!dl) return http_error(r, 400, NULL, "empty body: send the image");
    served *m = batcher_current(s->b);
    if (!m) return http_error(r, 503, "Retry-After: 1\r\n", "no model loaded yet");
    if (model_refused(r, m)) {
        served_release(m);
        return 404;
    }
    size_t cost = decode_bytes(s, m, (const uint8_t *)d, dl);
    served_release(m);
    cjob *j = calloc(1, sizeof *j);
    if (!j) return http_error(r, 503, "Retry-After: 1\r\n", "out of memory");
    j->s = s;
    j->r = r;
    j->t0 = now_s();
    j->top = top;
    j->data = (const uint8_t *)d;
    j->len = dl;
    if (dl <= INLINE_BYTES && cost <= INLINE_COST) { /* held by no budget: it is done now */
        http_defer(r); /* the batch answers */
        batcher_arriving(s->b, 1);
        decode_job(j);
        return HTTP_DEFERRED;
    }
    j->reserved = cost;
    http_client_addr(r, j->client, sizeof j->client);
    char why[300];
    int st = reserve_decode(j, why, sizeof why);
    if (st) {
        free(j);
        return http_error(r, st, "Retry-After: 1\r\n", "%s", why);
    }
    http_defer(r); /* before the work can answer */
    batcher_arriving(s->b, 1);
    pool_push(s->decode, decode_job, j);
    return HTTP_DEFERRED;
}

/* ---- classify-url ------------------------------------------------------------------ */

/* on the download thread */
static void url_fetched(void *arg, int status, uint8_t *data, size_t len, const char *why) {
    cjob *j = arg;
    shares_give(j->s->url_shares, j->client, 1); /* the download is over */
    j->url_share = 0;
    if (status != 200) {
        free(data);
        answer(j, status, why);
        return;
    }
    j->owned = data;
    j->data = data;
    j->len = len;
    char w[300];
    int st = start_decode(j, w, sizeof w);
    if (st) answer(j, st, w);
}

int h_classify_url(void *ctx, http_req *r) {
    server *s = ctx;
    cjob *j = calloc(1, sizeof *j);
    if (!j) return http_error(r, 503, "Retry-After: 1\r\n", "out of memory");
    int top = top_param(r);
    if (http_query(r, "url", j->url, sizeof j->url) <= 0 || top < 0) {
        free(j);
        return http_error(r, 400, NULL, "give ?url=... (http or https), and top=K >= 0");
    }
    if (strncmp(j->url, "http://", 7) && strncmp(j->url, "https://", 8)) {
        free(j);
        return http_error(r, 400, NULL, "not an http:// or https:// URL");
    }
    served *cur = batcher_current(s->b);
    int refused = cur && model_refused(r, cur);
    served_release(cur);
    if (refused) {
        free(j);
        return 404;
    }
    j->s = s;
    j->r = r;
    j->t0 = now_s();
    j->top = top;
    http_client_addr(r, j->client, sizeof j->client);
    uint64_t held = 0;
    if (shares_take(s->url_shares, j->client, 1, (uint64_t)s->url_per_client, &held)) {
        free(j);
        atomic_fetch_add(&s->refused_url, 1);
        return http_error(r, 429, "Retry-After: 2\r\n",
                          "busy for you: your address has %llu downloads in flight, at most %d",
                          (unsigned long long)held, s->url_per_client);
    }
    j->url_share = 1;
    http_defer(r); /* before the download can answer */
    if (downloads_start(s->dl, j->url, job_gone, j, url_fetched, j)) {
        char why[160];
        snprintf(why, sizeof why, "busy: %d downloads in flight, at most %d",
                 downloads_count(s->dl), s->url_max);
        answer(j, 503, why);
    }
    return HTTP_DEFERRED;
}
