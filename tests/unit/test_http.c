/* Unit tests of common/io/http (libmicrohttpd underneath, real sockets on
 * 127.0.0.1): routing and the layer's own answers, deferred answers from
 * another thread, a client that leaves while its answer is deferred, the
 * drain at stop, the header deadline, and the metrics. */
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "util.h"

typedef struct {
    atomic_int gone_seen; /* deferred work saw its client leave */
    atomic_int hold_ms;   /* how long deferred work waits before answering */
    atomic_int live;      /* deferred work still running */
    atomic_int echoes;    /* h_echo's calls */
} ctx;

static int h_hello(void *c, http_req *r) {
    (void)c;
    char who[16];
    if (http_query(r, "who", who, sizeof who) == -2) return http_error(r, 400, NULL, "too long");
    char body[64];
    int n = snprintf(body, sizeof body, "hello %s", http_query(r, "who", who, sizeof who) > 0 ? who : "you");
    return http_reply(r, 200, "text/plain", "X-Test: 1\r\n", body, (size_t)n);
}

static int h_echo(void *c, http_req *r) {
    atomic_fetch_add(&((ctx *)c)->echoes, 1);
    size_t n;
    const void *b = http_body(r, &n);
    return http_reply(r, 200, "application/octet-stream", NULL, b, n);
}

typedef struct {
    ctx *c;
    http_req *r;
} later;

static void *answer_later(void *arg) {
    later *l = arg;
    int64_t until = util_mono_ms() + atomic_load(&l->c->hold_ms);
    while (util_mono_ms() < until) {
        if (http_gone(l->r)) {
            atomic_store(&l->c->gone_seen, 1);
            break;
        }
        util_sleep_ms(10);
    }
    http_reply(l->r, 200, "text/plain", NULL, "later", 5);
    atomic_fetch_sub(&l->c->live, 1); /* the last use of c */
    free(l);
    return NULL;
}

static int h_defer(void *c, http_req *r) {
    later *l = malloc(sizeof *l);
    l->c = c;
    l->r = r;
    http_defer(r);
    atomic_fetch_add(&l->c->live, 1);
    pthread_t th;
    pthread_create(&th, NULL, answer_later, l);
    pthread_detach(th);
    return HTTP_DEFERRED;
}

static void *answer_now(void *arg) {
    http_reply(arg, 200, "text/plain", NULL, "early", 5);
    return NULL;
}

/* the answer comes from another thread before the handler has returned */
static int h_race(void *c, http_req *r) {
    (void)c;
    http_defer(r);
    pthread_t th;
    pthread_create(&th, NULL, answer_now, r);
    pthread_join(th, NULL);
    return HTTP_DEFERRED;
}

static const http_route routes[] = {{"/hello", "GET,HEAD", h_hello, "hello", 0},
                                    {"/echo", "POST", h_echo, "echo", 1},
                                    {"/defer", "GET", h_defer, "defer", 0},
                                    {"/race", "GET", h_race, "race", 0},
                                    {"/p/*", "GET", h_hello, "prefix", 0},
                                    {NULL, NULL, NULL, NULL, 0}};

static http_server *start(ctx *c, int header_ms) {
    http_opts o = http_opts_default();
    o.port = 0;
    o.routes = routes;
    o.ctx = c;
    o.max_body = 1000;
    o.header_timeout_ms = header_ms;
    char err[256];
    http_server *s = http_start(&o, err, sizeof err);
    if (!s) fail_msg("http_start: %s", err);
    return s;
}

static int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* sends req on a new connection and reads until the server closes (or 5 s) */
static char *exchange(int port, const char *req, size_t len) {
    int fd = dial(port);
    assert_int_equal(write(fd, req, len), (ssize_t)len);
    char *buf = calloc(1, 65536);
    size_t n = 0;
    ssize_t k;
    while (n < 65535 && (k = read(fd, buf + n, 65535 - n)) > 0) n += (size_t)k;
    close(fd);
    return buf;
}

