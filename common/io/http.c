/* http.c: the HTTP layer on libmicrohttpd; see http.h.
 *
 * A request's life: libmicrohttpd reads the line and headers and calls
 * ahc() (the "access handler"); the first call checks the framing, finds
 * the route and the body's size; later calls hand over the body; the last
 * one runs the route's handler, which answers at once (queued right there)
 * or defers: http_reply from another thread stores the answer. The
 * connection is suspended when the handler returns (libmicrohttpd allows
 * that only on its own thread), under the request's lock, so an answer that
 * came first is queued at once instead, and a later one resumes the
 * connection; libmicrohttpd then calls ahc() once more to queue it. (A
 * resume before the suspend would cancel the suspend and leave the
 * connection asleep with no answer.) A request is freed when both
 * libmicrohttpd (completed()) and a deferred answer are done with it.
 *
 * Deadlines: each connection has an entry in a list (notify_conn adds it
 * when the connection opens and takes it out when it closes, before its
 * socket is closed, under the list's lock). A sweeper thread shuts down the
 * socket of a connection still reading its headers or body past its
 * deadline; libmicrohttpd then sees the end of the stream and cleans up. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define DEFAULT_CSP                                                                                \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: https:; " \
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

enum { PH_HEADERS, PH_BODY, PH_HANDLING };

/* one open connection */
typedef struct conn {
    int fd;
    _Atomic int64_t t0; /* this request's start (or the end of the last); the
                           sweeper reads it */
    atomic_int phase;
    int killed;
    struct conn *prev, *next;
} conn;

enum { RQ_NEW, RQ_HANDLING, RQ_DEFERRED, RQ_READY, RQ_DONE, RQ_REFUSED };

struct http_req {
    http_server *s;
    struct MHD_Connection *c;
    conn *cn;
    const http_route *rt;
    int route_idx; /* -1: none matched */
    char method[16];
    char *path;
    uint8_t *body;
    size_t len, cap;
    int body_mapped; /* body is its own mapping (body_alloc) */
    atomic_int state;
    atomic_int refs;   /* libmicrohttpd's, and a deferred answer's */
    int in_handler;    /* refusals: answers are queued directly */
    int suspended;     /* under mu: the connection is suspended */
    int close;         /* the answer closes the connection */
    int status;
    char id[72];        /* X-Request-Id: the client's, when it is a sane one, or made */
    struct MHD_Response *resp;
    pthread_mutex_t mu; /* state changes of a deferred request; http_gone */
    struct http_req *dprev, *dnext; /* the server's deferred requests */
};

#define MAX_STATUSES 24
#define MAX_REASONS 16

typedef struct {
    int status;
    unsigned long long n;
} stat_n;

struct http_server {
    http_opts o;
    struct MHD_Daemon *d;
    int port, nroutes;
    atomic_int stopping;
    atomic_int handling; /* handlers running now (the drain waits for them) */
    atomic_size_t body_bytes; /* bodies being received or held, in bytes (o.max_body_total) */
    int quiesced_fd; /* the listening socket, once http_drain took it back */
    /* connections and their deadlines */
    pthread_mutex_t cmu;
    conn *conns;
    atomic_long open, opened;
    atomic_int deferred;
    pthread_mutex_t dmu; /* the list of deferred requests */
    http_req *dlist;
    pthread_t sweeper;
    int sweeping;
    pthread_mutex_t smu; /* the sweeper's sleep */
    pthread_cond_t scv;
    /* metrics */
    pthread_mutex_t mmu;
    stat_n *by_route; /* nroutes + 1 rows (the last: no route) of MAX_STATUSES */
    int *first_named; /* a route's row: the first route of its name */
    struct {
        char reason[32];
        unsigned long long n;
    } refused[MAX_REASONS];
};


http_opts http_opts_default(void) {
    http_opts o = {0};
    o.bind = "127.0.0.1";
    o.port = 8080;
    o.connection_limit = 4096;
    o.per_ip_limit = 64;
    o.header_timeout_ms = 10000;
    o.request_timeout_ms = 60000;
    o.idle_timeout_s = 10;
    o.memory_limit = 64 * 1024;
    o.max_body = 20000000;
    o.max_body_total = (size_t)256 << 20;
    return o;
}

