/* fault-server: an HTTP server on 127.0.0.1 that serves good images and the
 * bad cases a crawler meets, for the integration tests, the benchmarks and
 * `ursa demo`.
 *
 *   fault-server DIR PORTFILE     serves DIR, writes its port to PORTFILE
 *
 *   /img/NAME          the file (Content-Type from its extension)
 *   /ds/DIR/NAME       DIR/NAME under the served dir (a dataset, a directory a class)
 *   /404               404 Not Found
 *   /429               429 Too Many Requests, always
 *   /flaky/NAME        500 on the first request for that path, then the file
 *   /html/NAME         an HTML page sent as image/jpeg
 *   /texttype/NAME     the file sent as text/html
 *   /truncated/NAME    the first 60% of the file (a complete HTTP response)
 *   /cut/NAME          promises the whole file, sends 60%, closes
 *   /slow              sends one byte a second
 *   /loop/N            redirects to /loop/N+1, forever
 *   /redirect/NAME     redirects to /img/NAME
 *   /redirect-private  redirects to a private address (must never be fetched)
 *   /big               claims and sends 64 MB
 *   /big-chunked       64 MB with no Content-Length
 *   /noai/NAME         the file with X-Robots-Tag: noai
 *   /gen/N.jpg         a 64x64 JPEG made for N: distinct bytes for every N
 *   /delay/MS/PATH     PATH, answered MS milliseconds late (at most 10 s)
 * A query string is ignored, so /img/a.jpg?1 and /img/a.jpg?2 are two URLs
 * with the same bytes.
 * One thread per connection; every response closes the connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "image.h"
#include "util.h"

static const char *root;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char **seen;
static size_t nseen;

/* 1 the first time path is asked for. */
static int first_time(const char *path) {
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < nseen; i++)
        if (!strcmp(seen[i], path)) {
            pthread_mutex_unlock(&mu);
            return 0;
        }
    char **n = realloc(seen, (nseen + 1) * sizeof *n);
    if (n) {
        seen = n;
        seen[nseen++] = strdup(path);
    }
    pthread_mutex_unlock(&mu);
    return 1;
}

static void respond(int fd, int code, const char *status, const char *ctype,
                    const char *extra, const void *body, size_t len) {
    char h[1024];
    int n = snprintf(h, sizeof h,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                     "Connection: close\r\n\r\n",
                     code, status, ctype, len, extra ? extra : "");
    if (util_send_all(fd, h, (size_t)n) == 0 && len) util_send_all(fd, body, len);
}

static char *read_file(const char *name, size_t *len) {
    const char *slash = strchr(name, '/');
    if (strstr(name, "..") || (slash && strchr(slash + 1, '/'))) return NULL; /* one level */
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, name);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(n > 0 ? (size_t)n : 1);
    *len = b ? fread(b, 1, (size_t)n, f) : 0;
    fclose(f);
    return b;
}

static const char *ctype_of(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return "application/octet-stream";
    if (!strcmp(dot, ".jpg") || !strcmp(dot, ".jpeg")) return "image/jpeg";
    if (!strcmp(dot, ".png")) return "image/png";
    if (!strcmp(dot, ".gif")) return "image/gif";
    if (!strcmp(dot, ".webp")) return "image/webp";
    return "application/octet-stream";
}

static void redirect(int fd, const char *to) {
    char extra[1200];
    snprintf(extra, sizeof extra, "Location: %s\r\n", to);
    respond(fd, 302, "Found", "text/plain", extra, "", 0);
}

static void serve_file(int fd, const char *name, const char *ctype, const char *extra, int pct) {
    size_t len;
    char *b = read_file(name, &len);
    if (!b) {
        respond(fd, 404, "Not Found", "text/plain", NULL, "no such file\n", 13);
        return;
    }
    respond(fd, 200, "OK", ctype ? ctype : ctype_of(name), extra, b, len * (size_t)pct / 100);
    free(b);
}

