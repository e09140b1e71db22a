/* health.h: a daemon's liveness and readiness, and the small HTTP server
 * (common/io/http.h) that shows them beside its metrics on
 * <daemon>.metrics-port, for the daemons with no HTTP port of their own;
 * ursa-inference and ursa-console put the same handlers in their tables.
 *
 *   GET /healthz  200 "ok" while the daemon's loop turns (health_loop_alive
 *                 at least every HEALTH_STALL_MS); then 503 "loop stalled".
 *   GET /readyz   200 "ready" when the last check reached Redis, Kafka and
 *                 the blob store and the daemon is not degraded; else 503
 *                 with the reasons, one a line.
 *   GET /metrics  the registry (metrics.h), Prometheus text 0.0.4.
 *
 * The checks run every HEALTH_CHECK_MS on a thread of their own, with
 * their own Redis connection and blob store handle, and the daemon's Kafka
 * handle (librdkafka's metadata calls are thread-safe): the HTTP event
 * threads only read the last verdict, and the daemon's loop never waits
 * for a check. One daemon a process: the state is the process's. */
#ifndef URSA_HEALTH_H
#define URSA_HEALTH_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "http.h"

#define HEALTH_CHECK_MS 1000
#define HEALTH_STALL_MS 60000

/* What to check; NULL or "" leaves a dependency out. */
typedef struct {
    const char *redis_url;
    rd_kafka_t *kafka; /* borrowed: must outlive health_stop() */
    struct blob_store *bs; /* borrowed: must outlive health_stop() */
} health_deps;

/* Checks once, then starts the checking thread. The strings are copied.
 * 0, or -1 with the reason in err. */
int health_start(const health_deps *d, char *err, size_t n);
/* Stops the thread; fine when it never started. */
void health_stop(void);

/* The daemon's loop turned (/healthz). */
void health_loop_alive(void);
/* Why the daemon cannot do its work now, or NULL when it can again. */
void health_set_degraded(const char *why);
/* 1 while degraded, with why in out (may be NULL); else 0 and out "". */
int health_degraded(char *out, size_t n);
/* 1 when ready; else 0 with the reasons in why ("redis: ...; kafka: ..."). */
int health_ready(char *why, size_t n);

/* The route handlers (ctx unused). */
int health_healthz(void *ctx, http_req *r);
int health_readyz(void *ctx, http_req *r);
int health_metrics(void *ctx, http_req *r);

/* Serves /healthz, /readyz and /metrics on bind:port. NULL with the
 * reason in err. */
http_server *health_listen(const char *bind, int port, char *err, size_t n);

#endif