/* ---- metrics -------------------------------------------------------------- */

static void count_refused(http_server *s, const char *reason) {
    pthread_mutex_lock(&s->mmu);
    int i = 0;
    while (i < MAX_REASONS && s->refused[i].reason[0] && strcmp(s->refused[i].reason, reason)) i++;
    if (i == MAX_REASONS) i = MAX_REASONS - 1; /* a full table lumps the rest together */
    if (!s->refused[i].reason[0]) snprintf(s->refused[i].reason, sizeof s->refused[i].reason, "%s", reason);
    s->refused[i].n++;
    pthread_mutex_unlock(&s->mmu);
}

static void count_status(http_server *s, int route, int status) {
    pthread_mutex_lock(&s->mmu);
    stat_n *row =
        s->by_route + (size_t)(route < 0 ? s->nroutes : s->first_named[route]) * MAX_STATUSES;
    int i = 0;
    while (i < MAX_STATUSES - 1 && row[i].status && row[i].status != status) i++;
    row[i].status = status;
    row[i].n++;
    pthread_mutex_unlock(&s->mmu);
}

void http_write_metrics(http_server *s, FILE *f, const char *p) {
    fprintf(f, "# HELP %s_http_connections Open HTTP connections.\n# TYPE %s_http_connections gauge\n"
               "%s_http_connections %ld\n",
            p, p, p, atomic_load(&s->open));
    fprintf(f, "# HELP %s_http_connections_total HTTP connections accepted.\n"
               "# TYPE %s_http_connections_total counter\n%s_http_connections_total %ld\n",
            p, p, p, atomic_load(&s->opened));
    fprintf(f, "# HELP %s_http_body_bytes Request bodies in memory (reserved at their length).\n"
               "# TYPE %s_http_body_bytes gauge\n%s_http_body_bytes %zu\n",
            p, p, p, atomic_load(&s->body_bytes));
    fprintf(f, "# HELP %s_requests_total HTTP requests answered, by route and status.\n"
               "# TYPE %s_requests_total counter\n",
            p, p);
    pthread_mutex_lock(&s->mmu);
    for (int r = 0; r <= s->nroutes; r++)
        for (int i = 0; i < MAX_STATUSES; i++) {
            const stat_n *e = &s->by_route[(size_t)r * MAX_STATUSES + i];
            if (e->status)
                fprintf(f, "%s_requests_total{route=\"%s\",status=\"%d\"} %llu\n", p,
                        r < s->nroutes ? s->o.routes[r].name : "none", e->status, e->n);
        }
    fprintf(f, "# HELP %s_http_refused_total Requests and connections the HTTP layer refused "
               "or closed, by reason.\n# TYPE %s_http_refused_total counter\n",
            p, p);
    for (int i = 0; i < MAX_REASONS && s->refused[i].reason[0]; i++)
        fprintf(f, "%s_http_refused_total{reason=\"%s\"} %llu\n", p, s->refused[i].reason,
                s->refused[i].n);
    pthread_mutex_unlock(&s->mmu);
}

/* libmicrohttpd's own refusals come through its log: counted by reason */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
    http_server *s = cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    const char *code = strstr(msg, "response code is ");
    char reason[32];
    if (code) snprintf(reason, sizeof reason, "http_%d", atoi(code + 17));
    else if (strstr(msg, "Host")) snprintf(reason, sizeof reason, "no_host");
    else if (strstr(msg, "limit")) snprintf(reason, sizeof reason, "connection_limit");
    else reason[0] = '\0';
    if (reason[0]) count_refused(s, reason);
    char q[600];
    ULOG_DEBUG("event=http_layer reason=%s msg=%s", reason[0] ? reason : "-",
               ulog_quote(q, sizeof q, msg));
}

/* ---- requests ---------------------------------------------------------------- */

/* A body of n bytes: large ones in a mapping of their own, so their memory
 * goes back to the system when they are freed (malloc keeps what its
 * heap held: 200 bodies of 20 MB left 1.28 GB behind after they closed). */
