/* ursa-console: the web console: datasets, jobs, models and the cleaner,
 * where a person keeps, deletes and relabels the images an audit found,
 * then retrains. It changes data, so:
 *  - it binds 127.0.0.1 unless told otherwise;
 *  - a login takes the console's token (console.token, or a random one
 *    written to console.token-file, mode 0600); a session is a random id
 *    in an HttpOnly, SameSite=Strict cookie, kept in this process's memory;
 *  - every POST but the login carries the session's CSRF token in the
 *    X-CSRF-Token header (403 without it), and every POST carries X-Ursa,
 *    which a cross-site form cannot send;
 *  - failed logins hold up their own client address, with a backoff
 *    (console.h), never everyone's;
 *  - the page is static HTML, CSS and JavaScript with no inline script and
 *    a strict Content-Security-Policy; everything that came from the web
 *    (labels, URLs, reasons) is put in the page as text, never as HTML;
 *  - images come only from the blob store, by a key checked to be a
 *    content hash, and only when they are JPEGs.
 * Work that needs Redis or the blob store runs on a small worker pool with
 * a Redis connection each; the HTTP event threads never wait. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "console.h"
#include "health.h"
#include "metrics.h"
#include "log.h"
#include "console_www.h"
#include "rstore.h"
#include "statedir.h"
#include "util.h"

static const char usage[] =
    "usage: ursa-console [settings]\n"
    "Serves the web console: datasets (counts, failures, live ingest), jobs (epoch\n"
    "tables, loss curves, lr_find), models (metrics, confusion matrix, most confused)\n"
    "and the cleaner (the last audit's suspects and the model's top losses as a\n"
    "gallery: keep, delete, relabel by click or key, undo, retrain). Log in with the\n"
    "token of console.token, or the one in console.token-file. Stops on SIGTERM.\n\n";

static const cfg_def console_defs[] = {
    {"console.bind", CFG_STR, "127.0.0.1", 1, 0,
     "address to listen on; the console changes data: keep it on loopback unless a proxy "
     "with TLS is in front"},
    {"console.port", CFG_INT, SERVICE_CONSOLE_PORT, 0, 65535,
     "port (0: any free one, see console.port-file)"},
    {"console.port-file", CFG_STR, "", 1, 0,
     "write the port here (default: run/console.port in the state dir)"},
    {"console.token", CFG_STR, "", 1, 0,
     "the login token (URSA_CONSOLE_TOKEN); empty: read console.token-file, or make a random "
     "one there"},
    {"console.token-file", CFG_STR, "", 1, 0,
     "where the token is kept (default: run/console.token in the state dir, or console.token "
     "beside the blob store)"},
    {"console.session-hours", CFG_INT, "12", 1, 24 * 30, "a login lasts this long"},
    {"console.cookie-secure", CFG_BOOL, "false", 1, 0,
     "mark the session cookie Secure (behind an HTTPS proxy)"},
    {"console.workers", CFG_INT, "2", 1, 64, "threads that read Redis and the blob store"},
    {"console.queue", CFG_INT, "256", 1, 1e6, "requests waiting for a worker; beyond: 503"},
    {NULL, 0, NULL, 0, 0, NULL}};

static atomic_int run = 1;

/* ---- sessions -------------------------------------------------------------------------- */

static void random_hex(char *out, size_t bytes) {
    if (util_random_hex(out, bytes)) abort(); /* no randomness: no safe session */
}

/* Constant time: a wrong token takes as long however much of it is right. */
static int same(const char *a, size_t an, const char *b, size_t bn) {
    unsigned char d = an != bn;
    for (size_t i = 0; i < an; i++) d |= (unsigned char)(a[i] ^ b[i % (bn ? bn : 1)]);
    return d == 0;
}

static int cookie_sid(http_req *r, char *sid, size_t n) {
    const char *c = http_header(r, "Cookie");
    for (const char *p = c; p && (p = strstr(p, "ursa_console=")); p++) {
        if (p != c && p[-1] != ' ' && p[-1] != ';') continue;
        p += 13;
        size_t l = strspn(p, "0123456789abcdef");
        if (l != 64 || l >= n) return 0;
        memcpy(sid, p, l);
        sid[l] = '\0';
        return 1;
    }
    return 0;
}

