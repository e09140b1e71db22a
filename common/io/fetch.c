/* fetch.c: libcurl multi downloads with the SSRF guard; see fetch.h. */
#include "fetch.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

const cfg_def fetch_cfg_defs[] = {
    {"fetch.max-inflight", CFG_INT, "256", 1, 100000, "downloads in flight at once"},
    {"fetch.max-per-host", CFG_INT, "16", 1, 10000, "connections to one host"},
    {"fetch.connect-timeout-ms", CFG_INT, "4000", 100, 600000, "connect timeout"},
    {"fetch.timeout-ms", CFG_INT, "15000", 100, 3600000, "whole-transfer timeout"},
    {"fetch.low-speed-bytes", CFG_INT, "1024", 0, 1e9,
     "abort a transfer slower than this many bytes/s ..."},
    {"fetch.low-speed-secs", CFG_INT, "5", 1, 3600, "... for this many seconds"},
    {"fetch.max-bytes", CFG_INT, "20000000", 1024, 4e9, "largest body accepted"},
    {"fetch.max-redirects", CFG_INT, "5", 0, 20, "redirects followed"},
    {"fetch.user-agent", CFG_STR, "ursa-crawler/0.1 (image dataset builder)", 1, 0,
     "User-Agent header"},
    {"fetch.allow", CFG_STR, "", 1, 0,
     "CIDRs let through the SSRF guard, comma-separated (e.g. 127.0.0.1/32)"},
    {NULL, 0, NULL, 0, 0, NULL}};

fetch_opts fetch_opts_from_cfg(const cfg *c) {
    fetch_opts o;
    o.max_total = (int)cfg_int(c, "fetch.max-inflight");
    o.max_per_host = (int)cfg_int(c, "fetch.max-per-host");
    o.connect_timeout_ms = (long)cfg_int(c, "fetch.connect-timeout-ms");
    o.timeout_ms = (long)cfg_int(c, "fetch.timeout-ms");
    o.low_speed_bytes = (long)cfg_int(c, "fetch.low-speed-bytes");
    o.low_speed_secs = (long)cfg_int(c, "fetch.low-speed-secs");
    o.max_bytes = (size_t)cfg_int(c, "fetch.max-bytes");
    o.max_redirects = (int)cfg_int(c, "fetch.max-redirects");
    o.user_agent = cfg_str(c, "fetch.user-agent");
    o.allow = cfg_str(c, "fetch.allow");
    return o;
}

typedef struct {
    int v6;
    uint8_t addr[16];
    int bits;
} cidr;

typedef struct xfer {
    struct fetch_ctx *f;
    CURL *easy;
    char *url;
    fetch_done_cb *cb;
    void *opaque;
    uint8_t *buf;
    size_t len, cap;
    char content_type[128];
    int blocked, too_large, noai;
    int busy;               /* added to the multi handle, not yet ended */
    struct xfer *next_free; /* in fetch_ctx.free_list while idle */
    struct xfer *next_all;  /* every transfer ever made, for fetch_destroy */
} xfer;

struct fetch_ctx {
    fetch_opts o;
    char *ua;
    CURLM *multi;
    CURLSH *share;
    cidr *allow;
    size_t nallow;
    int active;
    xfer *free_list, *all;
};

/* ---- the guard ------------------------------------------------------------- */

static int parse_cidr(const char *s, cidr *c) {
    char buf[80];
    snprintf(buf, sizeof buf, "%s", s);
    char *slash = strchr(buf, '/');
    if (slash) *slash = '\0';
    memset(c, 0, sizeof *c);
    if (inet_pton(AF_INET, buf, c->addr) == 1) {
        c->v6 = 0;
        c->bits = 32;
    } else if (inet_pton(AF_INET6, buf, c->addr) == 1) {
        c->v6 = 1;
        c->bits = 128;
    } else {
        return -1;
    }
    if (slash) {
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (*end || b < 0 || b > c->bits) return -1;
        c->bits = (int)b;
    }
    return 0;
}

static int in_prefix(const uint8_t *a, const uint8_t *p, int bits) {
    int full = bits / 8, rest = bits % 8;
    if (memcmp(a, p, (size_t)full) != 0) return 0;
    if (!rest) return 1;
    uint8_t mask = (uint8_t)(0xFF << (8 - rest));
    return (a[full] & mask) == (p[full] & mask);
}

