/* ursa-inference: classification over HTTP (libmicrohttpd, common/io/http.h)
 * and Kafka, on CPU.
 *
 *   POST /v1/classify[?top=K]       the image as the body, or the multipart field "file"
 *   GET  /v1/classify-url?url=U     fetched with the crawler's SSRF guard, cap and timeout
 *   GET  /v1/models                 what is served, and the dataset's published models
 *   GET  /healthz, /readyz          alive; ready only with a model loaded
 *   GET  /metrics                   Prometheus text
 *   GET  /                          the web page (and /app.js, /app.css)
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
 * in, ursa.classify.results out (bulk.c). The parts and their threads:
 * server.h. */
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blas.h"
#include "nn.h"
#include "kern.h"
#include "data.h"
#include "dataset.h"
#include "log.h"
#include "server.h"
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
    "new one announced on ursa.models.published. The admin calls (/v1/admin/*) take the\n"
    "token in inference.admin-token-file, or in $URSA_INFERENCE_ADMIN_TOKEN. Stops\n"
    "cleanly on SIGTERM: requests in progress are answered (inference.drain-ms).\n\n";

static const cfg_def inference_defs[] = {
    {"inference.port", CFG_INT, SERVICE_INFERENCE_PORT, 0, 65535, "HTTP port (0: any free port)"},
    {"inference.bind", CFG_STR, "127.0.0.1", 1, 0,
     "address to listen on (an IPv4 or IPv6 address; 0.0.0.0 or :: for every interface)"},
    {"inference.port-file", CFG_STR, "", 1, 0,
     "write the port listened on to this file (default: run/inference.port in the state "
     "dir, where `ursa classify` and the tests look)"},
    {"inference.model", CFG_STR, "", 1, 0, "serve this ONNX file (no Kafka or Redis needed)"},
    {"inference.dataset", CFG_STR, "", 1, 0,
     "serve this dataset's newest published model (default: the newest of any dataset)"},
    {"inference.pin", CFG_STR, "", 1, 0, "serve this published model id, not the newest"},
    {"inference.max-batch", CFG_INT, "16", 1, 1024, "largest batch run at once"},
    {"inference.tta", CFG_STR, "off", 1, 0,
     "test-time augmentation of every answer: off, flip, shift, flip+shift (each image's "
     "probabilities averaged over 2, 5 or 10 views of it: that many passes a batch), or model "
     "(what the served model was trained with: ursa train --tta)"},
    {"inference.max-delay-us", CFG_INT, "2000", 0, 1e6,
     "how long the first request of a batch waits for more"},
    {"inference.max-queue", CFG_INT, "256", 1, 1e6,
     "requests waiting for the model; beyond it: 503 with Retry-After"},
    {"inference.instances", CFG_INT, "1", 1, 64,
     "model instances running batches side by side, each on cores/instances engine threads: "
     "1 gives the lowest latency; one a core the most throughput for small models"},
    {"inference.http-threads", CFG_INT, "0", 0, 256,
     "HTTP event threads (0: one a core); they never block: decoding, downloads and the "
     "model run on their own threads"},
    {"inference.max-connections", CFG_INT, "4096", 1, 1e6, "open connections at most"},
    {"inference.max-connections-per-ip", CFG_INT, "1024", 1, 1e6,
     "open connections from one address at most (behind a proxy, all come from one)"},
    {"inference.header-timeout-ms", CFG_INT, "10000", 100, 3.6e6,
     "a request's line and headers must arrive within this, or the connection is closed "
     "(a client trickling bytes cannot hold it)"},
    {"inference.request-timeout-ms", CFG_INT, "60000", 100, 3.6e6,
     "a request's body must arrive within this of its start"},
    {"inference.drain-ms", CFG_INT, "10000", 0, 3.6e6,
     "on SIGTERM, how long requests in progress have to be answered (then 503)"},
    {"inference.max-body", CFG_INT, "20000000", 1024, 1e9, "largest image accepted (bytes)"},
    {"inference.max-body-total-mb", CFG_INT, "256", 0, 1e6,
     "request bodies in memory at once, in MB, however many connections send them (0: no cap); "
     "past it a request gets 503 and Retry-After"},
    {"inference.decode-threads", CFG_INT, "0", 0, 256, "threads decoding images (0: one a core)"},
    {"inference.decode-budget-mb", CFG_INT, "512", 1, 1e6,
     "bytes of pixels decoded at once at most, reserved from each image's header before a "
     "pixel is decoded; past it: 503 with Retry-After"},
    {"inference.decode-queue", CFG_INT, "256", 1, 1e6, "images waiting to be decoded at most"},
    {"inference.url-max", CFG_INT, "256", 1, 100000,
     "classify-url downloads in flight at once (on one thread, libcurl's multi "
     "interface); beyond: 503 with Retry-After"},
    {"inference.url-per-client", CFG_INT, "8", 1, 100000,
     "classify-url downloads in flight from one client address; beyond: 429 with "
     "Retry-After"},
    {"inference.decode-client-share", CFG_INT, "25", 1, 100,
     "percent of the decode budget one client address may hold (an image larger than "
     "that still goes alone; 100: no share, the budget alone); beyond: 429 with "
     "Retry-After"},
    {"inference.bulk-downloads", CFG_INT, "64", 1, 100000,
     "URLs of ursa.classify.requests downloading at once"},
    {"inference.admin-threads", CFG_INT, "2", 1, 64,
     "threads for /v1/models lookups and admin loads, apart from the downloads"},
    {"inference.admin-queue", CFG_INT, "16", 1, 1e6, "such calls waiting at most; beyond: 503"},
    {"inference.admin-token-file", CFG_STR, "", 1, 0,
     "file holding the token for /v1/admin/* (Authorization: Bearer TOKEN); unset: "
     "$URSA_INFERENCE_ADMIN_TOKEN; neither: admin calls refused. Never a flag: a flag shows in ps"},
    {"inference.bulk", CFG_BOOL, "true", 1, 0,
     "with a dataset: also serve ursa.classify.requests"},
    {NULL, 0, NULL, 0, 0, NULL}};