static void *conn(void *arg) {
    int fd = (int)(intptr_t)arg;
    char req[4096];
    size_t n = 0;
    while (n < sizeof req - 1) {
        ssize_t r = recv(fd, req + n, sizeof req - 1 - n, 0);
        if (r <= 0) break;
        n += (size_t)r;
        req[n] = '\0';
        if (strstr(req, "\r\n\r\n")) break;
    }
    req[n] = '\0';
    char method[8], path[2048];
    if (sscanf(req, "%7s %2047s", method, path) != 2) {
        close(fd);
        return NULL;
    }
    fprintf(stdout, "%s %s\n", method, path); /* tests count downloads by this */
    fflush(stdout);
    char *q = strchr(path, '?');
    if (q) *q = '\0';
    if (!strncmp(path, "/delay/", 7)) { /* a slow server: the rest of the path, late */
        char *end;
        long ms = strtol(path + 7, &end, 10);
        if (*end == '/' && ms >= 0 && ms <= 10000) {
            util_sleep_ms(ms);
            memmove(path, end, strlen(end) + 1);
        }
    }
    const char *name = strrchr(path, '/') + 1;
    static char zeros[65536];
    if (!strncmp(path, "/gen/", 5)) {
        unsigned long k = strtoul(name, NULL, 10);
        img_rgb im = {64, 64, malloc(64 * 64 * 3), 64, 64, 0};
        for (int i = 0; im.px && i < 64 * 64; i++) { /* 8x8 tiles, one bit of k each */
            int tile = (i / 64 / 8) * 8 + (i % 64) / 8;
            int bit = (int)((k >> (tile % 32)) & 1);
            im.px[3 * i] = (uint8_t)(bit ? 230 : 20);
            im.px[3 * i + 1] = (uint8_t)(k * 37 + (unsigned long)tile * 3);
            im.px[3 * i + 2] = (uint8_t)(k >> 8);
        }
        uint8_t *jpeg = NULL;
        size_t jl = 0;
        if (im.px && img_encode_jpeg(&im, 85, &jpeg, &jl) == URSA_OK)
            respond(fd, 200, "OK", "image/jpeg", NULL, jpeg, jl);
        free(jpeg);
        img_free(&im);
    } else if (!strncmp(path, "/img/", 5)) {
        serve_file(fd, name, NULL, NULL, 100);
    } else if (!strncmp(path, "/ds/", 4) && name - path > 5 && !strstr(path, "..")) {
        /* /ds/<dir>/<file>: a dataset laid out one directory per class */
        char rel[2100];
        snprintf(rel, sizeof rel, "%.*s/%s", (int)(name - path - 5), path + 4, name);
        serve_file(fd, rel, NULL, NULL, 100);
    } else if (!strcmp(path, "/404")) {
        respond(fd, 404, "Not Found", "text/html", NULL, "<h1>404</h1>", 12);
    } else if (!strcmp(path, "/429")) {
        respond(fd, 429, "Too Many Requests", "text/plain", "Retry-After: 1\r\n", "", 0);
    } else if (!strncmp(path, "/flaky/", 7)) {
        if (first_time(path)) respond(fd, 500, "Internal Server Error", "text/plain", NULL, "", 0);
        else serve_file(fd, name, NULL, NULL, 100);
    } else if (!strncmp(path, "/html/", 6)) {
        const char *page = "<!DOCTYPE html><html><body>This is not an image</body></html>";
        respond(fd, 200, "OK", "image/jpeg", NULL, page, strlen(page));
    } else if (!strncmp(path, "/texttype/", 10)) {
        serve_file(fd, name, "text/html", NULL, 100);
    } else if (!strncmp(path, "/truncated/", 11)) {
        serve_file(fd, name, NULL, NULL, 60);
    } else if (!strncmp(path, "/cut/", 5)) {
        size_t len;
        char *b = read_file(name, &len);
        if (b) {
            char h[256];
            int hn = snprintf(h, sizeof h, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\n"
                                           "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                              ctype_of(name), len);
            if (!util_send_all(fd, h, (size_t)hn)) util_send_all(fd, b, len * 6 / 10);
            free(b);
        }
    } else if (!strcmp(path, "/slow")) {
        const char *h = "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
                        "Content-Length: 100000\r\nConnection: close\r\n\r\n";
        if (!util_send_all(fd, h, strlen(h)))
            for (int i = 0; i < 120 && !util_send_all(fd, "\xff", 1); i++) sleep(1);
    } else if (!strncmp(path, "/loop/", 6)) {
        char to[64];
        snprintf(to, sizeof to, "/loop/%d", atoi(name) + 1);
        redirect(fd, to);
    } else if (!strncmp(path, "/redirect/", 10)) {
        char to[2100];
        snprintf(to, sizeof to, "/img/%s", name);
        redirect(fd, to);
    } else if (!strcmp(path, "/redirect-private")) {
        redirect(fd, "http://10.255.255.1/secret.jpg");
    } else if (!strcmp(path, "/big") || !strcmp(path, "/big-chunked")) {
        int chunked = !strcmp(path, "/big-chunked");
        const char *h = chunked ? "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
                                  "Connection: close\r\n\r\n"
                                : "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
                                  "Content-Length: 67108864\r\nConnection: close\r\n\r\n";
        if (!util_send_all(fd, h, strlen(h)))
            for (int i = 0; i < 1024 && !util_send_all(fd, zeros, sizeof zeros); i++) {
            }
    } else if (!strncmp(path, "/noai/", 6)) {
        serve_file(fd, name, NULL, "X-Robots-Tag: noai, noimageai\r\n", 100);
    } else {
        respond(fd, 404, "Not Found", "text/plain", NULL, "", 0);
    }
    close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fault-server DIR PORTFILE\n");
        return 2;
    }
    root = argv[1];
    signal(SIGPIPE, SIG_IGN);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 512) ||
        getsockname(s, (struct sockaddr *)&a, &al)) {
        perror("fault-server");
        return 1;
    }
    FILE *pf = fopen(argv[2], "w");
    if (!pf) {
        perror(argv[2]);
        return 1;
    }
    fprintf(pf, "%d\n", ntohs(a.sin_port));
    fclose(pf);
    for (;;) {
        int fd = accept(s, NULL, NULL);
        if (fd < 0) continue;
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &at, conn, (void *)(intptr_t)fd)) close(fd);
        pthread_attr_destroy(&at);
    }
}