/* 1 if the IPv4 address (network order bytes) is not publicly routable. */
static int v4_blocked(const uint8_t *a) {
    static const struct {
        uint8_t p[4];
        int bits;
    } bad[] = {{{0, 0, 0, 0}, 8},       {{10, 0, 0, 0}, 8},     {{100, 64, 0, 0}, 10},
               {{127, 0, 0, 0}, 8},     {{169, 254, 0, 0}, 16}, {{172, 16, 0, 0}, 12},
               {{192, 0, 0, 0}, 24},    {{192, 0, 2, 0}, 24},   {{192, 168, 0, 0}, 16},
               {{198, 18, 0, 0}, 15},   {{198, 51, 100, 0}, 24}, {{203, 0, 113, 0}, 24},
               {{224, 0, 0, 0}, 4},     {{240, 0, 0, 0}, 4}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (in_prefix(a, bad[i].p, bad[i].bits)) return 1;
    return 0;
}

/* 1 if the IPv6 address is not publicly routable, or embeds an IPv4
 * address that is not (the forms a resolver or a URL can use to reach an
 * IPv4 host through IPv6: mapped, translated, compatible, 6to4, Teredo,
 * NAT64). */
static int v6_blocked(const uint8_t *a) {
    static const uint8_t zero[12] = {0};
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t translated[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0};
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b};
    static const uint8_t nat64_local[6] = {0, 0x64, 0xff, 0x9b, 0, 1}; /* 64:ff9b:1::/48 */
    /* ::/96: ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d, never routed */
    if (!memcmp(a, zero, 12)) return 1;
    if (!memcmp(a, mapped, 12) || !memcmp(a, translated, 12) || !memcmp(a, nat64, 12) ||
        !memcmp(a, nat64_local, 6))
        return v4_blocked(a + 12);
    if (a[0] == 0x20 && a[1] == 0x02) return v4_blocked(a + 2); /* 6to4: 2002:V4ADDR::/48 */
    if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0 && a[3] == 0) { /* Teredo: 2001::/32 */
        uint8_t client[4] = {(uint8_t)~a[12], (uint8_t)~a[13], (uint8_t)~a[14], (uint8_t)~a[15]};
        return v4_blocked(a + 4) || v4_blocked(client); /* the server, the client (inverted) */
    }
    if ((a[0] & 0xfe) == 0xfc) return 1;                  /* fc00::/7 unique local */
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) return 1;  /* fe80::/10 link-local */
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0) return 1;  /* fec0::/10 site-local */
    if (a[0] == 0xff) return 1;                           /* multicast */
    if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8) return 1; /* doc */
    return 0;
}

int fetch_address_allowed(const fetch_ctx *f, const void *sa) {
    const struct sockaddr *s = sa;
    uint8_t a[16];
    int v6;
    if (s->sa_family == AF_INET) {
        memcpy(a, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        v6 = 0;
    } else if (s->sa_family == AF_INET6) {
        memcpy(a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        v6 = 1;
    } else {
        return 0;
    }
    for (size_t i = 0; i < f->nallow; i++)
        if (f->allow[i].v6 == v6 && in_prefix(a, f->allow[i].addr, f->allow[i].bits)) return 1;
    return v6 ? !v6_blocked(a) : !v4_blocked(a);
}

static curl_socket_t open_socket(void *clientp, curlsocktype purpose,
                                 struct curl_sockaddr *addr) {
    xfer *x = clientp;
    (void)purpose;
    if (!fetch_address_allowed(x->f, &addr->addr)) {
        x->blocked = 1;
        return CURL_SOCKET_BAD;
    }
    return socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
}

/* ---- callbacks -------------------------------------------------------------- */

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
    xfer *x = ud;
    size_t len = sz * n;
    if (x->len + len > x->f->o.max_bytes) {
        x->too_large = 1;
        return 0; /* aborts the transfer */
    }
    if (x->len + len > x->cap) {
        size_t cap = x->cap ? x->cap : 16384;
        while (cap < x->len + len) cap *= 2;
        uint8_t *nb = realloc(x->buf, cap);
        if (!nb) return 0;
        x->buf = nb;
        x->cap = cap;
    }
    memcpy(x->buf + x->len, p, len);
    x->len += len;
    return len;
}

/* Finds `token` as a word in s, case-insensitively. */
static int has_token(const char *s, size_t n, const char *token) {
    size_t tl = strlen(token);
    for (size_t i = 0; i + tl <= n; i++) {
        if (strncasecmp(s + i, token, tl) != 0) continue;
        int before = i == 0 || !isalnum((unsigned char)s[i - 1]);
        int after = i + tl == n || !isalnum((unsigned char)s[i + tl]);
        if (before && after) return 1;
    }
    return 0;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud) {
    xfer *x = ud;
    size_t len = sz * n;
    if (len >= 5 && !strncmp(p, "HTTP/", 5)) { /* a new response (redirect): reset */
        x->noai = 0;
        x->content_type[0] = '\0';
        return len;
    }
    if (len > 13 && !strncasecmp(p, "X-Robots-Tag:", 13)) {
        if (has_token(p + 13, len - 13, "noai") || has_token(p + 13, len - 13, "noimageai"))
            x->noai = 1;
    } else if (len > 15 && !strncasecmp(p, "Content-Length:", 15)) {
        unsigned long long cl = strtoull(p + 15, NULL, 10);
        if (cl > x->f->o.max_bytes) {
            x->too_large = 1;
            return 0;
        }
    }
    return len;
}

/* ---- lifecycle -------------------------------------------------------------- */

fetch_ctx *fetch_new(const fetch_opts *o, char *errstr, size_t n) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    fetch_ctx *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->o = *o;
    f->ua = strdup(o->user_agent ? o->user_agent : "ursa");
    char *list = strdup(o->allow ? o->allow : "");
    if (!f->ua || !list) goto oom;
    for (char *save = NULL, *tok = strtok_r(list, ", ", &save); tok;
         tok = strtok_r(NULL, ", ", &save)) {
        cidr *na = realloc(f->allow, (f->nallow + 1) * sizeof *na);
        if (!na) goto oom;
        f->allow = na;
        if (parse_cidr(tok, &f->allow[f->nallow])) {
            snprintf(errstr, n, "fetch.allow: \"%s\" is not an address or CIDR", tok);
            free(list);
            fetch_destroy(f);
            return NULL;
        }
        f->nallow++;
    }
    free(list);
    list = NULL;
    f->multi = curl_multi_init();
    f->share = curl_share_init();
    if (!f->multi || !f->share) goto oom;
    curl_share_setopt(f->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_multi_setopt(f->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)o->max_per_host);
    curl_multi_setopt(f->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)o->max_total);
    curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, (long)o->max_total);
    return f;