#define BODY_MAP_MIN (256 << 10)
static uint8_t *body_alloc(http_req *r, size_t n) {
    r->body_mapped = n >= BODY_MAP_MIN;
    if (!r->body_mapped) return malloc(n);
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void req_unref(http_req *r) {
    if (atomic_fetch_sub(&r->refs, 1) != 1) return;
    if (r->resp) MHD_destroy_response(r->resp);
    pthread_mutex_destroy(&r->mu);
    free(r->path);
    if (r->body && r->body_mapped) munmap(r->body, r->cap);
    else free(r->body);
    if (r->cap) atomic_fetch_sub(&r->s->body_bytes, r->cap);
    free(r);
}

const char *http_method(const http_req *r) { return r->method; }
const char *http_request_id(const http_req *r) { return r->id; }
const char *http_path(const http_req *r) { return r->path; }
const char *http_route_name(const http_req *r) { return r->rt ? r->rt->name : "none"; }

http_server *http_req_server(const http_req *r) { return r->s; }

int http_client_addr(const http_req *r, char *out, size_t n) {
    out[0] = '\0';
    const union MHD_ConnectionInfo *ci =
        r->c ? MHD_get_connection_info(r->c, MHD_CONNECTION_INFO_CLIENT_ADDRESS) : NULL;
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (!sa) return -1;
    const void *a = sa->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                    : sa->sa_family == AF_INET6
                        ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                        : NULL;
    return a && inet_ntop(sa->sa_family, a, out, (socklen_t)n) ? 0 : -1;
}

const char *http_header(const http_req *r, const char *name) {
    return MHD_lookup_connection_value(r->c, MHD_HEADER_KIND, name);
}

int http_query(const http_req *r, const char *name, char *out, size_t n) {
    http_req *w = (http_req *)r; /* the lock: an answer may not resume the connection meanwhile */
    if (n) out[0] = '\0';
    pthread_mutex_lock(&w->mu);
    int st = atomic_load(&w->state), l = -1;
    /* once answered, libmicrohttpd may free the connection's strings */
    const char *v = st == RQ_HANDLING || st == RQ_DEFERRED
                        ? MHD_lookup_connection_value(r->c, MHD_GET_ARGUMENT_KIND, name)
                        : NULL;
    if (v) {
        size_t vl = strlen(v);
        if (vl >= n) l = -2;
        else memcpy(out, v, vl + 1), l = (int)vl;
    }
    pthread_mutex_unlock(&w->mu);
    return l;
}

const void *http_body(const http_req *r, size_t *len) {
    *len = r->len;
    return r->body ? r->body : (const void *)"";
}

/* "Name: value\r\n..." into the response */
static void add_headers(struct MHD_Response *resp, const char *h) {
    while (h && *h) {
        const char *e = strstr(h, "\r\n"), *colon = strchr(h, ':');
        size_t ll = e ? (size_t)(e - h) : strlen(h);
        if (colon && (size_t)(colon - h) < ll) {
            char name[128], val[1024];
            size_t nl = (size_t)(colon - h), vl;
            const char *v = colon + 1;
            while (*v == ' ') v++;
            vl = ll - (size_t)(v - h);
            if (nl < sizeof name && vl < sizeof val) {
                memcpy(name, h, nl), name[nl] = '\0';
                memcpy(val, v, vl), val[vl] = '\0';
                MHD_add_response_header(resp, name, val);
            }
        }
        h = e ? e + 2 : h + ll;
    }
}

static struct MHD_Response *make_response(http_req *r, const char *ctype, const char *headers,
                                          const void *body, size_t len) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp) return NULL;
    MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (!strncasecmp(ctype, "text/html", 9))
        MHD_add_response_header(resp, "Content-Security-Policy",
                                r->s->o.csp ? r->s->o.csp : DEFAULT_CSP);
    add_headers(resp, headers);
    if (r->id[0]) MHD_add_response_header(resp, "X-Request-Id", r->id);
    if (r->close) MHD_add_response_header(resp, "Connection", "close");
    return resp;
}

static void dlist_remove(http_server *s, http_req *r) {
    pthread_mutex_lock(&s->dmu);
    if (r->dprev) r->dprev->dnext = r->dnext;
    else if (s->dlist == r) s->dlist = r->dnext;
    if (r->dnext) r->dnext->dprev = r->dprev;
    r->dprev = r->dnext = NULL;
    pthread_mutex_unlock(&s->dmu);
}