static atomic_int run = 1;

/* the model follower: its own consumer and producer, polled by its thread only */
typedef struct {
    kq_producer *p;
    kq_consumer *kc;
    atomic_int run;
    pthread_t th;
    int started;
} follower;

static void *follow_loop(void *arg) {
    follower *fl = arg;
    kq_consumer_run(fl->kc, &fl->run);
    return NULL;
}

static int follow_start(server *s, follower *fl, char *err, size_t n) {
    /* every instance follows every announcement: a group of its own */
    char group[200], host[64] = "host";
    gethostname(host, sizeof host - 1);
    snprintf(group, sizeof group, "ursa-inference-follow-%s-%d", host, (int)getpid());
    const char *ft[] = {TOPIC_MODELS_PUBLISHED, NULL};
    fl->run = 1;
    if (!(fl->p = kq_producer_new(s->c, s->a.kafka, err, n)) ||
        !(fl->kc = kq_consumer_new(s->c, s->a.kafka, group, ft, fl->p, on_published, s, err, n)))
        return -1;
    if (pthread_create(&fl->th, NULL, follow_loop, fl)) {
        snprintf(err, n, "cannot start the follower thread");
        return -1;
    }
    fl->started = 1;
    return 0;
}

static void follow_stop(follower *fl) {
    fl->run = 0;
    if (fl->started) pthread_join(fl->th, NULL);
    kq_consumer_destroy(fl->kc);
    kq_producer_destroy(fl->p);
}

static void write_port_file(const cfg *c, int port) {
    char pfb[4200];
    const char *pf = cfg_str(c, "inference.port-file");
    if (!*pf && statedir_path(c, "run/inference.port", pfb, sizeof pfb) == URSA_OK) pf = pfb;
    if (*pf) {
        char p[16];
        int n = snprintf(p, sizeof p, "%d\n", port);
        util_write_file_atomic(pf, p, (size_t)n);
    }
}

