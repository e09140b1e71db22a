/* http.c: the HTTP/1.1 server of ursa-inference; see http.h. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define HEADER_MAX 16384

struct http_server {
    int lfd, port, nthreads, timeout_ms;
    size_t max_body;
    http_handler h;
    void *ctx;
    volatile int stop;
    pthread_t *th;
};

static const char *status_text(int s) {
    switch (s) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

int http_reply(http_req *r, int status, const char *ctype, const char *extra, const void *body,
               size_t len) {
    char h[1024];
    int n = snprintf(h, sizeof h,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: %s\r\n%s\r\n",
                     status, status_text(status), ctype, len,
                     r->keep_alive ? "keep-alive" : "close", extra ? extra : "");
    if (n < 0 || (size_t)n >= sizeof h || util_send_all(r->fd, h, (size_t)n) ||
        (len && util_send_all(r->fd, body, len)))
        r->keep_alive = 0; /* the peer went away */
    return status;
}

int http_error(http_req *r, int status, const char *extra, const char *fmt, ...) {
    char msg[700], *buf = NULL;
    size_t len = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    FILE *f = open_memstream(&buf, &len);
    if (!f) return http_reply(r, 500, "text/plain", NULL, "out of memory\n", 14);
    fprintf(f, "{\"error\": ");
    util_json_str(f, msg);
    fprintf(f, "}\n");
    fclose(f);
    http_reply(r, status, "application/json", extra, buf, len);
    free(buf);
    return status;
}

static int hexval(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                        : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int http_query(const http_req *r, const char *name, char *out, size_t n) {
    size_t nl = strlen(name);
    for (const char *p = r->query; *p;) {
        const char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p);
        if ((size_t)(end - p) > nl && !strncmp(p, name, nl) && p[nl] == '=') {
            size_t o = 0;
            for (const char *q = p + nl + 1; q < end; q++) {
                int c = *q;
                if (c == '+') c = ' ';
                else if (c == '%' && end - q > 2 && hexval(q[1]) >= 0 && hexval(q[2]) >= 0) {
                    c = hexval(q[1]) * 16 + hexval(q[2]);
                    q += 2;
                }
                if (o + 1 >= n) return -1;
                out[o++] = (char)c;
            }
            out[o] = '\0';
            return (int)o;
        }
        p = amp ? amp + 1 : end;
    }
    return -1;
}