/* A deferred request's answer: stored, and the connection resumed so that
 * libmicrohttpd calls ahc() again to queue it. 0 when it was answered
 * already (the server stopping), and resp is the caller's to destroy. */
static int answer_deferred(http_req *r, int status, struct MHD_Response *resp) {
    int done = 0;
    pthread_mutex_lock(&r->mu);
    if (atomic_load(&r->state) == RQ_DEFERRED) {
        r->resp = resp;
        r->status = resp ? status : 500;
        atomic_store(&r->state, RQ_READY);
        dlist_remove(r->s, r);
        if (r->suspended) { /* else the handler is still running: ahc queues it */
            r->suspended = 0;
            MHD_resume_connection(r->c);
        }
        atomic_fetch_sub(&r->s->deferred, 1);
        done = 1;
    }
    pthread_mutex_unlock(&r->mu);
    return done;
}

int http_reply(http_req *r, int status, const char *ctype, const char *headers, const void *body,
               size_t len) {
    struct MHD_Response *resp = make_response(r, ctype, headers, body, len);
    int st = atomic_load(&r->state);
    if (r->in_handler || st == RQ_HANDLING) { /* the handler itself, before any
                                                 http_defer: queue it now */
        r->status = status;
        if (!resp || MHD_queue_response(r->c, (unsigned)status, resp) != MHD_YES) r->status = 500;
        if (resp) MHD_destroy_response(resp);
        atomic_store(&r->state, RQ_DONE);
        return status;
    }
    if (!answer_deferred(r, status, resp) && resp) MHD_destroy_response(resp);
    req_unref(r); /* the deferral's reference */
    return status;
}

int http_error(http_req *r, int status, const char *headers, const char *fmt, ...) {
    char msg[700], *buf = NULL, q[760];
    size_t len = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* a failure of ours is in the log, with the id the client has */
    if (status >= 500)
        ULOG_WARN("event=request_failed request_id=%s route=%s status=%d why=%s", r->id,
                  r->rt ? r->rt->name : "-", status, ulog_quote(q, sizeof q, msg));
    else
        ULOG_DEBUG("event=request_refused request_id=%s route=%s status=%d why=%s", r->id,
                   r->rt ? r->rt->name : "-", status, ulog_quote(q, sizeof q, msg));
    FILE *f = open_memstream(&buf, &len);
    if (!f) return http_reply(r, 500, "text/plain", NULL, "out of memory\n", 14);
    fprintf(f, "{\"error\": ");
    util_json_str(f, msg);
    fprintf(f, "}\n");
    fclose(f);
    http_reply(r, status, "application/json", headers, buf, len);
    free(buf);
    return status;
}

void http_defer(http_req *r) {
    http_server *s = r->s;
    atomic_fetch_add(&r->refs, 1);
    atomic_fetch_add(&s->deferred, 1);
    pthread_mutex_lock(&s->dmu);
    r->dnext = s->dlist;
    if (s->dlist) s->dlist->dprev = r;
    s->dlist = r;
    pthread_mutex_unlock(&s->dmu);
    pthread_mutex_lock(&r->mu);
    atomic_store(&r->state, RQ_DEFERRED); /* suspended when the handler returns */
    pthread_mutex_unlock(&r->mu);
}

/* Queues a deferred answer (under r->mu). An answer that could not be made
 * (no memory for the response) becomes an empty 500; when even that fails,
 * MHD_NO closes the connection: a client is never left waiting. */