static http_server *listen_http(server *s, char *err, size_t n) {
    const cfg *c = s->c;
    http_opts o = http_opts_default();
    o.bind = cfg_str(c, "inference.bind");
    o.port = (int)cfg_int(c, "inference.port");
    o.threads = (int)cfg_int(c, "inference.http-threads");
    o.connection_limit = (unsigned)cfg_int(c, "inference.max-connections");
    o.per_ip_limit = (unsigned)cfg_int(c, "inference.max-connections-per-ip");
    o.header_timeout_ms = (int)cfg_int(c, "inference.header-timeout-ms");
    o.request_timeout_ms = (int)cfg_int(c, "inference.request-timeout-ms");
    o.max_body = s->max_body;
    o.max_body_total = (size_t)cfg_int(s->c, "inference.max-body-total-mb") << 20;
    o.routes = inference_routes;
    o.ctx = s;
    o.csp = inference_csp;
    return http_start(&o, err, n);
}

int main(int argc, char **argv) {
    char nerr[200];
    ulog_set_fd(STDOUT_FILENO); /* a daemon logs to stdout, the engine's first lines too */
    if (nn_engine_init(argv, nerr, sizeof nerr) != URSA_OK) {
        fprintf(stderr, "ursa-inference: %s\n", nerr);
        return 2;
    }
    const cfg_def *const tables[] = {cfg_defs_base, cfg_defs_kafka, cfg_defs_redis, cfg_defs_blob,
                                     fetch_cfg_defs, img_cfg_defs, nn_cfg_defs, inference_defs,
                                     NULL};
    cfg *c;
    int argi, rc = service_setup("inference", SERVICE_OWN_HTTP, usage, tables, argc, argv, &c,
                                 &argi);
    if (rc >= 0) return rc;
    nn_limits_from_cfg(c); /* before the first model loads */
    service_signals(&run);
    static server s;
    s.c = c;
    s.dataset = cfg_str(c, "inference.dataset");
    snprintf(s.pin, sizeof s.pin, "%s", cfg_str(c, "inference.pin"));
    s.max_body = (size_t)cfg_int(c, "inference.max-body");
    s.fo = fetch_opts_from_cfg(c);
    img_opts io = img_opts_from_cfg(c);
    s.dop = img_decode_opts_default();
    s.dop.max_pixels = io.max_pixels;
    s.dop.max_scans = io.max_scans;
    pthread_mutex_init(&s.load_mu, NULL);
    pthread_mutex_init(&s.pub_mu, NULL);
    register_metrics(&s);
    const char *file = cfg_str(c, "inference.model");
    char err[512];
    service_conns sc;
    memset(&sc, 0, sizeof sc);
    follower fl;
    memset(&fl, 0, sizeof fl);
    bulk bk;
    memset(&bk, 0, sizeof bk);
    kq_consumer *kc = NULL;
    rc = 2;
    if (*s.dataset && !ds_name_valid(s.dataset)) {
        fprintf(stderr, "ursa-inference: bad dataset name \"%s\"\n", s.dataset);
        goto out;
    }
    unsigned tta_mode;
    const char *tta = cfg_str(c, "inference.tta");
    if (strcmp(tta, "model") && nn_tta_parse(tta, &tta_mode)) {
        fprintf(stderr, "ursa-inference: inference.tta %s: off, flip, shift, flip+shift or model\n",
                tta);
        goto out;
    }
    if (models_read_token(&s, err, sizeof err)) {
        fprintf(stderr, "ursa-inference: %s\n", err);
        goto out;
    }
    rc = 1;
    batcher_opts bo = {(int)cfg_int(c, "inference.max-batch"),
                       (int)cfg_int(c, "inference.max-delay-us"),
                       (int)cfg_int(c, "inference.max-queue"),
                       (int)cfg_int(c, "inference.instances")};
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int dthreads = (int)cfg_int(c, "inference.decode-threads");
    if (dthreads <= 0) dthreads = cores > 0 ? (int)cores : 1;
    if (!(s.b = batcher_new(&bo)) ||
        !(s.decode = pool_new(dthreads, (size_t)cfg_int(c, "inference.decode-budget-mb") << 20,
                              (int)cfg_int(c, "inference.decode-queue"))) ||
        !(s.admin = pool_new((int)cfg_int(c, "inference.admin-threads"), 0,
                             (int)cfg_int(c, "inference.admin-queue")))) {
        fprintf(stderr, "ursa-inference: cannot start the batching and decoding threads\n");
        goto out;
    }
    s.url_max = (int)cfg_int(c, "inference.url-max");
    s.url_per_client = (int)cfg_int(c, "inference.url-per-client");
    long long share_pct = cfg_int(c, "inference.decode-client-share");
    s.decode_share = share_pct >= 100 ? UINT64_MAX /* the budget alone bounds a client */
                                      : ((uint64_t)cfg_int(c, "inference.decode-budget-mb") << 20) *
                                            (uint64_t)share_pct / 100;
    if (!(s.url_shares = shares_new()) || !(s.decode_shares = shares_new()) ||
        !(s.dl = downloads_new(&s.fo, s.max_body, s.url_max, err, sizeof err))) {
        fprintf(stderr, "ursa-inference: cannot start the download thread: %s\n", err);
        goto out;
    }

    if (!*file) {
        if (service_connect(c, "ursa-inference", &sc, &rc)) goto out;
        s.a = sc.a;
        s.bs = sc.bs;
        s.have_stack = 1;
        if (bulk_init(&bk, &s, sc.r, (int)cfg_int(c, "inference.bulk-downloads"), err,
                      sizeof err)) {
            fprintf(stderr, "ursa-inference: %s\n", err);
            goto out;
        }
    }
    if (models_reload(&s, 0, err, sizeof err)) {
        if (*file) {
            fprintf(stderr, "ursa-inference: %s\n", err);
            goto out;
        }
        ULOG_WARN("event=no_model_yet err=\"%s\" note=\"serving 503 until one is published\"", err);
    }
    if (!(s.http = listen_http(&s, err, sizeof err))) {
        fprintf(stderr, "ursa-inference: %s\n", err);
        ULOG_ERROR("event=listen_failed err=\"%s\"", err);
        goto out;
    }
    int port = http_port(s.http);
    write_port_file(c, port);
    ULOG_INFO("event=started addr=%s:%d http_threads=%d decode_threads=%d decode_budget_mb=%lld "
              "max_batch=%d max_delay_us=%d max_queue=%d instances=%d engine_threads=%d "
              "dataset=%s file=%s isa=%s admin=%s",
              cfg_str(c, "inference.bind"), port, (int)cfg_int(c, "inference.http-threads"),
              dthreads, cfg_int(c, "inference.decode-budget-mb"), bo.max_batch, bo.max_delay_us,
              bo.max_queue, bo.instances,
              nn_threads() / bo.instances > 0 ? nn_threads() / bo.instances : 1, s.dataset, file,
              nn_isa_name(nn_kern_get()->isa), s.token_len ? "on" : "off");
    if (!*file) {
        if (follow_start(&s, &fl, err, sizeof err)) {
            ULOG_ERROR("event=follow_failed err=\"%s\"", err);
            run = 0;
        } else if (cfg_bool(c, "inference.bulk")) {
            /* the group of topics.c for the default deployment; one of its own for a
             * deployment that serves one dataset */
            char bg[120];
            if (*s.dataset) snprintf(bg, sizeof bg, "ursa-inference-%s", s.dataset);
            else snprintf(bg, sizeof bg, "ursa-inference");
            const char *bt[] = {TOPIC_CLASSIFY_REQUESTS, NULL};
            if (!(kc = kq_consumer_new(c, sc.a.kafka, bg, bt, sc.p, bulk_on_request, &bk, err,
                                       sizeof err))) {
                ULOG_ERROR("event=bulk_failed err=\"%s\"", err);
            } else {
                kq_consumer_set_tick(kc, bulk_tick, &bk);
                kq_consumer_run(kc, &run); /* the stack's producer: polled here only */
            }
        }
        while (run) bulk_tick(&bk, 200);
        bulk_stop(&bk);
    } else {
        while (run) util_sleep_ms(200);
    }
    ULOG_INFO("event=stopping");
    /* answers what is in progress, then stops the threads that answer, then HTTP */
    http_drain(s.http, (int)cfg_int(c, "inference.drain-ms"));
    rc = 0;
out:
    follow_stop(&fl);
    kq_consumer_destroy(kc);
    if (bk.dl) bulk_stop(&bk);
    pool_free(s.admin);
    downloads_free(s.dl); /* its callbacks answer and queue decodes */
    pool_free(s.decode);
    batcher_free(s.b);
    http_stop(s.http);
    free(s.pub);
    shares_free(s.url_shares);
    shares_free(s.decode_shares);
    service_disconnect(&sc);
    cfg_destroy(c);
    return rc;
}
