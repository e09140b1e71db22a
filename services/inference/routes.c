/* routes.c: ursa-inference's route table, like redis's command table: the
 * path, the methods, the handler, the name its metrics carry, and whether
 * it takes a body. The HTTP layer (common/io/http.h) answers 404, 405 and 413
 * from it before a handler runs. The small handlers live here too. */
#include <stdlib.h>
#include <string.h>

#include "health.h"
#include "inference_openapi.h"
#include "page.h"
#include "server.h"

/* Ready: what every daemon needs (common/daemon/health.h), and a model. */
static int h_ready(void *ctx, http_req *r) {
    server *s = ctx;
    served *m = batcher_current(s->b);
    int st = m ? health_readyz(ctx, r)
               : http_reply(r, 503, "text/plain", "Retry-After: 1\r\n", "no model loaded\n", 16);
    served_release(m);
    return st;
}

static int h_page(void *ctx, http_req *r) {
    (void)ctx;
    const char *p = http_path(r);
    if (!strcmp(p, "/app.js"))
        return http_reply(r, 200, "text/javascript; charset=utf-8", NULL, page_js,
                          sizeof page_js - 1);
    if (!strcmp(p, "/app.css"))
        return http_reply(r, 200, "text/css; charset=utf-8", NULL, page_css, sizeof page_css - 1);
    return http_reply(r, 200, "text/html; charset=utf-8", NULL, page_html, sizeof page_html - 1);
}

/* services/inference/openapi.json: every route, checked against this
 * table and by a validator in integration.inference */
static int h_openapi(void *ctx, http_req *r) {
    (void)ctx;
    return http_reply(r, 200, "application/json", NULL, www_openapi_json, www_openapi_json_len);
}

const char inference_csp[] = PAGE_CSP;

const http_route inference_routes[] = {
    {"/v1/classify", "POST", h_classify, "classify", 1},
    {"/v1/classify-url", "GET,HEAD", h_classify_url, "classify_url", 0},
    {"/v1/models", "GET,HEAD", h_models, "models", 0},
    {"/v1/admin/*", "POST", h_admin, "admin", 0},
    {"/v2", "GET,HEAD", h_v2_server, "v2_server", 0},
    {"/v2/health/live", "GET,HEAD", h_v2_health, "v2_health", 0},
    {"/v2/health/ready", "GET,HEAD", h_v2_health, "v2_health", 0},
    {"/v2/models/*", "GET,HEAD,POST", h_v2_model, "v2_model", 1},
    {"/ping", "GET,HEAD", h_ping, "ping", 0},
    {"/openapi.json", "GET,HEAD", h_openapi, "openapi", 0},
    {"/healthz", "GET,HEAD", health_healthz, "healthz", 0},
    {"/readyz", "GET,HEAD", h_ready, "readyz", 0},
    {"/metrics", "GET,HEAD", h_metrics, "metrics", 0},
    {"/", "GET,HEAD", h_page, "page", 0},
    {"/index.html", "GET,HEAD", h_page, "page", 0},
    {"/app.js", "GET,HEAD", h_page, "page", 0},
    {"/app.css", "GET,HEAD", h_page, "page", 0},
    {NULL, NULL, NULL, NULL, 0}};

/* ---- the admin pool ------------------------------------------------------------ */

typedef struct {
    server *s;
    http_req *r;
    void (*fn)(server *s, http_req *r);
} slow_job;

static void run_slow(void *arg) {
    slow_job *j = arg;
    if (http_gone(j->r)) http_error(j->r, 503, "Retry-After: 1\r\n", "the client went away");
    else j->fn(j->s, j->r);
    free(j);
}

int defer_admin(server *s, http_req *r, void (*fn)(server *s, http_req *r)) {
    slow_job *j = malloc(sizeof *j);
    if (!j || pool_reserve(s->admin, 0)) {
        free(j);
        return http_error(r, 503, "Retry-After: 1\r\n", "busy: too many model and admin calls at once");
    }
    j->s = s, j->r = r, j->fn = fn;
    http_defer(r);
    pool_push(s->admin, run_slow, j);
    return HTTP_DEFERRED;
}