static enum MHD_Result queue_ready(http_req *r) {
    enum MHD_Result res = MHD_YES;
    if (!r->resp) {
        r->status = 500;
        r->resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    if (!r->resp || MHD_queue_response(r->c, (unsigned)r->status, r->resp) != MHD_YES) {
        r->status = 500;
        res = MHD_NO;
    }
    if (r->resp) MHD_destroy_response(r->resp);
    r->resp = NULL;
    atomic_store(&r->state, RQ_DONE);
    return res;
}

/* After the handler: a deferred request's connection is suspended, unless
 * its answer came already, which is queued now. On the event thread. */
static void after_handler(http_req *r) {
    pthread_mutex_lock(&r->mu);
    int st = atomic_load(&r->state);
    if (st == RQ_DEFERRED) {
        r->suspended = 1;
        MHD_suspend_connection(r->c);
    } else if (st == RQ_READY) {
        queue_ready(r);
    }
    pthread_mutex_unlock(&r->mu);
}

int http_gone(http_req *r) {
    int gone = 1;
    pthread_mutex_lock(&r->mu);
    if (atomic_load(&r->state) == RQ_DEFERRED && r->cn) {
        /* suspended: libmicrohttpd does not watch the socket, so look */
        struct pollfd p = {r->cn->fd, POLLRDHUP, 0};
        gone = poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
    }
    pthread_mutex_unlock(&r->mu);
    return gone;
}

/* A refusal from the first call: answered, and the connection closed. */
static enum MHD_Result refuse(http_req *r, int status, const char *reason, const char *headers,
                              const char *fmt, const char *arg) {
    r->close = 1;
    r->in_handler = 1;
    count_refused(r->s, reason);
    http_error(r, status, headers, fmt, arg);
    r->in_handler = 0;
    atomic_store(&r->state, RQ_REFUSED);
    return MHD_YES;
}

typedef struct {
    int cl, te, host, bad_name;
} hcheck;

static enum MHD_Result check_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value) {
    (void)kind, (void)value;
    hcheck *h = cls;
    if (!strcasecmp(key, "Content-Length")) h->cl++;
    if (!strcasecmp(key, "Transfer-Encoding")) h->te++;
    if (!strcasecmp(key, "Host")) h->host++;
    for (const char *p = key; *p; p++)
        if (*p == ' ' || *p == '\t' || (unsigned char)*p < 0x21 || *p == 0x7f) h->bad_name = 1;
    return MHD_YES;
}

static int method_in(const char *method, const char *list) {
    size_t ml = strlen(method);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == ml && !strncmp(p, method, l)) return 1;
        p = e ? e + 1 : p + l;
    }
    return 0;
}

static int route_of(const http_server *s, const char *path) {
    for (int i = 0; i < s->nroutes; i++) {
        const char *rp = s->o.routes[i].path;
        size_t l = strlen(rp);
        if (l && rp[l - 1] == '*' ? !strncmp(path, rp, l - 1) : !strcmp(path, rp)) return i;
    }
    return -1;
}

