/* http.h: the HTTP layer of ursa's web-facing daemons (ursa-inference, the
 * console), on libmicrohttpd.
 *
 * libmicrohttpd runs the connections: epoll, a pool of event threads (one
 * per core by default), thousands of connections, a limit per client
 * address, a memory limit per connection. No thread is ever a client's:
 * a slow client costs a socket and a few kilobytes, and a request waiting
 * for other work (a batch of the model) is suspended and holds no thread.
 * On top of it this layer:
 *   - refuses ambiguous framing with 400 and closes the connection (behind
 *     a proxy that reuses connections, the ambiguity is request smuggling):
 *     two Content-Lengths, Transfer-Encoding (chunked bodies are not taken),
 *     whitespace in a header name or the target, an HTTP/1.1 request
 *     without Host or with two, a version other than HTTP/1.0 and 1.1;
 *     libmicrohttpd itself refuses a header line without a colon and a
 *     Content-Length that is not all digits (0.9.75 writes that 400's
 *     header twice; the connection closes after it, so nothing is read as
 *     a next request);
 *   - closes a connection whose request headers have not all arrived
 *     within header_timeout_ms, or whose body has not within
 *     request_timeout_ms, of the request's start: an inactivity timeout
 *     alone lets a client trickle a byte at a time forever;
 *   - answers 413 from the Content-Length, before reading the body;
 *   - routes by a table, answering 404 and 405 itself;
 *   - adds X-Content-Type-Options: nosniff and Cache-Control: no-store to
 *     every response, and a Content-Security-Policy to HTML; libmicrohttpd
 *     adds Date and answers HEAD without the body;
 *   - counts connections, requests by route and status, and refusals by
 *     reason, for /metrics (http_write_metrics).
 *
 * Threads: handlers run on the event threads and must not block (no model,
 * no decoding, no network): they answer at once, or call http_defer and
 * answer later from any thread with http_reply. */
#ifndef URSA_HTTP_H
#define URSA_HTTP_H

#include <stddef.h>
#include <stdio.h>

typedef struct http_server http_server;
typedef struct http_req http_req;

/* What a handler returns: the status it sent, or HTTP_DEFERRED after
 * http_defer. */
#define HTTP_DEFERRED 0

typedef int (*http_handler)(void *ctx, http_req *r);

/* One route: path exact, or a prefix where it ends in '*'; methods like
 * "GET,HEAD" or "POST"; name labels its metrics; body: takes a request
 * body (else a request with one gets 413). The table ends with a NULL
 * path; the first match wins. */
typedef struct {
    const char *path;
    const char *methods;
    http_handler fn;
    const char *name;
    int body;
} http_route;

typedef struct {
    const char *bind;          /* an IPv4 or IPv6 address ("127.0.0.1", "::") */
    int port;                  /* 0: any free port (http_port says which) */
    int threads;               /* event threads; 0: one per core */
    unsigned connection_limit; /* open connections at most */
    unsigned per_ip_limit;     /* open connections from one address at most */
    int header_timeout_ms;     /* a request's line and headers within this */
    int request_timeout_ms;    /* ... and its body within this */
    int idle_timeout_s;        /* libmicrohttpd's inactivity timeout */
    size_t memory_limit;       /* a connection's buffer (its headers) */
    size_t max_body;           /* largest request body */
    size_t max_body_total;     /* the bodies in memory at once, in bytes (0: no cap) */
    const http_route *routes;  /* borrowed; must outlive the server */
    void *ctx;                 /* passed to the handlers */
    const char *csp;           /* Content-Security-Policy for text/html (NULL: a strict default) */
} http_opts;

/* Defaults: 127.0.0.1, port 8080, threads 0, 4096 connections, 64 an
 * address, headers within 10 s, the request within 60 s, 10 s idle, 64 KiB
 * a connection, 20 MB bodies, 256 MB of bodies in all. */
http_opts http_opts_default(void);

/* Starts serving. NULL with the reason in err. */
http_server *http_start(const http_opts *o, char *err, size_t errlen);
int http_port(const http_server *s);
/* Stops accepting connections (and answers new requests on open ones
 * 503), waits up to drain_ms for deferred requests to be answered, then
 * answers what is left 503 itself. Deferred work may still call
 * http_reply on its requests afterwards (it is a no-op) until http_stop. */
void http_drain(http_server *s, int drain_ms);
/* Drains (at once, unless http_drain ran), closes every connection and
 * frees the server. Every thread that may call http_reply must have
 * stopped. */
void http_stop(http_server *s);

/* ---- in a handler ---------------------------------------------------------- */

const char *http_method(const http_req *r);
/* The request's id: the client's X-Request-Id when it is 1..64 of
 * [A-Za-z0-9._:-], else 32 hex digits made for it. Every answer carries it
 * back in X-Request-Id, and http_error logs it (5xx at warn, the rest at
 * debug). */
const char *http_request_id(const http_req *r);
const char *http_path(const http_req *r);
/* A request header (case-insensitive name), or NULL. In the handler only:
 * deferred work could race the drain's answer, after which libmicrohttpd
 * frees it; copy what deferred work needs. */
const char *http_header(const http_req *r, const char *name);
/* A query parameter, URL-decoded into out: its length; -1 when absent, -2
 * when longer than n - 1 (out is then ""). From any thread; -1 once the
 * request has been answered. */
int http_query(const http_req *r, const char *name, char *out, size_t n);
/* The body; borrowed until the request is answered. */
const void *http_body(const http_req *r, size_t *len);
/* The client's address as text ("127.0.0.1", "::1") into out (n >= 46):
 * 0, or -1 when unknown (out is then ""). In the handler only. */
int http_client_addr(const http_req *r, char *out, size_t n);
/* The route the request took (its name), for the caller's own metrics. */
const char *http_route_name(const http_req *r);
/* The server a request came to (for handlers that run before the caller of
 * http_start has its return value stored). */
http_server *http_req_server(const http_req *r);

/* Answers: status, type, extra header lines ("Name: value\r\n"..., may be
 * NULL), and the body (copied). Once a request; from the handler, or from
 * any thread after http_defer. Returns status. */
int http_reply(http_req *r, int status, const char *ctype, const char *headers, const void *body,
               size_t len);
/* A JSON {"error": ...} answer. */
int http_error(http_req *r, int status, const char *headers, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* From the handler: the answer comes later, from another thread, through
 * http_reply; the connection is suspended meanwhile. The request (and its
 * body) stays valid until then. */
void http_defer(http_req *r);
/* For deferred work: 1 when the client has closed its side, or the request
 * was answered already (the server stopping, past its drain): the work can
 * stop; http_reply must still be called. */
int http_gone(http_req *r);

/* ---- metrics ----------------------------------------------------------------- */

/* Prometheus text for the layer, names prefixed: <prefix>_http_connections
 * (open), _http_connections_total, _requests_total{route,status},
 * _http_refused_total{reason}. */
void http_write_metrics(http_server *s, FILE *f, const char *prefix);

#endif