int console_session(console *s, http_req *r, char *csrf) {
    char sid[80];
    if (!cookie_sid(r, sid, sizeof sid)) return 0;
    int64_t now = util_now_ms();
    int ok = 0;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < CONSOLE_SESSIONS && !ok; i++) {
        session *x = &s->sessions[i];
        if (x->expires_ms > now && same(x->sid, 64, sid, 64)) {
            ok = 1;
            if (csrf) memcpy(csrf, x->csrf, 65);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

/* The guard of a client address (under s->mu): its own, a free one, or
 * the one idle longest (an address nobody has failed from for the longest
 * time), so a flood from many addresses forgets the oldest first. */
static login_guard *guard_of(console *s, const char *addr) {
    login_guard *g = NULL;
    for (int i = 0; i < CONSOLE_GUARDS; i++) {
        login_guard *x = &s->guards[i];
        if (x->addr[0] && !strcmp(x->addr, addr)) return x;
        if (!g || (g->addr[0] && (!x->addr[0] || x->last_ms < g->last_ms))) g = x;
    }
    memset(g, 0, sizeof *g);
    snprintf(g->addr, sizeof g->addr, "%s", addr);
    return g;
}

static int h_login(void *ctx, http_req *r) {
    console *s = ctx;
    if (!http_header(r, "X-Ursa")) return http_error(r, 403, NULL, "missing X-Ursa header");
    size_t len = 0;
    const char *body = http_body(r, &len);
    char tok[256], addr[48];
    if (http_client_addr(r, addr, sizeof addr)) snprintf(addr, sizeof addr, "?");
    int tl = form_get(body ? body : "", body ? len : 0, "token", tok, sizeof tok);
    int64_t now = util_now_ms(), wait_ms = 0;
    pthread_mutex_lock(&s->mu);
    login_guard *g = guard_of(s, addr);
    if (g->until_ms > now) wait_ms = g->until_ms - now;
    pthread_mutex_unlock(&s->mu);
    if (wait_ms) {
        char hdr[48];
        snprintf(hdr, sizeof hdr, "Retry-After: %lld\r\n", (long long)(wait_ms + 999) / 1000);
        return http_error(r, 429, hdr, "too many failed logins from this address");
    }
    int ok = tl > 0 && same(tok, (size_t)tl, s->token, s->token_len);
    pthread_mutex_lock(&s->mu);
    g = guard_of(s, addr); /* the slot may have been taken meanwhile */
    int fails = 0;
    if (ok) {
        memset(g, 0, sizeof *g);
    } else {
        fails = ++g->fails;
        g->last_ms = now;
        if (fails >= CONSOLE_FREE_FAILS) {
            int sh = fails - CONSOLE_FREE_FAILS;
            int64_t d = sh >= 10 ? 900000 : (int64_t)1000 << sh;
            g->until_ms = now + (d > 900000 ? 900000 : d);
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (!ok) {
        ULOG_WARN("event=login_failed addr=%s fails=%d", addr, fails);
        return http_error(r, 401, NULL, "wrong token");
    }
    session x;
    random_hex(x.sid, 32);
    random_hex(x.csrf, 32);
    x.expires_ms = now + s->session_ms;
    pthread_mutex_lock(&s->mu);
    int slot = 0; /* a free or expired slot, else the one ending first */
    for (int i = 0; i < CONSOLE_SESSIONS; i++)
        if (s->sessions[i].expires_ms < s->sessions[slot].expires_ms) slot = i;
    s->sessions[slot] = x;
    pthread_mutex_unlock(&s->mu);
    char hdr[300], json[120];
    snprintf(hdr, sizeof hdr,
             "Set-Cookie: ursa_console=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%d%s\r\n",
             x.sid, (int)(s->session_ms / 1000), s->cookie_secure ? "; Secure" : "");
    int n = snprintf(json, sizeof json, "{\"csrf\":\"%s\"}", x.csrf);
    ULOG_INFO("event=login");
    return http_reply(r, 200, "application/json", hdr, json, (size_t)n);
}

/* A state change like every other POST: X-Ursa and the session's CSRF
 * token, so another site cannot log a user out. */
static int h_logout(void *ctx, http_req *r) {
    console *s = ctx;
    char sid[80], csrf[65];
    const char *t = http_header(r, "X-CSRF-Token");
    if (console_session(s, r, csrf) &&
        (!t || !http_header(r, "X-Ursa") || !same(t, strlen(t), csrf, 64)))
        return http_error(r, 403, NULL, "missing or wrong CSRF token");
    if (cookie_sid(r, sid, sizeof sid)) {
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < CONSOLE_SESSIONS; i++)
            if (same(s->sessions[i].sid, 64, sid, 64)) memset(&s->sessions[i], 0, sizeof(session));
        pthread_mutex_unlock(&s->mu);
    }
    return http_reply(r, 200, "application/json",
                      "Set-Cookie: ursa_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0\r\n",
                      "{}", 2);
}

static int h_session(void *ctx, http_req *r) {
    char csrf[65];
    if (!console_session(ctx, r, csrf)) return http_error(r, 401, NULL, "not logged in");
    char json[120];
    int n = snprintf(json, sizeof json, "{\"csrf\":\"%s\"}", csrf);
    return http_reply(r, 200, "application/json", NULL, json, (size_t)n);
}

/* ---- the worker pool ---------------------------------------------------------------- */

typedef struct {
    console *s;
    http_req *r;
    console_fn *fn;
} work;

static __thread rstore *worker_redis;
static rstore *all_redis[64]; /* every worker's, closed at exit */
static pthread_mutex_t all_mu = PTHREAD_MUTEX_INITIALIZER;

static void run_work(void *arg) {
    work *w = arg;
    if (!worker_redis) {
        char err[256];
        worker_redis = rstore_new(w->s->sc.a.redis, 5000, err, sizeof err);
        if (worker_redis) {
            rstore_set_retry_ms(worker_redis, 2000);
            pthread_mutex_lock(&all_mu);
            for (int i = 0; i < 64; i++)
                if (!all_redis[i]) {
                    all_redis[i] = worker_redis;
                    break;
                }
            pthread_mutex_unlock(&all_mu);
        }
    }
    if (http_gone(w->r)) http_error(w->r, 503, NULL, "the client went away");
    else if (!worker_redis) http_error(w->r, 503, "Retry-After: 1\r\n", "no Redis connection");
    else w->fn(w->s, w->r, worker_redis);
    free(w);
}

int console_defer(console *s, http_req *r, console_fn *fn) {
    work *w = malloc(sizeof *w);
    if (!w || pool_reserve(s->work, 0)) {
        free(w);
        return http_error(r, 503, "Retry-After: 1\r\n", "busy: too many requests at once");
    }
    w->s = s, w->r = r, w->fn = fn;
    http_defer(r);
    pool_push(s->work, run_work, w);
    return HTTP_DEFERRED;
}

/* ---- routes ---------------------------------------------------------------------------- */

static int h_page(void *ctx, http_req *r) {
    (void)ctx;
    const char *p = http_path(r);
    if (!strcmp(p, "/app.js"))
        return http_reply(r, 200, "text/javascript; charset=utf-8", NULL, www_app_js,
                          www_app_js_len);
    if (!strcmp(p, "/app.css"))
        return http_reply(r, 200, "text/css; charset=utf-8", NULL, www_app_css, www_app_css_len);
    return http_reply(r, 200, "text/html; charset=utf-8", NULL, www_index_html,
                      www_index_html_len);
}

static int h_metrics(void *ctx, http_req *r) {
    (void)ctx; /* its http is written by main after the server starts: ask the request */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return http_error(r, 503, "Retry-After: 1\r\n", "out of memory");
    http_write_metrics(http_req_server(r), f, "ursa_console");
    metrics_write(f); /* the registry: readiness, start time, version */
    fclose(f);
    int st = http_reply(r, 200, "text/plain; version=0.0.4", NULL, buf, len);
    free(buf);
    return st;
}

/* GET /api/...: a session, then the worker. */
#define API_GET(name, fn)                                                                       \
    static int name(void *ctx, http_req *r) {                                                   \
        if (!console_session(ctx, r, NULL)) return http_error(r, 401, NULL, "not logged in");    \
        return console_defer(ctx, r, fn);                                                       \
    }
/* POST /api/...: a session and its CSRF token. */
#define API_POST(name, fn)                                                                      \
    static int name(void *ctx, http_req *r) {                                                   \
        char csrf[65];                                                                          \
        if (!console_session(ctx, r, csrf)) return http_error(r, 401, NULL, "not logged in");    \
        const char *t = http_header(r, "X-CSRF-Token");                                         \
        if (!t || !http_header(r, "X-Ursa") || !same(t, strlen(t), csrf, 64))                   \
            return http_error(r, 403, NULL, "missing or wrong CSRF token");                     \
        return console_defer(ctx, r, fn);                                                       \
    }
API_GET(h_datasets, api_datasets)
API_GET(h_dataset, api_dataset)
API_GET(h_jobs, api_jobs)
API_GET(h_job, api_job)
API_GET(h_models, api_models)
API_GET(h_model, api_model)
API_GET(h_suspects, api_suspects)
API_GET(h_thumb, api_thumb)
API_POST(h_edit, api_edit)
API_POST(h_retrain, api_retrain)

/* the page's own files only; no inline script or style; no frames */
const char console_csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
                           "img-src 'self'; connect-src 'self'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'";

const http_route console_routes[] = {
    {"/api/login", "POST", h_login, "login", 1},
    {"/api/logout", "POST", h_logout, "logout", 0},
    {"/api/session", "GET,HEAD", h_session, "session", 0},
    {"/api/datasets", "GET,HEAD", h_datasets, "datasets", 0},
    {"/api/dataset", "GET,HEAD", h_dataset, "dataset", 0},
    {"/api/jobs", "GET,HEAD", h_jobs, "jobs", 0},
    {"/api/job", "GET,HEAD", h_job, "job", 0},
    {"/api/models", "GET,HEAD", h_models, "models", 0},
    {"/api/model", "GET,HEAD", h_model, "model", 0},
    {"/api/suspects", "GET,HEAD", h_suspects, "suspects", 0},
    {"/api/thumb", "GET,HEAD", h_thumb, "thumb", 0},
    {"/api/edit", "POST", h_edit, "edit", 1},
    {"/api/retrain", "POST", h_retrain, "retrain", 1},
    {"/healthz", "GET,HEAD", health_healthz, "healthz", 0},
    {"/readyz", "GET,HEAD", health_readyz, "readyz", 0},
    {"/metrics", "GET,HEAD", h_metrics, "metrics", 0},
    {"/", "GET,HEAD", h_page, "page", 0},
    {"/index.html", "GET,HEAD", h_page, "page", 0},
    {"/app.js", "GET,HEAD", h_page, "page", 0},
    {"/app.css", "GET,HEAD", h_page, "page", 0},
    {NULL, NULL, NULL, NULL, 0}};

/* ---- start ----------------------------------------------------------------------------- */

/* The token: the setting, else the file's, else a new random one in the
 * file. 0, or -1 after logging why. */
static int load_token(console *s) {
    const cfg *c = s->c;
    const char *t = cfg_str(c, "console.token");
    if (*t) {
        snprintf(s->token, sizeof s->token, "%s", t);
        s->token_len = strlen(s->token);
        /* copied: neither in /proc/PID/environ nor in children's (the
         * setting's text may be that memory: it is not read again) */
        util_env_scrub("URSA_CONSOLE_TOKEN");
        if (s->token_len < 16) {
            fprintf(stderr, "ursa-console: console.token must be 16 characters or more\n");
            return -1;
        }
        return 0;
    }
    char path[PATH_MAX];
    const char *f = cfg_str(c, "console.token-file");
    if (*f) {
        snprintf(path, sizeof path, "%s", f);
    } else if (statedir_path(c, "run/console.token", path, sizeof path) != URSA_OK) {
        char b[PATH_MAX];
        snprintf(b, sizeof b, "%s", s->sc.a.blobs);
        snprintf(path, sizeof path, "%s/console.token", dirname(b));
    }
    char *data = NULL;
    size_t len = 0;
    if (util_read_file(path, 200, &data, &len) == URSA_OK) {
        while (len && (data[len - 1] == '\n' || data[len - 1] == '\r')) len--;
        if (len >= 16 && len < sizeof s->token) {
            memcpy(s->token, data, len);
            s->token[len] = '\0';
            s->token_len = len;
        }
        free(data);
        if (s->token_len) {
            ULOG_INFO("event=token file=%s", path);
            return 0;
        }
    }
    random_hex(s->token, 24);
    s->token_len = strlen(s->token);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, s->token, s->token_len) != (ssize_t)s->token_len) {
        fprintf(stderr, "ursa-console: cannot write the token to %s: %s\n", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    ULOG_INFO("event=token file=%s note=\"a new random token\"", path);
    return 0;
}

int main(int argc, char **argv) {
    const cfg_def *const tables[] = {cfg_defs_base, cfg_defs_kafka, cfg_defs_redis, cfg_defs_blob,
                                     console_defs, NULL};
    cfg *c;
    int argi, rc = service_setup("console", SERVICE_OWN_HTTP, usage, tables, argc, argv, &c,
                                 &argi);
    if (rc >= 0) return rc;
    service_signals(&run);
    static console s;
    s.c = c;
    pthread_mutex_init(&s.mu, NULL);
    pthread_mutex_init(&s.cache_mu, NULL);
    s.session_ms = cfg_int(c, "console.session-hours") * 3600000LL;
    s.cookie_secure = cfg_bool(c, "console.cookie-secure");
    char err[512];
    if (service_connect(c, "ursa-console", &s.sc, &rc)) goto out;
    rc = 2;
    if (load_token(&s)) goto out;
    rc = 1;
    if (!(s.work = pool_new((int)cfg_int(c, "console.workers"), 0, (int)cfg_int(c, "console.queue")))) {
        fprintf(stderr, "ursa-console: cannot start the workers\n");
        goto out;
    }
    http_opts o = http_opts_default();
    o.bind = cfg_str(c, "console.bind");
    o.port = (int)cfg_int(c, "console.port");
    o.routes = console_routes;
    o.ctx = &s;
    o.csp = console_csp;
    o.max_body = 64 << 10;
    if (!(s.http = http_start(&o, err, sizeof err))) {
        fprintf(stderr, "ursa-console: %s\n", err);
        ULOG_ERROR("event=listen_failed err=\"%s\"", err);
        goto out;
    }
    int port = http_port(s.http);
    char pfb[PATH_MAX], ps[16];
    const char *pf = cfg_str(c, "console.port-file");
    if (!*pf && statedir_path(c, "run/console.port", pfb, sizeof pfb) == URSA_OK) pf = pfb;
    if (*pf) util_write_file_atomic(pf, ps, (size_t)snprintf(ps, sizeof ps, "%d\n", port));
    ULOG_INFO("event=started addr=%s:%d redis=%s blobs=%s", o.bind, port, s.sc.a.redis_shown,
              s.sc.a.blobs);
    char addr[80];
    snprintf(addr, sizeof addr, "http://%s:%d/", o.bind, port);
    while (run) {
        if (service_beat_due()) {
            const char *kv[] = {"url", addr, NULL};
            service_beat(s.sc.r, kv);
        }
        util_sleep_ms(200);
    }
    ULOG_INFO("event=stopping");
    http_drain(s.http, 3000);
    rc = 0;
out:
    pool_free(s.work);
    http_stop(s.http);
    for (int i = 0; i < 64; i++) rstore_destroy(all_redis[i]);
    for (int i = 0; i < 4; i++) free(s.audits[i].rows);
    service_disconnect(&s.sc);
    cfg_destroy(c);
    return rc;
}
