/* metrics.c: GET /metrics, Prometheus text: the HTTP layer's counts
 * (connections, requests by route and status, refusals by reason),
 * batching, the decode budget and the pools, and the model served, read
 * from their owners at each scrape; then the registry (metrics.h): the
 * classification latency, reloads, the Kafka consumers and readiness. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "metrics.h"
#include "server.h"
#include "util.h"

void register_metrics(server *s) {
    static const double lat_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,   0.25,   0.5,   1,    2.5};
    s->latency = metrics_with(metrics_histogram("request_seconds", "Classification latency.", NULL,
                                                lat_le, sizeof lat_le / sizeof lat_le[0]),
                              NULL);
    s->reloads = metrics_plain_counter("reloads_total", "Models loaded and swapped in.");
    s->reload_failures = metrics_plain_counter("reload_failures_total", "Loads that failed.");
}

static void write_pool(FILE *f, const char *name, const char *what, pool *p) {
    pool_stats ps;
    pool_get_stats(p, &ps);
    char n[96], h[160];
    snprintf(n, sizeof n, "ursa_inference_%s_queued", name);
    snprintf(h, sizeof h, "%s waiting for a thread.", what);
    metrics_write_sample(f, n, "gauge", h, NULL, (double)ps.queued);
    snprintf(n, sizeof n, "ursa_inference_%s_running", name);
    snprintf(h, sizeof h, "%s running.", what);
    metrics_write_sample(f, n, "gauge", h, NULL, (double)ps.running);
    snprintf(n, sizeof n, "ursa_inference_%s_refused_total", name);
    snprintf(h, sizeof h, "%s refused with 503, by reason.", what);
    metrics_write_sample(f, n, "counter", h, "{reason=\"budget\"}", (double)ps.refused_budget);
    metrics_write_sample(f, n, "counter", NULL, "{reason=\"queue\"}", (double)ps.refused_queue);
    if (!ps.budget) return;
    snprintf(n, sizeof n, "ursa_inference_%s_bytes", name);
    metrics_write_sample(f, n, "gauge",
                         "Bytes of pixels being decoded, as reserved from the images' headers.",
                         NULL, (double)ps.in_use);
    snprintf(n, sizeof n, "ursa_inference_%s_budget_bytes", name);
    metrics_write_sample(f, n, "gauge", "The most bytes of pixels decoded at once.", NULL,
                         (double)ps.budget);
}

static void write_metrics(server *s, http_server *hs, FILE *f) {
    http_write_metrics(hs, f, "ursa_inference");
    batcher_stats bst;
    batcher_get_stats(s->b, &bst);
    static const char *const ble[] = {"1", "2", "4", "8", "16", "32", "64", "+Inf"};
    fprintf(f, "# HELP ursa_inference_batch_size Images per forward pass.\n"
               "# TYPE ursa_inference_batch_size histogram\n");
    uint64_t cum = 0;
    for (int k = 0; k < 8; k++) {
        cum += bst.batch_hist[k];
        fprintf(f, "ursa_inference_batch_size_bucket{le=\"%s\"} %llu\n", ble[k],
                (unsigned long long)cum);
    }
    fprintf(f, "ursa_inference_batch_size_sum %llu\nursa_inference_batch_size_count %llu\n",
            (unsigned long long)bst.images, (unsigned long long)bst.batches);
    metrics_write_sample(f, "ursa_inference_queue_depth", "gauge",
                         "Requests waiting for the model.", NULL, bst.queued);
    metrics_write_sample(f, "ursa_inference_rejected_total", "counter",
                         "Requests refused with a full queue.", NULL, (double)bst.rejected);
    metrics_write_sample(f, "ursa_inference_dropped_total", "counter",
                         "Queued images not run: their clients had gone.", NULL,
                         (double)bst.dropped);
    write_pool(f, "decode", "Images to decode", s->decode);
    metrics_write_sample(f, "ursa_inference_downloads", "gauge",
                         "Classify-url downloads in flight.", NULL, downloads_count(s->dl));
    metrics_write_sample(f, "ursa_inference_fair_share_refused_total", "counter",
                         "Requests refused 429: their address held its share (of downloads, of the decode budget).",
                         "{of=\"downloads\"}", (double)atomic_load(&s->refused_url));
    metrics_write_sample(f, "ursa_inference_fair_share_refused_total", "counter", NULL,
                         "{of=\"decode\"}", (double)atomic_load(&s->refused_decode));
    write_pool(f, "admin", "Model lookups and admin calls", s->admin);
    served *m = batcher_current(s->b);
    fprintf(f, "# HELP ursa_inference_model The model served (value 1).\n"
               "# TYPE ursa_inference_model gauge\n");
    if (m) {
        fprintf(f, "ursa_inference_model{id=");
        util_json_str(f, served_id(m));
        fprintf(f, "} 1\n");
    }
    served_release(m);
    metrics_write(f); /* the registry: latency, reloads, the Kafka consumers, readiness */
}

int h_metrics(void *ctx, http_req *r) {
    server *s = ctx;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return http_error(r, 503, "Retry-After: 1\r\n", "out of memory");
    write_metrics(s, http_req_server(r), f);
    int st = fclose(f) ? http_error(r, 503, "Retry-After: 1\r\n", "out of memory")
                       : http_reply(r, 200, "text/plain; version=0.0.4", NULL, buf, len);
    free(buf);
    return st;
}