oom:
    free(list);
    snprintf(errstr, n, "out of memory");
    fetch_destroy(f);
    return NULL;
}

static void xfer_free(xfer *x) {
    if (x->easy) curl_easy_cleanup(x->easy);
    free(x->url);
    free(x->buf);
    free(x);
}

/* Ends a transfer in flight as cancelled: its callback runs, its handle
 * goes back to the free list. */
static void end_cancelled(xfer *x, const char *why) {
    fetch_ctx *f = x->f;
    curl_multi_remove_handle(f->multi, x->easy);
    x->busy = 0;
    f->active--;
    fetch_result r;
    memset(&r, 0, sizeof r);
    r.url = r.final_url = x->url;
    r.content_type = "";
    r.transient = 1;
    r.reason = "cancelled";
    r.detail = why;
    x->cb(x->opaque, &r);
    x->next_free = f->free_list;
    f->free_list = x;
}

int fetch_cancel(fetch_ctx *f, void *opaque) {
    for (xfer *x = f->all; x; x = x->next_all)
        if (x->busy && x->opaque == opaque) {
            end_cancelled(x, "cancelled by its owner");
            return 0;
        }
    return -1;
}

void fetch_wakeup(fetch_ctx *f) { curl_multi_wakeup(f->multi); }

void fetch_destroy(fetch_ctx *f) {
    if (!f) return;
    /* transfers still running end as cancelled, so their owners can let go */
    for (xfer *x = f->all; x; x = x->next_all)
        if (x->busy) end_cancelled(x, "the downloader stopped");
    while (f->all) {
        xfer *x = f->all;
        f->all = x->next_all;
        xfer_free(x);
    }
    if (f->multi) curl_multi_cleanup(f->multi);
    if (f->share) curl_share_cleanup(f->share);
    free(f->allow);
    free(f->ua);
    free(f);
}

ursa_err fetch_start(fetch_ctx *f, const char *url, fetch_done_cb *cb, void *opaque) {
    xfer *x = f->free_list;
    if (x) {
        f->free_list = x->next_free;
        curl_easy_reset(x->easy); /* keeps the handle's connection and DNS caches */
    } else {
        x = calloc(1, sizeof *x);
        if (!x || !(x->easy = curl_easy_init())) {
            free(x);
            return URSA_ERR_NOMEM;
        }
        x->next_all = f->all;
        f->all = x;
    }
    x->f = f;
    x->cb = cb;
    x->opaque = opaque;
    x->len = 0;
    x->blocked = x->too_large = x->noai = 0;
    x->content_type[0] = '\0';
    free(x->url);
    if (!(x->url = strdup(url))) {
        x->next_free = f->free_list;
        f->free_list = x;
        return URSA_ERR_NOMEM;
    }
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, x->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_SHARE, f->share);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_PROXY, ""); /* a proxy would hide the target from the guard */
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)f->o.max_redirects);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, f->o.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, f->o.timeout_ms);
    if (f->o.low_speed_bytes > 0) {
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, f->o.low_speed_bytes);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, f->o.low_speed_secs);
    }
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->o.max_bytes);
    curl_easy_setopt(e, CURLOPT_USERAGENT, f->ua);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, ""); /* gzip etc. if the server likes */
    curl_easy_setopt(e, CURLOPT_DNS_CACHE_TIMEOUT, 300L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    if (curl_multi_add_handle(f->multi, e) != CURLM_OK) {
        x->next_free = f->free_list;
        f->free_list = x;
        return URSA_ERR_NOMEM;
    }
    f->active++;
    x->busy = 1;
    return URSA_OK;
}