static enum MHD_Result first_call(http_server *s, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, http_req **out) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn *cn = ci ? ci->socket_context : NULL;
    http_req *r = calloc(1, sizeof *r);
    if (!r) return MHD_NO;
    r->s = s;
    r->c = c;
    r->cn = cn;
    r->route_idx = -1;
    atomic_init(&r->refs, 1);
    atomic_init(&r->state, RQ_NEW);
    pthread_mutex_init(&r->mu, NULL);
    snprintf(r->method, sizeof r->method, "%s", method);
    r->path = strdup(url ? url : "/");
    /* the client's request id when it is 1..64 of [A-Za-z0-9._:-] (it goes
     * into headers and logs as it is), else one made here */
    const char *rid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    size_t rl = rid ? strlen(rid) : 0;
    if (rl && rl <= 64 && strspn(rid, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                      "0123456789._:-") == rl)
        memcpy(r->id, rid, rl + 1);
    else if (util_random_hex(r->id, 16) != URSA_OK)
        snprintf(r->id, sizeof r->id, "%llx", (unsigned long long)(uintptr_t)r);
    *out = r;
    if (!r->path) return MHD_NO;
    if (cn) atomic_store(&cn->phase, PH_BODY);
    if (atomic_load(&s->stopping))
        return refuse(r, 503, "stopping", "Retry-After: 1\r\n", "%s", "the server is stopping");
    if (strcmp(version, MHD_HTTP_VERSION_1_1) && strcmp(version, MHD_HTTP_VERSION_1_0))
        return refuse(r, 505, "version", NULL, "HTTP version %s is not served (1.0 and 1.1 are)",
                      version);
    if (strchr(r->path, ' ') || strchr(r->path, '\t'))
        return refuse(r, 400, "bad_target", NULL, "%s", "whitespace in the request target");
    hcheck h = {0, 0, 0, 0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, check_header, &h);
    if (!h.host && !strcmp(version, MHD_HTTP_VERSION_1_1))
        return refuse(r, 400, "no_host", NULL, "%s", "an HTTP/1.1 request needs a Host header");
    if (h.host > 1) return refuse(r, 400, "two_hosts", NULL, "%s", "more than one Host");
    if (h.bad_name)
        return refuse(r, 400, "header_name", NULL, "%s", "a header name with whitespace or control bytes");
    if (h.cl > 1) return refuse(r, 400, "two_lengths", NULL, "%s", "more than one Content-Length");
    if (h.te && h.cl)
        return refuse(r, 400, "length_and_encoding", NULL, "%s",
                      "both Transfer-Encoding and Content-Length");
    if (h.te)
        return refuse(r, 411, "chunked", NULL, "%s",
                      "send the body with a Content-Length, not Transfer-Encoding");
    int ri = route_of(s, r->path);
    if (ri < 0) return refuse(r, 404, "not_found", NULL, "no such path: %s", r->path);
    const http_route *rt = &s->o.routes[ri];
    r->rt = rt;
    r->route_idx = ri;
    if (!method_in(method, rt->methods)) {
        char allow[96];
        snprintf(allow, sizeof allow, "Allow: %s\r\n", rt->methods);
        return refuse(r, 405, "method", allow, "%s is not allowed here", method);
    }
    const char *clh = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    unsigned long long clen = clh ? strtoull(clh, NULL, 10) : 0; /* libmicrohttpd checked its digits */
    if (clen > (rt->body ? s->o.max_body : 0)) {
        char lim[64];
        snprintf(lim, sizeof lim, "%zu", rt->body ? s->o.max_body : (size_t)0);
        return refuse(r, 413, "body_too_large", NULL, "the body is larger than %s bytes", lim);
    }
    /* every body in memory at once stays within max_body_total: a body
     * that would pass it waits (503) for others to end */
    size_t was = clen ? atomic_fetch_add(&s->body_bytes, (size_t)clen) : 0;
    r->cap = clen; /* given back when the request is freed, whatever happens next */
    if (clen && s->o.max_body_total && was + clen > s->o.max_body_total)
        return refuse(r, 503, "bodies_over_budget", "Retry-After: 1\r\n", "%s",
                      "busy: the request bodies in memory are at the server's budget");
    if (clen && !(r->body = body_alloc(r, clen)))
        return refuse(r, 503, "out_of_memory", "Retry-After: 1\r\n", "%s", "out of memory");
    return MHD_YES;
}

static enum MHD_Result ahc(void *cls, struct MHD_Connection *c, const char *url,
                           const char *method, const char *version, const char *upload,
                           size_t *upload_size, void **con_cls) {
    http_server *s = cls;
    http_req *r = *con_cls;
    if (!r) {
        enum MHD_Result res = first_call(s, c, url, method, version, (http_req **)con_cls);
        return res;
    }
    int st = atomic_load(&r->state);
    if (st == RQ_REFUSED || st == RQ_DONE) { /* a body after an early answer: dropped */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        size_t take = *upload_size;
        if (take > r->cap - r->len) take = r->cap - r->len; /* libmicrohttpd holds to the length */
        memcpy(r->body + r->len, upload, take);
        r->len += take;
        *upload_size = 0;
        return MHD_YES;
    }
    if (st == RQ_NEW) { /* the whole request is in */
        if (r->cn) atomic_store(&r->cn->phase, PH_HANDLING);
        atomic_store(&r->state, RQ_HANDLING);
        /* counted before the flag is read: http_drain sets the flag, then
         * waits for the count, so no handler runs after the drain */
        atomic_fetch_add(&s->handling, 1);
        if (atomic_load(&s->stopping)) { /* its body came in during the drain */
            r->close = 1;
            http_error(r, 503, "Retry-After: 1\r\n", "%s", "the server is stopping");
            atomic_fetch_sub(&s->handling, 1);
            return MHD_YES;
        }
        int res = r->rt->fn(s->o.ctx, r);
        if (res != HTTP_DEFERRED && atomic_load(&r->state) == RQ_HANDLING) /* a handler that sent nothing */
            http_error(r, 500, NULL, "%s", "the handler gave no answer");
        after_handler(r);
        atomic_fetch_sub(&s->handling, 1);
        return MHD_YES;
    }
    if (st == RQ_READY) { /* resumed with the deferred answer */
        pthread_mutex_lock(&r->mu);
        enum MHD_Result res = queue_ready(r);
        pthread_mutex_unlock(&r->mu);
        return res;
    }
    return MHD_YES;
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe) {
    (void)c;
    http_server *s = cls;
    http_req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    if (r->status) count_status(s, r->route_idx, r->status);
    else if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED) count_refused(s, "idle_timeout");
    else if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) count_refused(s, "client_gone");
    if (r->cn) {
        atomic_store(&r->cn->t0, util_mono_ms()); /* the next request on this connection starts now */
        atomic_store(&r->cn->phase, PH_HEADERS);
    }
    req_unref(r);
}

