/* v2.c: the Open Inference Protocol's (KServe v2) health and metadata
 * routes, and TorchServe's /ping, so the probes and clients of KServe,
 * Triton and TorchServe find the server:
 *
 *   GET /v2                                    server metadata
 *   GET /v2/health/live, /v2/health/ready      {"live": true}, {"ready": ...}
 *   GET /v2/models/NAME[/versions/V]           model metadata
 *   GET /v2/models/NAME[/versions/V]/ready     {"name", "ready"}
 *   POST /v2/models/NAME[/versions/V]/infer    inference on FP32 tensors
 *   GET /ping                                  {"status": "Healthy"}
 *
 * The served model's name is its id (`GET /v1/models`), its one version
 * "1". Errors carry the protocol's body, {"error": "..."}, with 404 for an
 * unknown model or version and 400 for a request that does not hold (the
 * JSON read by jansson, every field checked before a float is used). */
#include <jansson.h>
#include <math.h>
#include <stdatomic.h>
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

/* /v2/models/NAME[/versions/V][/ready|/infer] into its parts; -1 when it
 * is none of those. */
static int model_path(const char *p, char *name, size_t nn, char *ver, size_t vn, int *ready,
                      int *infer) {
    const char *rest = p + strlen("/v2/models/");
    const char *slash = strchr(rest, '/');
    size_t l = slash ? (size_t)(slash - rest) : strlen(rest);
    if (!l || l >= nn) return -1;
    memcpy(name, rest, l);
    name[l] = '\0';
    ver[0] = '\0';
    *ready = *infer = 0;
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
    else if (!strcmp(rest, "/infer")) *infer = 1;
    else if (*rest) return -1;
    return 0;
}

/* ---- inference ------------------------------------------------------------- */

/* One infer request: its n images go through the batcher one by one (so
 * they batch with everyone's), and the last to finish answers. */
typedef struct {
    http_req *r;
    served *m;
    int n, c;
    atomic_int left;
    _Atomic ursa_err err;
    float *x, *probs;
    json_t *id; /* the request's "id", echoed */
} infer_job;

static void infer_free(infer_job *j) {
    served_release(j->m);
    free(j->x);
    free(j->probs);
    json_decref(j->id);
    free(j);
}

static void infer_answer(infer_job *j) {
    ursa_err e = atomic_load(&j->err);
    if (e) {
        http_error(j->r, 503, "Retry-After: 1\r\n", "%s",
                   e == URSA_ERR_UNAVAILABLE ? "busy: the queue is full"
                   : e == URSA_ERR_SHUTDOWN  ? "the server is stopping"
                                             : ursa_err2str(e));
        infer_free(j);
        return;
    }
    json_t *data = json_array(), *out = json_object();
    for (size_t i = 0; data && i < (size_t)j->n * j->c; i++)
        json_array_append_new(data, json_real(j->probs[i]));
    json_object_set_new(out, "model_name", json_string(served_id(j->m)));
    json_object_set_new(out, "model_version", json_string("1"));
    if (j->id) json_object_set(out, "id", j->id);
    json_object_set_new(out, "outputs",
                        json_pack("[{s:s, s:s, s:[i, i], s:o}]", "name", "output", "datatype",
                                  "FP32", "shape", j->n, j->c, "data", data));
    char *text = json_dumps(out, JSON_REAL_PRECISION(9));
    json_decref(out);
    if (!text) http_error(j->r, 503, "Retry-After: 1\r\n", "out of memory");
    else http_reply(j->r, 200, "application/json", NULL, text, strlen(text));
    free(text);
    infer_free(j);
}

static void infer_one_done(void *arg, ursa_err e) {
    infer_job *j = arg;
    if (e) {
        ursa_err none = URSA_OK;
        atomic_compare_exchange_strong(&j->err, &none, e);
    }
    if (atomic_fetch_sub(&j->left, 1) == 1) infer_answer(j);
}

/* Reads the one input tensor of a v2 request into j (shape, datatype,
 * count and every value checked); NULL, or why it is refused. */
