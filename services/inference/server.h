/* server.h: ursa-inference's parts and the state they share. Private to
 * the daemon.
 *
 *   main.c      settings, starting and stopping everything
 *   routes.c    the route table and the small handlers (health, page, models, admin)
 *   classify.c  POST /v1/classify and GET /v1/classify-url: decoding off the
 *               event threads (pool.h), batching (batcher.h), the answer
 *   models.c    loading, pinning and following models
 *   metrics.c   GET /metrics
 *   bulk.c      ursa.classify.requests -> ursa.classify.results
 *   downloads.c classify-url's and bulk's downloads, on one thread
 *   shares.c    what each client address holds (downloads, decode bytes)
 *   multipart.c the "file" part of a multipart/form-data body
 *   page.h      the web page and its script
 *
 * Threads (who may call what):
 *   - HTTP event threads (libmicrohttpd's): the handlers; they never block:
 *     decoding and downloads go to the pools, the model to the batcher;
 *   - decode pool threads: decode, preprocess, submit to the batcher;
 *   - the download threads (downloads.c; one for classify-url, one for
 *     bulk): every download in flight at once on libcurl's multi
 *     interface; a finished classify-url download queues its decode;
 *   - admin pool threads: the Redis lookups of /v1/models, admin reloads
 *     and pins, never behind the public's work;
 *   - batching threads: run the model, answer the deferred request;
 *   - the follower thread: polls ursa.models.published with its own
 *     producer, loads new models (models_reload, under load_mu);
 *   - the main thread: the bulk consumer loop, with the stack's producer;
 *     it classifies what bulk's download thread brought (bulk_tick).
 *   Each Kafka producer is polled by one thread only (the consumer loop it
 *   was given to). */
#ifndef URSA_INFERENCE_SERVER_H
#define URSA_INFERENCE_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "batcher.h"
#include "blob.h"
#include "config.h"
#include "fetch.h"
#include "http.h"
#include "image.h"
#include "kq.h"
#include "metrics.h"
#include "pool.h"
#include "rstore.h"
#include "service.h"

/* ---- shares.c ---- */
/* What each client address holds of a resource; thread-safe. */
typedef struct shares shares;
shares *shares_new(void);
void shares_free(shares *sh);
/* Takes amount for client if what it then holds is at most limit, or if
 * it holds nothing (alone, one item may be larger than its share): 0, or
 * -1. *held (may be NULL) gets what it held before. */
int shares_take(shares *sh, const char *client, uint64_t amount, uint64_t limit,
                uint64_t *held);
void shares_give(shares *sh, const char *client, uint64_t amount);

/* ---- downloads.c ---- */
/* Downloads under the SSRF guard, the timeouts and a body cap, all at once
 * on one thread. cb runs on that thread when a download ends: status 200
 * with the bytes (the callee owns them), else 413, 422 or 503 and why. A
 * download whose gone(garg) turns nonzero (asked every 100 ms) is
 * cancelled: 503. */
typedef struct downloads downloads;
typedef void dl_done_fn(void *arg, int status, uint8_t *data, size_t len, const char *why);
downloads *downloads_new(const fetch_opts *fo, size_t max_body, int max, char *err, size_t n);
/* Stops the thread; what is in flight or queued ends 503 ("the server is
 * stopping"), its callbacks run here. */
void downloads_free(downloads *d);
/* Queues a download: 0, or -1 with max downloads queued or in flight. */
int downloads_start(downloads *d, const char *url, int (*gone)(void *), void *garg,
                    dl_done_fn *cb, void *arg);
int downloads_count(downloads *d);