/* A header's value in the raw header block (case-insensitive name). */
static const char *header(char *block, const char *name, char *out, size_t n) {
    size_t nl = strlen(name);
    out[0] = '\0';
    for (char *line = strstr(block, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        char *l = line + 2;
        if (!strncasecmp(l, name, nl) && l[nl] == ':') {
            l += nl + 1;
            while (*l == ' ' || *l == '\t') l++;
            char *e = strstr(l, "\r\n");
            size_t len = e ? (size_t)(e - l) : strlen(l);
            if (len >= n) len = n - 1;
            memcpy(out, l, len);
            out[len] = '\0';
            return out;
        }
    }
    return NULL;
}

/* Serves requests on one connection until it closes or times out. */
static void serve(http_server *s, int fd) {
    char *buf = malloc(HEADER_MAX + 1);
    size_t have = 0;
    if (!buf) return;
    for (;;) {
        char *end = NULL;
        while (!(end = have ? strstr(buf, "\r\n\r\n") : NULL)) {
            if (have >= HEADER_MAX) {
                http_req r = {.fd = fd};
                http_error(&r, 431, NULL, "request headers larger than %d bytes", HEADER_MAX);
                goto out;
            }
            ssize_t n = recv(fd, buf + have, HEADER_MAX - have, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) goto out; /* closed, or idle past the timeout */
            have += (size_t)n;
            buf[have] = '\0';
        }
        size_t hlen = (size_t)(end - buf) + 4;
        char ctype[256], auth[256], v[64], conn[64], target[6200], version[16];
        http_req r;
        memset(&r, 0, sizeof r);
        r.fd = fd;
        r.keep_alive = 1;
        end[2] = '\0'; /* keep the last header's CRLF for header() */
        if (sscanf(buf, "%7s %6199s %15s", r.method, target, version) != 3 ||
            strncmp(version, "HTTP/1.", 7)) {
            r.keep_alive = 0;
            http_error(&r, 400, NULL, "not an HTTP/1.x request line");
            goto out;
        }
        if (!strcmp(version, "HTTP/1.0")) r.keep_alive = 0;
        if (header(buf, "Connection", conn, sizeof conn)) {
            if (!strcasecmp(conn, "close")) r.keep_alive = 0;
            else if (!strcasecmp(conn, "keep-alive")) r.keep_alive = 1;
        }
        char *q = strchr(target, '?');
        if (q) *q++ = '\0';
        if (strlen(target) >= sizeof r.path || (q && strlen(q) >= sizeof r.query)) {
            r.keep_alive = 0;
            http_error(&r, 400, NULL, "request target too long");
            goto out;
        }
        snprintf(r.path, sizeof r.path, "%s", target);
        snprintf(r.query, sizeof r.query, "%s", q ? q : "");
        r.content_type = header(buf, "Content-Type", ctype, sizeof ctype) ? ctype : "";
        r.authorization = header(buf, "Authorization", auth, sizeof auth) ? auth : "";
        if (header(buf, "Transfer-Encoding", v, sizeof v) && strcasecmp(v, "identity")) {
            r.keep_alive = 0;
            http_error(&r, 411, NULL, "send the body with a Content-Length, not chunked");
            goto out;
        }
        size_t clen = 0;
        if (header(buf, "Content-Length", v, sizeof v)) {
            char *e;
            unsigned long long n = strtoull(v, &e, 10);
            if (*e || v[0] == '-' || !v[0]) {
                r.keep_alive = 0;
                http_error(&r, 400, NULL, "bad Content-Length");
                goto out;
            }
            if (n > s->max_body) {
                r.keep_alive = 0;
                http_error(&r, 413, NULL, "the body is larger than %zu bytes", s->max_body);
                goto out;
            }
            clen = (size_t)n;
        }
        if (clen && header(buf, "Expect", v, sizeof v) && !strcasecmp(v, "100-continue"))
            util_send_all(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        char *body = malloc(clen + 1);
        if (!body) {
            r.keep_alive = 0;
            http_error(&r, 503, "Retry-After: 1\r\n", "out of memory");
            goto out;
        }
        size_t got = have - hlen < clen ? have - hlen : clen;
        memcpy(body, buf + hlen, got);
        while (got < clen) {
            ssize_t n = recv(fd, body + got, clen - got, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                free(body);
                goto out;
            }
            got += (size_t)n;
        }
        body[clen] = '\0';
        /* what came after this request's body: the next request */
        size_t used = hlen + clen < have ? hlen + clen : have;
        memmove(buf, buf + used, have - used);
        have -= used;
        buf[have] = '\0';
        r.body = body;
        r.body_len = clen;
        s->h(s->ctx, &r);
        free(body);
        if (!r.keep_alive || s->stop) break;
    }
out:
    free(buf);
    /* lingering close: a client still sending a body we refused gets our
     * answer instead of a reset */
    shutdown(fd, SHUT_WR);
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char sink[16384];
    for (size_t drained = 0; drained < ((size_t)64 << 20);) {
        ssize_t n = recv(fd, sink, sizeof sink, 0);
        if (n <= 0) break;
        drained += (size_t)n;
    }
}

static void *worker(void *arg) {
    http_server *s = arg;
    while (!s->stop) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (s->stop) break;
            usleep(10000); /* out of descriptors: let others finish */
            continue;
        }
        struct timeval tv = {s->timeout_ms / 1000, (s->timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        serve(s, fd);
        close(fd);
    }
    return NULL;
}

http_server *http_start(const char *addr, int port, int threads, size_t max_body, int timeout_ms,
                        http_handler h, void *ctx, char *err, size_t errlen) {
    http_server *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->max_body = max_body;
    s->timeout_ms = timeout_ms;
    s->h = h;
    s->ctx = ctx;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "bad listen address %s (an IPv4 address)", addr);
        free(s);
        return NULL;
    }
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t sl = sizeof sa;
    if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&sa, sizeof sa) || listen(s->lfd, 1024) ||
        getsockname(s->lfd, (struct sockaddr *)&sa, &sl)) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", addr, port, strerror(errno));
        if (s->lfd >= 0) close(s->lfd);
        free(s);
        return NULL;
    }
    s->port = ntohs(sa.sin_port);
    s->th = calloc((size_t)threads, sizeof(pthread_t));
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 512 * 1024); /* they parse and wait; the model runs elsewhere */
    for (int i = 0; s->th && i < threads; i++)
        if (pthread_create(&s->th[i], &at, worker, s) == 0) s->nthreads++;
    pthread_attr_destroy(&at);
    if (!s->nthreads) {
        snprintf(err, errlen, "cannot start HTTP threads");
        close(s->lfd);
        free(s->th);
        free(s);
        return NULL;
    }
    return s;
}

int http_port(const http_server *s) { return s->port; }

void http_stop(http_server *s) {
    if (!s) return;
    s->stop = 1;
    shutdown(s->lfd, SHUT_RDWR); /* wakes the threads in accept() */
    for (int i = 0; i < s->nthreads; i++) pthread_join(s->th[i], NULL);
    close(s->lfd);
    free(s->th);
    free(s);
}
