/* metrics.c: GET /metrics, Prometheus text: the HTTP layer's counts
 * (connections, requests by route and status, refusals by reason), the
 * classification latency, batching, the decode budget and the pools, and
 * the model served. */
#include <stdio.h>
#include <stdlib.h>

#include "server.h"
#include "util.h"

static const double lat_le[NLAT] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,   0.25,   0.5,   1,    2.5};

void metrics_latency(server *s, double secs) {
    int k = 0;
    while (k < NLAT && secs > lat_le[k]) k++;
    pthread_mutex_lock(&s->mmu);
    s->lat[k]++;
    s->lat_sum += secs;
    s->lat_n++;
    pthread_mutex_unlock(&s->mmu);
}

/* one metric: its HELP, TYPE and a value line */
static void metric(FILE *f, const char *name, const char *type, const char *help,
                   const char *labels, unsigned long long v) {
    if (help) fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    fprintf(f, "%s%s %llu\n", name, labels ? labels : "", v);
}

static void write_pool(FILE *f, const char *name, const char *what, pool *p) {
    pool_stats ps;
    pool_get_stats(p, &ps);
    char n[96], h[160];
    snprintf(n, sizeof n, "ursa_inference_%s_queued", name);
    snprintf(h, sizeof h, "%s waiting for a thread.", what);
    metric(f, n, "gauge", h, NULL, (unsigned long long)ps.queued);
    snprintf(n, sizeof n, "ursa_inference_%s_running", name);
    snprintf(h, sizeof h, "%s running.", what);
    metric(f, n, "gauge", h, NULL, (unsigned long long)ps.running);
    snprintf(n, sizeof n, "ursa_inference_%s_refused_total", name);
    snprintf(h, sizeof h, "%s refused with 503, by reason.", what);
    metric(f, n, "counter", h, "{reason=\"budget\"}", ps.refused_budget);
    metric(f, n, "counter", NULL, "{reason=\"queue\"}", ps.refused_queue);
    if (!ps.budget) return;
    snprintf(n, sizeof n, "ursa_inference_%s_bytes", name);
    metric(f, n, "gauge", "Bytes of pixels being decoded, as reserved from the images' headers.",
           NULL, ps.in_use);
    snprintf(n, sizeof n, "ursa_inference_%s_budget_bytes", name);
    metric(f, n, "gauge", "The most bytes of pixels decoded at once.", NULL, ps.budget);
}

static void write_metrics(server *s, http_server *hs, FILE *f) {
    http_write_metrics(hs, f, "ursa_inference");
    fprintf(f, "# HELP ursa_inference_request_seconds Classification latency.\n"
               "# TYPE ursa_inference_request_seconds histogram\n");
    pthread_mutex_lock(&s->mmu);
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
    batcher_stats bst;
    batcher_get_stats(s->b, &bst);
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
               "# TYPE ursa_inference_rejected_total counter\nursa_inference_rejected_total %llu\n"
               "# HELP ursa_inference_dropped_total Queued images not run: their clients had gone.\n"
               "# TYPE ursa_inference_dropped_total counter\nursa_inference_dropped_total %llu\n",
            bst.queued, (unsigned long long)bst.rejected, (unsigned long long)bst.dropped);
    write_pool(f, "decode", "Images to decode", s->decode);
    write_pool(f, "slow", "Downloads, registry lookups and admin calls", s->slow);
    served *m = batcher_current(s->b);
    fprintf(f, "# HELP ursa_inference_model The model served (value 1).\n"
               "# TYPE ursa_inference_model gauge\n");
    if (m) {
        fprintf(f, "ursa_inference_model{id=");
        util_json_str(f, served_id(m));
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