/* ---- connections and deadlines ---------------------------------------------- */

static void notify_conn(void *cls, struct MHD_Connection *c, void **socket_context,
                        enum MHD_ConnectionNotificationCode code) {
    http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        conn *cn = calloc(1, sizeof *cn);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        *socket_context = cn;
        atomic_fetch_add(&s->open, 1);
        atomic_fetch_add(&s->opened, 1);
        if (!cn) return;
        cn->fd = ci ? ci->connect_fd : -1;
        atomic_init(&cn->t0, util_mono_ms());
        atomic_init(&cn->phase, PH_HEADERS);
        pthread_mutex_lock(&s->cmu);
        cn->next = s->conns;
        if (s->conns) s->conns->prev = cn;
        s->conns = cn;
        pthread_mutex_unlock(&s->cmu);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        conn *cn = *socket_context;
        atomic_fetch_sub(&s->open, 1);
        if (!cn) return;
        pthread_mutex_lock(&s->cmu); /* after this, the socket may close: unlink first */
        if (cn->prev) cn->prev->next = cn->next;
        else s->conns = cn->next;
        if (cn->next) cn->next->prev = cn->prev;
        pthread_mutex_unlock(&s->cmu);
        free(cn);
        *socket_context = NULL;
    }
}

static void *sweep(void *arg) {
    http_server *s = arg;
    pthread_mutex_lock(&s->smu);
    while (s->sweeping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&s->scv, &s->smu, &ts);
        int64_t t = util_mono_ms();
        pthread_mutex_lock(&s->cmu);
        for (conn *cn = s->conns; cn; cn = cn->next) {
            int ph = atomic_load(&cn->phase);
            const char *why = NULL;
            int64_t t0 = atomic_load(&cn->t0);
            if (ph == PH_HEADERS && t - t0 > s->o.header_timeout_ms) why = "header_timeout";
            else if (ph == PH_BODY && t - t0 > s->o.request_timeout_ms) why = "request_timeout";
            if (why && !cn->killed && cn->fd >= 0) {
                cn->killed = 1;
                count_refused(s, why); /* counted before the client can see it */
                shutdown(cn->fd, SHUT_RDWR); /* libmicrohttpd sees the end and cleans up */
            }
        }
        pthread_mutex_unlock(&s->cmu);
    }
    pthread_mutex_unlock(&s->smu);
    return NULL;
}

/* ---- starting and stopping ------------------------------------------------------- */

/* A socket a connection, and room for the rest of the process: the soft
 * limit on open files (often 1024) raised towards the hard one. */
static void raise_fd_limit(unsigned connections) {
    struct rlimit rl;
    rlim_t want = (rlim_t)connections + 256;
    if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur >= want) return;
    rlim_t got = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    rl.rlim_cur = got;
    if (setrlimit(RLIMIT_NOFILE, &rl) || got < want)
        ULOG_WARN("event=fd_limit open_files=%llu connections=%u note=\"raise ulimit -n: "
                  "connections beyond it are refused\"",
                  (unsigned long long)got, connections);
}

