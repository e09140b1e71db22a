/* http.h: a small HTTP/1.1 server for ursa-inference: a pool of threads
 * that each accept and serve connections (keep-alive, Content-Length
 * bodies, Expect: 100-continue), calling one handler per request with the
 * body already read. Bodies over the limit get 413, malformed requests 400,
 * chunked uploads 411, idle connections are closed after the timeout; a
 * handler never sees a request it cannot trust to be whole. */
#ifndef URSA_INFERENCE_HTTP_H
#define URSA_INFERENCE_HTTP_H

#include <stddef.h>

typedef struct {
    char method[8];
    char path[2048];  /* without the query */
    char query[4096]; /* after '?', raw */
    const char *content_type, *authorization; /* "" when absent */
    const char *body;
    size_t body_len;
    /* internal */
    int fd, keep_alive;
    char *hbuf;
} http_req;

/* Returns the status sent (for metrics). */
typedef int (*http_handler)(void *ctx, http_req *r);

typedef struct http_server http_server;

/* Listens on addr:port (port 0: a free one, see http_port) with threads
 * workers. NULL with the reason in err. */
http_server *http_start(const char *addr, int port, int threads, size_t max_body, int timeout_ms,
                        http_handler h, void *ctx, char *err, size_t errlen);
int http_port(const http_server *s);
/* Stops accepting, lets requests in progress end, joins the threads. */
void http_stop(http_server *s);

/* Sends a response; extra is more header lines ending in \r\n (may be NULL). */
int http_reply(http_req *r, int status, const char *ctype, const char *extra, const void *body,
               size_t len);
/* A JSON {"error": ...} response. */
int http_error(http_req *r, int status, const char *extra, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A query parameter, URL-decoded into out; -1 when absent or too long. */
int http_query(const http_req *r, const char *name, char *out, size_t n);

#endif