static void routing_and_refusals(void **state) {
    (void)state;
    ctx c = {0};
    http_server *s = start(&c, 5000);
    int port = http_port(s);
    const char *q = "GET /hello?who=ann HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char *r = exchange(port, q, strlen(q));
    assert_non_null(strstr(r, "HTTP/1.1 200"));
    assert_non_null(strstr(r, "X-Test: 1"));
    assert_non_null(strstr(r, "X-Content-Type-Options: nosniff"));
    assert_non_null(strstr(r, "hello ann"));
    free(r);
    q = "HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    r = exchange(port, q, strlen(q));
    assert_non_null(strstr(r, "HTTP/1.1 200"));
    assert_null(strstr(r, "hello you")); /* no body */
    free(r);
    q = "GET /p/any/thing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    r = exchange(port, q, strlen(q));
    assert_non_null(strstr(r, "HTTP/1.1 200"));
    free(r);
    q = "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
    r = exchange(port, q, strlen(q));
    assert_non_null(strstr(r, "HTTP/1.1 404"));
    assert_non_null(strstr(r, "Connection: close"));
    free(r);
    q = "DELETE /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    r = exchange(port, q, strlen(q));
    assert_non_null(strstr(r, "HTTP/1.1 405"));
    assert_non_null(strstr(r, "Allow: GET,HEAD"));
    free(r);
    q = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n";
    r = exchange(port, q, strlen(q)); /* refused from the header, before the body */
    assert_non_null(strstr(r, "HTTP/1.1 413"));
    free(r);
    q = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde";
    r = exchange(port, q, strlen(q));
    assert_non_null(strstr(r, "HTTP/1.1 200"));
    assert_non_null(strstr(r, "\r\n\r\nabcde"));
    free(r);
    q = "GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 3\r\n\r\nabc";
    r = exchange(port, q, strlen(q));
    assert_non_null(strstr(r, "HTTP/1.1 400"));
    assert_null(strstr(r + 12, "HTTP/1.1")); /* one answer, then closed */
    free(r);
    q = "GET /hello?who=aaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    r = exchange(port, q, strlen(q)); /* a parameter longer than the buffer: -2 */
    assert_non_null(strstr(r, "HTTP/1.1 400"));
    free(r);
    char *m = NULL;
    size_t ml = 0;
    FILE *f = open_memstream(&m, &ml);
    http_write_metrics(s, f, "t");
    fclose(f);
    assert_non_null(strstr(m, "t_requests_total{route=\"hello\",status=\"200\"} 2"));
    assert_non_null(strstr(m, "t_requests_total{route=\"prefix\",status=\"200\"} 1"));
    assert_non_null(strstr(m, "t_http_refused_total{reason=\"not_found\"} 1"));
    assert_non_null(strstr(m, "t_http_refused_total{reason=\"two_lengths\"} 1"));
    assert_non_null(strstr(m, "t_http_refused_total{reason=\"body_too_large\"} 1"));
    free(m);
    http_stop(s);
}

