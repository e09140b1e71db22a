/* fetch.h: many HTTP(S) downloads at once (libcurl's multi interface), with
 * the SSRF guard, caps and failure classification the crawler and
 * classify-url need.
 *
 * The guard checks the address libcurl is about to connect to, after DNS,
 * for the first request and every redirect, so neither a hostname that
 * resolves to 10.0.0.1 nor a redirect to 169.254.169.254 gets a connection.
 * Refused by default: loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7),
 * link-local (169.254/16 with the cloud metadata address, fe80::/10), CGNAT,
 * multicast, reserved and unspecified addresses, and their IPv4-mapped forms.
 * An allow-list of CIDRs lets chosen ones through (tests, the demo). */
#ifndef URSA_NET_FETCH_H
#define URSA_NET_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"

/* fetch.* settings: timeouts, caps, concurrency, allow-list, user agent. */
extern const cfg_def fetch_cfg_defs[];

typedef struct {
    int max_total;         /* transfers in flight at once */
    int max_per_host;      /* connections to one host */
    long connect_timeout_ms, timeout_ms;
    long low_speed_bytes, low_speed_secs; /* abort below this rate */
    size_t max_bytes;      /* body size cap */
    int max_redirects;
    const char *user_agent;
    const char *allow;     /* comma-separated CIDRs let through the guard */
} fetch_opts;

fetch_opts fetch_opts_from_cfg(const cfg *c);

typedef struct {
    const char *url;        /* as requested */
    const char *final_url;  /* after redirects */
    long http_status;       /* 0 if no response */
    const char *content_type;
    const uint8_t *body;    /* the bytes, valid during the callback only */
    size_t len;
    int ok;                 /* 1: got an image-ish 2xx body */
    int transient;          /* on failure: could a retry succeed? */
    const char *reason;     /* on failure: http_404, timeout, dns, blocked_address,
                               too_large, not_an_image_type, robots_noai,
                               too_many_redirects, connect_failed,
                               connection_reset, bad_url, tls, ... */
    const char *detail;     /* human-readable */
} fetch_result;

typedef void fetch_done_cb(void *opaque, const fetch_result *r);

typedef struct fetch_ctx fetch_ctx;

/* NULL on a bad option (an unparsable allow-list), reason in errstr. */
fetch_ctx *fetch_new(const fetch_opts *o, char *errstr, size_t errstr_size);
/* Aborts what is in flight, calling each callback with reason "cancelled"
 * (transient), and frees. */
void fetch_destroy(fetch_ctx *f);

/* Queues a download; cb runs from fetch_run() when it ends, either way. */
ursa_err fetch_start(fetch_ctx *f, const char *url, fetch_done_cb *cb, void *opaque);

/* Waits up to timeout_ms for network activity, advances every transfer and
 * runs the callbacks of those that ended. Returns the transfers in flight. */
int fetch_run(fetch_ctx *f, int timeout_ms);

/* Ends the transfer in flight whose opaque is opaque: its callback runs
 * now with reason "cancelled". 0, or -1 when there is none. */
int fetch_cancel(fetch_ctx *f, void *opaque);

/* Makes a fetch_run() waiting on another thread return at once (the one
 * call here that is safe from any thread: curl_multi_wakeup). */
void fetch_wakeup(fetch_ctx *f);

/* 1 if addr (a sockaddr_in or sockaddr_in6) may be connected to under the
 * guard and allow-list of f. Exposed for tests. */
int fetch_address_allowed(const fetch_ctx *f, const void *sockaddr);

#endif
