/* v2.c: the Open Inference Protocol's (KServe v2) health and metadata
 * routes, and TorchServe's /ping, so the probes and clients of KServe,
 * Triton and TorchServe find the server:
 *
 *   GET /v2                                    server metadata
 *   GET /v2/health/live, /v2/health/ready      {"live": true}, {"ready": ...}
 *   GET /v2/models/NAME[/versions/V]           model metadata
 *   GET /v2/models/NAME[/versions/V]/ready     {"name", "ready"}
 *   GET /ping                                  {"status": "Healthy"}
 *
 * The served model's name is its id (`GET /v1/models`), its one version
 * "1". Errors carry the protocol's body, {"error": "..."}, with 404 for an
 * unknown model or version. Inference (POST .../infer) is not here yet. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "health.h"
#include "server.h"
#include "service.h"
#include "util.h"

/* Closes f (an open_memstream on *buf and *len, set only now) and sends
 * what it holds. */
static int reply_memstream(http_req *r, int status, FILE *f, char **buf, size_t *len) {
    if (fclose(f)) {
        free(*buf);
        return http_error(r, 503, "Retry-After: 1\r\n", "out of memory");
    }
    int st = http_reply(r, status, "application/json", NULL, *buf, *len);
    free(*buf);
    return st;
}

int h_v2_server(void *ctx, http_req *r) {
    (void)ctx;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return http_error(r, 503, "Retry-After: 1\r\n", "out of memory");
    fprintf(f, "{\"name\": \"ursa\", \"version\": ");
    util_json_str(f, service_version());
    fprintf(f, ", \"extensions\": []}\n");
    return reply_memstream(r, 200, f, &buf, &len);
}

int h_v2_health(void *ctx, http_req *r) {
    server *s = ctx;
    if (!strcmp(http_path(r), "/v2/health/live"))
        return http_reply(r, 200, "application/json", NULL, "{\"live\": true}\n", 15);
    /* ready: the daemon's own checks (Redis, blobs) and a model to serve */
    served *m = batcher_current(s->b);
    char why[300] = "";
    int ok = m && health_ready(why, sizeof why);
    served_release(m);
    if (ok) return http_reply(r, 200, "application/json", NULL, "{\"ready\": true}\n", 16);
    return http_error(r, 503, "Retry-After: 1\r\n", "not ready: %s",
                      m ? why : "no model loaded");
}

int h_ping(void *ctx, http_req *r) {
    server *s = ctx;
    served *m = batcher_current(s->b);
    served_release(m);
    if (m) return http_reply(r, 200, "application/json", NULL, "{\"status\": \"Healthy\"}\n", 22);
    return http_reply(r, 503, "application/json", "Retry-After: 1\r\n",
                      "{\"status\": \"Unhealthy\"}\n", 24);
}

/* /v2/models/NAME[/versions/V][/ready] into its parts; -1 when it is none
 * of those. */
static int model_path(const char *p, char *name, size_t nn, char *ver, size_t vn, int *ready) {
    const char *rest = p + strlen("/v2/models/");
    const char *slash = strchr(rest, '/');
    size_t l = slash ? (size_t)(slash - rest) : strlen(rest);
    if (!l || l >= nn) return -1;
    memcpy(name, rest, l);
    name[l] = '\0';
    ver[0] = '\0';
    *ready = 0;
    rest += l;
    if (!strncmp(rest, "/versions/", 10)) {
        rest += 10;
        slash = strchr(rest, '/');
        l = slash ? (size_t)(slash - rest) : strlen(rest);
        if (!l || l >= vn) return -1;
        memcpy(ver, rest, l);
        ver[l] = '\0';
        rest += l;
    }
    if (!strcmp(rest, "/ready")) *ready = 1;
    else if (*rest) return -1;
    return 0;
}

int h_v2_model(void *ctx, http_req *r) {
    server *s = ctx;
    char name[200], ver[32];
    int ready;
    if (model_path(http_path(r), name, sizeof name, ver, sizeof ver, &ready))
        return http_error(r, 404, NULL, "no such route: %s", http_path(r));
    served *m = batcher_current(s->b);
    if (!m || strcmp(name, served_id(m))) {
        served_release(m);
        return http_error(r, 404, NULL, "no model %s is served (GET /v1/models lists it)", name);
    }
    if (ver[0] && strcmp(ver, "1")) {
        served_release(m);
        return http_error(r, 404, NULL, "model %s has no version %s (it has 1)", name, ver);
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        served_release(m);
        return http_error(r, 503, "Retry-After: 1\r\n", "out of memory");
    }
    fprintf(f, "{\"name\": ");
    util_json_str(f, served_id(m));
    if (ready) {
        fprintf(f, ", \"ready\": true}\n");
    } else {
        const nn_meta *mt = served_meta(m);
        int size = mt->size, c = served_nclass(m);
        fprintf(f, ", \"versions\": [\"1\"], \"platform\": \"onnx\", "
                   "\"inputs\": [{\"name\": \"input\", \"datatype\": \"FP32\", "
                   "\"shape\": [-1, %d, %d, %d]}], "
                   "\"outputs\": [{\"name\": \"output\", \"datatype\": \"FP32\", "
                   "\"shape\": [-1, %d]}], \"parameters\": {\"tta\": \"%s\", \"classes\": [",
                served_in_c(m), size, size, c, nn_tta_name(served_tta(m)));
        char cn[32];
        for (int i = 0; i < c; i++) {
            if (i) fprintf(f, ", ");
            util_json_str(f, nn_class_name(mt, i, cn, sizeof cn));
        }
        fprintf(f, "]}}\n");
    }
    served_release(m);
    return reply_memstream(r, 200, f, &buf, &len);
}