static const char *read_input(const json_t *req, served *m, int max_batch, infer_job *j,
                              char *why, size_t wn) {
    const json_t *inputs = json_object_get(req, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) != 1)
        return "\"inputs\" must be an array of one tensor, \"input\"";
    const json_t *in = json_array_get(inputs, 0), *shape = json_object_get(in, "shape");
    const char *name = json_string_value(json_object_get(in, "name"));
    const char *dt = json_string_value(json_object_get(in, "datatype"));
    if (!name || strcmp(name, "input")) return "the model's input is named \"input\"";
    if (!dt || strcmp(dt, "FP32")) return "\"datatype\" must be \"FP32\"";
    int size = served_meta(m)->size, in_c = served_in_c(m);
    json_int_t want[4] = {-1, in_c, size, size};
    if (!json_is_array(shape) || json_array_size(shape) != 4) {
        snprintf(why, wn, "\"shape\" must be [N, %d, %d, %d]", in_c, size, size);
        return why;
    }
    for (int k = 0; k < 4; k++) {
        const json_t *d = json_array_get(shape, (size_t)k);
        if (!json_is_integer(d) || (k && json_integer_value(d) != want[k]) ||
            (!k && json_integer_value(d) < 1)) {
            snprintf(why, wn, "\"shape\" must be [N, %d, %d, %d] with N >= 1", in_c, size, size);
            return why;
        }
    }
    json_int_t n = json_integer_value(json_array_get(shape, 0));
    if (n > max_batch) { /* a 413: the caller tells by the prefix */
        snprintf(why, wn, "413: a batch of %lld images; at most %d (inference.max-batch)",
                 (long long)n, max_batch);
        return why;
    }
    size_t per = (size_t)in_c * size * size, count = (size_t)n * per;
    const json_t *data = json_object_get(in, "data");
    if (!json_is_array(data) || json_array_size(data) != count) {
        snprintf(why, wn, "\"data\" must be a flat array of %zu numbers (the shape's product); "
                          "it has %zu", count, json_is_array(data) ? json_array_size(data) : 0);
        return why;
    }
    j->n = (int)n;
    if (!(j->x = malloc(sizeof(float) * count))) return "out of memory";
    for (size_t i = 0; i < count; i++) {
        const json_t *v = json_array_get(data, i);
        double d = json_number_value(v);
        if (!json_is_number(v) || !isfinite(d) || fabs(d) > 3.4e38) {
            snprintf(why, wn, "\"data\"[%zu] is not a finite FP32 number", i);
            return why;
        }
        j->x[i] = (float)d;
    }
    return NULL;
}

static int v2_infer(server *s, http_req *r, served *m) {
    size_t len;
    const char *body = http_body(r, &len);
    json_error_t jerr;
    json_t *req = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(req)) {
        json_decref(req);
        served_release(m);
        return http_error(r, 400, NULL, "the body is not a JSON object: %s (line %d, column %d)",
                          jerr.text, jerr.line, jerr.column);
    }
    infer_job *j = calloc(1, sizeof *j);
    char why[300];
    const char *bad = j ? read_input(req, m, (int)cfg_int(s->c, "inference.max-batch"), j, why,
                                     sizeof why)
                        : "out of memory";
    if (!bad && j) {
        j->c = served_nclass(m);
        json_t *id = json_object_get(req, "id");
        if (id && !json_is_string(id)) bad = "\"id\" must be a string";
        else if (id) j->id = json_incref(id);
        if (!bad && !(j->probs = malloc(sizeof(float) * (size_t)j->n * j->c))) bad = "out of memory";
    }
    json_decref(req);
    if (bad) {
        int st = !strncmp(bad, "413: ", 5) ? 413 : !strcmp(bad, "out of memory") ? 503 : 400;
        if (j) {
            j->m = m;
            infer_free(j);
        } else {
            served_release(m);
        }
        return http_error(r, st, st == 503 ? "Retry-After: 1\r\n" : NULL, "%s",
                          st == 413 ? bad + 5 : bad);
    }
    j->r = r;
    j->m = m;
    atomic_init(&j->left, j->n);
    atomic_init(&j->err, URSA_OK);
    size_t per = (size_t)served_in_c(m) * served_meta(m)->size * served_meta(m)->size;
    http_defer(r);
    batcher_arriving(s->b, j->n);
    int n = j->n, c = j->c;
    for (int i = 0; i < n; i++) { /* j may be answered and freed by the last done */
        ursa_err e = batcher_submit(s->b, m, j->x + per * (size_t)i, j->probs + (size_t)c * i,
                                    infer_one_done, NULL, j);
        if (e) {
            batcher_arriving(s->b, -1);
            infer_one_done(j, e);
        }
    }
    return HTTP_DEFERRED;
}

int h_v2_model(void *ctx, http_req *r) {
    server *s = ctx;
    char name[200], ver[32];
    int ready, infer;
    if (model_path(http_path(r), name, sizeof name, ver, sizeof ver, &ready, &infer))
        return http_error(r, 404, NULL, "no such route: %s", http_path(r));
    int post = !strcmp(http_method(r), "POST");
    if (post != infer)
        return http_error(r, 405, infer ? "Allow: POST\r\n" : "Allow: GET, HEAD\r\n",
                          "%s takes %s", http_path(r), infer ? "POST" : "GET");
    served *m = batcher_current(s->b);
    if (!m || strcmp(name, served_id(m))) {
        served_release(m);
        return http_error(r, 404, NULL, "no model %s is served (GET /v1/models lists it)", name);
    }
    if (ver[0] && strcmp(ver, "1")) {
        served_release(m);
        return http_error(r, 404, NULL, "model %s has no version %s (it has 1)", name, ver);
    }
    if (infer) return v2_infer(s, r, m); /* takes m's reference */
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