static void deferred_answers(void **state) {
    (void)state;
    ctx c = {0};
    atomic_store(&c.hold_ms, 100);
    http_server *s = start(&c, 5000);
    int port = http_port(s);
    /* answered from another thread; the connection stays usable */
    int fd = dial(port);
    const char *q = "GET /defer HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n"
                    "Connection: close\r\n\r\n";
    assert_int_equal(write(fd, q, strlen(q)), (ssize_t)strlen(q));
    char buf[4096] = "";
    size_t n = 0;
    ssize_t k;
    while (n < sizeof buf - 1 && (k = read(fd, buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)k;
    close(fd);
    char *a = strstr(buf, "later"), *b = strstr(buf, "hello you");
    assert_non_null(a);
    assert_non_null(b);
    assert_true(a < b); /* in order */
    /* answered before the handler returned, twice on one connection */
    fd = dial(port);
    q = "GET /race HTTP/1.1\r\nHost: x\r\n\r\nGET /race HTTP/1.1\r\nHost: x\r\n"
        "Connection: close\r\n\r\n";
    assert_int_equal(write(fd, q, strlen(q)), (ssize_t)strlen(q));
    memset(buf, 0, sizeof buf);
    n = 0;
    while (n < sizeof buf - 1 && (k = read(fd, buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)k;
    close(fd);
    a = strstr(buf, "early");
    assert_non_null(a);
    assert_non_null(strstr(a + 5, "early"));
    /* a client that leaves while deferred: the work sees it */
    atomic_store(&c.hold_ms, 3000);
    fd = dial(port);
    q = "GET /defer HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(write(fd, q, strlen(q)), (ssize_t)strlen(q));
    util_sleep_ms(200);
    close(fd);
    int64_t until = util_mono_ms() + 2000;
    while (!atomic_load(&c.gone_seen) && util_mono_ms() < until) util_sleep_ms(10);
    assert_true(atomic_load(&c.gone_seen));
    /* stopping with work outstanding: answered 503 at the drain's end */
    atomic_store(&c.hold_ms, 2000);
    fd = dial(port);
    assert_int_equal(write(fd, q, strlen(q)), (ssize_t)strlen(q));
    util_sleep_ms(100);
    int64_t t0 = util_mono_ms();
    http_drain(s, 300);
    int64_t took = util_mono_ms() - t0;
    n = 0;
    memset(buf, 0, sizeof buf);
    while (n < sizeof buf - 1 && (k = read(fd, buf + n, sizeof buf - 1 - n)) > 0) {
        n += (size_t)k;
        if (strstr(buf, "stopping")) break;
    }
    close(fd);
    if (!strstr(buf, "HTTP/1.1 503")) fprintf(stderr, "got [%s] took %lld\n", buf, (long long)took);
    assert_non_null(strstr(buf, "HTTP/1.1 503"));
    assert_non_null(strstr(buf, "the server is stopping"));
    assert_true(took >= 300 && took < 1500);
    util_sleep_ms(2100); /* the late answer is a no-op */
    while (atomic_load(&c.live)) util_sleep_ms(10); /* c is on this stack */
    http_stop(s);
}

/* A body still arriving when the drain ends: answered 503, and the handler
 * (whose resources the caller frees after the drain) never runs. */
static void body_after_drain(void **state) {
    (void)state;
    ctx c = {0};
    http_server *s = start(&c, 5000);
    int fd = dial(http_port(s));
    const char *head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello";
    assert_int_equal(write(fd, head, strlen(head)), (ssize_t)strlen(head));
    util_sleep_ms(100);
    http_drain(s, 500); /* nothing deferred: returns at once */
    assert_int_equal(write(fd, "world", 5), 5);
    char buf[2048] = "";
    size_t n = 0;
    ssize_t k;
    while (n < sizeof buf - 1 && (k = read(fd, buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)k;
    close(fd);
    assert_non_null(strstr(buf, "HTTP/1.1 503"));
    assert_non_null(strstr(buf, "stopping"));
    assert_int_equal(atomic_load(&c.echoes), 0);
    http_stop(s);
}

static void header_deadline(void **state) {
    (void)state;
    ctx c = {0};
    http_server *s = start(&c, 600);
    int fd = dial(http_port(s));
    int64_t t0 = util_mono_ms();
    char buf[256];
    ssize_t k = 0;
    const char *part = "GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    assert_int_equal(write(fd, part, strlen(part)), (ssize_t)strlen(part));
    for (int i = 0; i < 30; i++) { /* a byte every 100 ms: never idle, never done */
        util_sleep_ms(100);
        if (write(fd, "a", 1) != 1) break;
        struct timeval tv = {0, 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        k = read(fd, buf, sizeof buf);
        if (k == 0) break;
    }
    int64_t took = util_mono_ms() - t0;
    close(fd);
    assert_int_equal(k, 0); /* closed by the server */
    assert_true(took >= 550 && took < 2000);
    char *m = NULL;
    size_t ml = 0;
    FILE *f = open_memstream(&m, &ml);
    http_write_metrics(s, f, "t");
    fclose(f);
    assert_non_null(strstr(m, "t_http_refused_total{reason=\"header_timeout\"} 1"));
    free(m);
    http_stop(s);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(routing_and_refusals),
        cmocka_unit_test(deferred_answers),
        cmocka_unit_test(body_after_drain),
        cmocka_unit_test(header_deadline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