typedef struct server {
    const cfg *c;
    batcher *b;
    pool *decode;  /* decoding, with the pixel budget */
    downloads *dl; /* classify-url's downloads */
    int url_max, url_per_client;
    shares *url_shares;    /* downloads in flight per client address */
    shares *decode_shares; /* bytes of the decode budget per client address */
    uint64_t decode_share; /* what one address may hold of it */
    atomic_ullong refused_url, refused_decode; /* 429s for a full share */
    pool *admin;   /* /v1/models' Redis lookups and the admin calls: never
                      behind the public's downloads */
    http_server *http;
    service_addrs a;
    int have_stack;       /* Redis, Kafka and blobs are configured */
    const char *dataset;  /* followed dataset, or "" */
    char pin[160];        /* pinned model id, or "" */
    long long cur_created; /* created_ms of the served model (registry) */
    pthread_mutex_t load_mu; /* one load at a time; guards pin and cur_created */
    /* GET /v1/models' list of published models as last read from Redis,
     * served (with its age) while Redis does not answer */
    pthread_mutex_t pub_mu;
    char *pub;            /* the JSON array's inside, or NULL */
    int64_t pub_at;       /* when it was read (util_mono_ms) */
    blob_store *bs;
    fetch_opts fo;
    img_decode_opts dop;  /* img.max-pixels, img.max-scans */
    size_t max_body;
    char token[512];      /* the admin token (a file's or the environment's), or "" */
    size_t token_len;
    /* metrics (metrics.h), registered by register_metrics */
    metrics_series *latency, *reloads, *reload_failures;
} server;

/* ---- classify.c ---- */
int h_classify(void *ctx, http_req *r);
int h_classify_url(void *ctx, http_req *r);

/* What classifying one image gave: the model (a reference), the classes
 * ranked by probability, cut to top; or, for a status other than 200, why. */
typedef struct {
    served *m;
    float *probs;
    int *order, k;
    char why[512];
} verdict;
void verdict_free(verdict *v);
/* Decodes and classifies image bytes, waiting (the bulk consumer): the
 * HTTP status it would be (200; 415/422 for the image; 503 for us). */
int classify_wait(server *s, const uint8_t *d, size_t len, int top, verdict *v);

/* ---- models.c ---- */
/* Loads what should be served now (the file, the pin, or the dataset's
 * newest) if it is not what is served; force loads it again anyway. 0, or
 * -1 with the reason in err. */
int models_reload(server *s, int force, char *err, size_t n);
int h_models(void *ctx, http_req *r);
int h_admin(void *ctx, http_req *r);
kq_handler on_published;
/* The admin token from inference.admin-token-file, or else
 * $URSA_INFERENCE_ADMIN_TOKEN (then taken out of the environment). -1 with
 * the reason when the file cannot be read. */
int models_read_token(server *s, char *err, size_t n);

/* ---- metrics.c ---- */
/* Registers latency and reloads in the registry (once, at start). */
void register_metrics(server *s);
int h_metrics(void *ctx, http_req *r);

/* ---- bulk.c ---- */
typedef struct bulk_item bulk_item;
typedef struct {
    server *s;
    rstore *r;
    downloads *dl;       /* bulk's own download thread */
    pthread_mutex_t mu;  /* ready, with cv: a download ended */
    pthread_cond_t cv;
    bulk_item *ready;    /* downloads ended (from the download thread) */
    bulk_item *waiting;  /* to classify (the consumer's thread) */
    int held;            /* jobs held: downloading or waiting */
} bulk;
/* 0, or -1 with why in err (the download thread could not start). */
int bulk_init(bulk *bk, server *s, rstore *r, int max_downloads, char *err, size_t n);
/* After the consumer loop returned: stops the downloads, frees the rest. */
void bulk_stop(bulk *bk);
kq_handler bulk_on_request;
kq_tick bulk_tick;

/* ---- v2.c: the Open Inference Protocol's health and metadata, /ping ---- */
int h_v2_server(void *ctx, http_req *r);
int h_v2_health(void *ctx, http_req *r);
int h_v2_model(void *ctx, http_req *r);
int h_ping(void *ctx, http_req *r);

/* ---- multipart.c ---- */
/* The part named "file" of a multipart/form-data body, in place: 0, -1
 * when there is none, -2 when there are several (one image a request). */
int multipart_file(const char *ctype, const char *body, size_t len, const char **data,
                   size_t *dlen);

/* ---- routes.c ---- */
extern const http_route inference_routes[];
extern const char inference_csp[]; /* the page's Content-Security-Policy */
/* From a handler: defers r and runs fn(s, r) on the admin pool, which
 * answers it; 503 at once when the pool is full. */
int defer_admin(server *s, http_req *r, void (*fn)(server *s, http_req *r));

double now_s(void);

#endif
