/* console.h: ursa-console's shared state: the settings, the sessions, the
 * worker pool that does what needs Redis or the blob store (HTTP handlers
 * must not block: common/io/http.h), and the caches that make the cleaner's
 * gallery fast. */
#ifndef URSA_CONSOLE_H
#define URSA_CONSOLE_H

#include <pthread.h>
#include <stdint.h>

#include "blob.h"
#include "config.h"
#include "http.h"
#include "kq.h"
#include "label_issues.h"
#include "pool.h"
#include "service.h"

#define CONSOLE_SESSIONS 256

typedef struct {
    char sid[65], csrf[65]; /* 256-bit random, hex */
    int64_t expires_ms;
} session;

/* Failed logins of one client address: after CONSOLE_FREE_FAILS in a row
 * it waits 1 s, then twice as long after each further failure (at most
 * 15 min); a login from it clears them. Other addresses are not held up. */
#define CONSOLE_GUARDS 256
#define CONSOLE_FREE_FAILS 5
typedef struct {
    char addr[48];
    int fails;        /* failed logins in a row */
    int64_t until_ms; /* no login from it before */
    int64_t last_ms;  /* its last failure */
} login_guard;

/* A parsed audit, kept while it is the dataset's latest. */
typedef struct {
    char ds[72], key[65], job[48];
    li_row *rows;
    size_t n;
    long long seen_seq;
} audit_cache;

typedef struct {
    const cfg *c;
    service_conns sc; /* the producer and blob store are shared; Redis is per worker */
    http_server *http;
    pool *work;
    char token[128];
    size_t token_len;
    int64_t session_ms;
    int cookie_secure;
    pthread_mutex_t mu;       /* sessions and login failures (the event threads wait on it) */
    pthread_mutex_t cache_mu; /* the audit cache (workers only) */
    session sessions[CONSOLE_SESSIONS];
    login_guard guards[CONSOLE_GUARDS]; /* failed logins by client address */
    audit_cache audits[4];
    int audit_next;
} console;

extern const http_route console_routes[];
extern const char console_csp[];

/* Runs fn on a worker (its Redis connection in *r), after the handler
 * checked the session; answers 503 when the queue is full. */
typedef void console_fn(console *s, http_req *r, struct rstore *redis);
int console_defer(console *s, http_req *r, console_fn *fn);

/* The session of a request's cookie: 1 when logged in; csrf (may be NULL,
 * 65 bytes) gets its CSRF token. */
int console_session(console *s, http_req *r, char *csrf);

/* API handlers (api.c), run on workers. */
console_fn api_datasets, api_dataset, api_jobs, api_job, api_models, api_model, api_suspects,
    api_thumb, api_edit, api_retrain;

/* A form field of an application/x-www-form-urlencoded body, decoded into
 * out: its length, -1 when absent, -2 when too long. */
int form_get(const char *body, size_t len, const char *name, char *out, size_t n);

#endif