http_server *http_start(const http_opts *o, char *err, size_t errlen) {
    http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->o = *o;
    s->quiesced_fd = -1;
    while (o->routes && o->routes[s->nroutes].path) s->nroutes++;
    s->by_route = calloc((size_t)(s->nroutes + 1) * MAX_STATUSES, sizeof(stat_n));
    s->first_named = calloc((size_t)s->nroutes + 1, sizeof(int));
    if (!s->by_route || !s->first_named) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (int i = 0; i < s->nroutes; i++) {
        int j = 0;
        while (strcmp(o->routes[j].name, o->routes[i].name)) j++;
        s->first_named[i] = j;
    }
    pthread_mutex_init(&s->cmu, NULL);
    pthread_mutex_init(&s->mmu, NULL);
    pthread_mutex_init(&s->smu, NULL);
    pthread_mutex_init(&s->dmu, NULL);
    pthread_cond_init(&s->scv, NULL);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, o->bind, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)o->port);
    } else if (inet_pton(AF_INET6, o->bind, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)o->port);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errlen, "bad listen address %s (an IPv4 or IPv6 address)", o->bind);
        goto fail;
    }
    raise_fd_limit(o->connection_limit);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned threads = o->threads > 0 ? (unsigned)o->threads : cores > 0 ? (unsigned)cores : 1;
    s->d = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, ahc, s, MHD_OPTION_SOCK_ADDR, &ss,
        MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT, o->connection_limit,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, o->per_ip_limit, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)o->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, o->memory_limit,
        MHD_OPTION_NOTIFY_COMPLETED, completed, s, MHD_OPTION_NOTIFY_CONNECTION, notify_conn, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_STRICT_FOR_CLIENT, 0,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_END);
    if (!s->d) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", o->bind, o->port,
                 errno ? strerror(errno) : "libmicrohttpd refused to start");
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    if (di && getsockname(di->listen_fd, (struct sockaddr *)&bound, &bl) == 0)
        s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    s->sweeping = 1;
    if (pthread_create(&s->sweeper, NULL, sweep, s)) {
        s->sweeping = 0;
        snprintf(err, errlen, "cannot start the HTTP sweeper thread");
        MHD_stop_daemon(s->d);
        goto fail;
    }
    return s;
fail:
    free(s->by_route);
    free(s->first_named);
    free(s);
    return NULL;
}

int http_port(const http_server *s) { return s->port; }

void http_drain(http_server *s, int drain_ms) {
    if (!s || atomic_exchange(&s->stopping, 1)) return;
    s->quiesced_fd = MHD_quiesce_daemon(s->d); /* no new connections; new requests get 503 */
    int64_t until = util_mono_ms() + drain_ms;
    while ((atomic_load(&s->deferred) > 0 || atomic_load(&s->handling) > 0) && util_mono_ms() < until)
        util_sleep_ms(10);
    if (atomic_load(&s->deferred) > 0 || atomic_load(&s->handling) > 0) { /* what is left: 503 */
        ULOG_WARN("event=http_drain_timeout deferred=%d", atomic_load(&s->deferred));
        /* handlers never block: the ones running finish (and may defer) */
        while (atomic_load(&s->handling) > 0) util_sleep_ms(1);
        for (;;) {
            pthread_mutex_lock(&s->dmu);
            http_req *r = s->dlist;
            if (r) atomic_fetch_add(&r->refs, 1); /* kept while it is answered */
            pthread_mutex_unlock(&s->dmu);
            if (!r) break;
            static const char body[] = "{\"error\": \"the server is stopping\"}\n";
            r->close = 1;
            struct MHD_Response *resp =
                make_response(r, "application/json", "Retry-After: 1\r\n", body, sizeof body - 1);
            if (!answer_deferred(r, 503, resp) && resp) MHD_destroy_response(resp);
            req_unref(r);
        }
    }
}

void http_stop(http_server *s) {
    if (!s) return;
    http_drain(s, 0);
    pthread_mutex_lock(&s->smu);
    s->sweeping = 0;
    pthread_cond_signal(&s->scv);
    pthread_mutex_unlock(&s->smu);
    pthread_join(s->sweeper, NULL);
    util_sleep_ms(50); /* the resumed ones are queued by the event threads */
    MHD_stop_daemon(s->d); /* closes every connection */
    if (s->quiesced_fd >= 0) close(s->quiesced_fd); /* ours after quiescing, closed last */
    pthread_mutex_destroy(&s->cmu);
    pthread_mutex_destroy(&s->mmu);
    pthread_mutex_destroy(&s->smu);
    pthread_mutex_destroy(&s->dmu);
    pthread_cond_destroy(&s->scv);
    free(s->by_route);
    free(s->first_named);
    free(s);
}