/* Fills r's verdict from the transfer's outcome. */
static void classify(xfer *x, CURLcode rc, fetch_result *r, char *reason, size_t rn,
                     char *detail, size_t dn) {
    long st = r->http_status;
    r->ok = 0;
    r->transient = 0;
#define SET(t, why, ...)                                                         \
    do {                                                                         \
        r->transient = (t);                                                      \
        snprintf(reason, rn, "%s", why);                                         \
        snprintf(detail, dn, __VA_ARGS__);                                       \
    } while (0)
    if (x->blocked && rc != CURLE_OK) { /* a refused address libcurl could not replace */
        SET(0, "blocked_address", "refused to connect to a private, loopback or "
                                  "link-local address (SSRF guard)");
    } else if (x->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
        SET(0, "too_large", "body larger than %zu bytes", x->f->o.max_bytes);
    } else if (rc != CURLE_OK) {
        const char *e = curl_easy_strerror(rc);
        switch (rc) {
        case CURLE_OPERATION_TIMEDOUT: SET(1, "timeout", "%s", e); break;
        case CURLE_COULDNT_RESOLVE_HOST: SET(0, "dns", "%s", e); break;
        case CURLE_COULDNT_CONNECT: SET(1, "connect_failed", "%s", e); break;
        case CURLE_TOO_MANY_REDIRECTS: SET(0, "too_many_redirects", "%s", e); break;
        case CURLE_URL_MALFORMAT: SET(0, "bad_url", "%s", e); break;
        case CURLE_UNSUPPORTED_PROTOCOL: SET(0, "unsupported_scheme", "%s", e); break;
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CONNECT_ERROR: SET(0, "tls", "%s", e); break;
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE: SET(1, "connection_reset", "%s", e); break;
        default: SET(1, "network", "%s", e); break;
        }
    } else if (st == 429 || st == 408 || st >= 500) {
        char w[16];
        snprintf(w, sizeof w, "http_%ld", st);
        SET(1, w, "server answered %ld", st);
    } else if (st < 200 || st >= 300) {
        char w[16];
        snprintf(w, sizeof w, "http_%ld", st);
        SET(0, w, "server answered %ld", st);
    } else if (x->noai) {
        SET(0, "robots_noai", "X-Robots-Tag forbids AI use (noai/noimageai)");
    } else if (r->content_type && *r->content_type &&
               strncasecmp(r->content_type, "image/", 6) != 0 &&
               strncasecmp(r->content_type, "application/octet-stream", 24) != 0 &&
               strncasecmp(r->content_type, "binary/octet-stream", 19) != 0) {
        SET(0, "not_an_image_type", "Content-Type %s", r->content_type);
    } else {
        r->ok = 1;
    }
#undef SET
}

int fetch_run(fetch_ctx *f, int timeout_ms) {
    int running = 0;
    if (timeout_ms > 0) curl_multi_poll(f->multi, NULL, 0, timeout_ms, NULL);
    curl_multi_perform(f->multi, &running);
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(f->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        CURL *e = m->easy_handle;
        CURLcode rc = m->data.result;
        xfer *x = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
        fetch_result r;
        memset(&r, 0, sizeof r);
        char reason[32] = "", detail[256] = "";
        char *ct = NULL, *eff = NULL;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r.http_status);
        curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ct);
        curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &eff);
        snprintf(x->content_type, sizeof x->content_type, "%s", ct ? ct : "");
        r.url = x->url;
        r.final_url = eff ? eff : x->url;
        r.content_type = x->content_type;
        classify(x, rc, &r, reason, sizeof reason, detail, sizeof detail);
        r.reason = reason;
        r.detail = detail;
        r.body = x->buf;
        r.len = x->len;
        curl_multi_remove_handle(f->multi, e);
        f->active--;
        x->busy = 0;
        x->cb(x->opaque, &r);
        x->next_free = f->free_list; /* reuse the easy handle */
        f->free_list = x;
    }
    return f->active;
}
