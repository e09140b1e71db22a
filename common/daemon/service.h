/* service.h: what every ursa daemon does before and around its loop:
 * settings with --help, the log level, its instance id and heartbeat, its
 * health and metrics endpoints, stop signals. */
#ifndef URSA_SERVICE_H
#define URSA_SERVICE_H

#include <stdatomic.h>

#include "config.h"
#include "err.h"

/* A daemon that serves /metrics, /healthz and /readyz on an HTTP port of
 * its own (ursa-inference, ursa-console) rather than on
 * <name>.metrics-port. */
#define SERVICE_OWN_HTTP 1
/* Not a stage of the pipeline (ursa-broker): no instance id, no heartbeat,
 * no metrics port. */
#define SERVICE_NO_BEAT 2

/* The ports ursa-inference and ursa-console listen on unless told; `ursa
 * up` moves a daemon off its default when another process holds it. */
#define SERVICE_INFERENCE_PORT "8080"
#define SERVICE_CONSOLE_PORT "8090"

/* Loads the settings of a daemon named name (also its log svc= value and
 * its metrics' prefix ursa_<name>) from tables (NULL-terminated; "kafka."
 * pass-through on), adding the settings every daemon has (unless
 * SERVICE_NO_BEAT): <name>.instance and, without SERVICE_OWN_HTTP,
 * <name>.metrics-port and <name>.metrics-bind. On --help prints usage and the settings to stdout
 * and returns 0 with *out NULL; on a bad setting prints the reason to
 * stderr and returns 2; else returns -1 and *out holds the config (caller
 * destroys it) and *argi the first positional argument. */
/* The build's version: the project's and the commit it was configured at
 * ("0.1.0+a374875"), as heartbeats, /metrics and --version show it. */
const char *service_version(void);

int service_setup(const char *name, int flags, const char *usage,
                  const cfg_def *const *tables, int argc, char **argv,
                  cfg **out, int *argi);

/* 1 when the next heartbeat is due (every HB_INTERVAL_MS); callers format
 * their counters only then. Call it on every turn of the daemon's loop: it
 * also tells /healthz the loop turns. */
int service_beat_due(void);

/* Records that this instance is alive (common/state/heartbeats.h): its identity,
 * whether it is degraded, and the given counters (NULL-terminated
 * name/value pairs), expiring after HB_TTL_MS (15 s). Call it when
 * service_beat_due(). `ursa status` reads it. Redis being down is not an
 * error here (the next beat tries again). */
struct rstore;
void service_beat(struct rstore *r, const char *const *kv);

/* Says why this daemon cannot do its work now ("blob store full (N bytes
 * free)"), or that it can again (NULL). The heartbeat carries it as the
 * field degraded, `ursa status` shows it and /readyz answers 503; the next
 * beat is sent at once. */
void service_degraded(const char *why);

/* Where a daemon finds Kafka, Redis and the blob store: the settings
 * kafka.bootstrap, redis.url and blob.dir, or the embedded stack's files in
 * the state dir (common/daemon/statedir.h). */
typedef struct {
    char kafka[512];
    char redis[600];
    char redis_shown[600]; /* redis as logged: its password "***" */
    char blobs[4096];
} service_addrs;

/* Fills a; on failure prints "PROG: reason" to stderr and returns -1. */
int service_addrs_resolve(const cfg *c, const char *prog, service_addrs *a);

/* What a stage daemon talks to: Redis (connected lazily), the blob store
 * and an idempotent producer, at the addresses in a. */
struct blob_store;
struct kq_producer;
typedef struct {
    service_addrs a;
    struct rstore *r;
    struct blob_store *bs;
    struct kq_producer *p;
} service_conns;

/* Resolves the addresses and opens all three, then starts the readiness
 * checks of common/daemon/health.h on them and, when <name>.metrics-port is set,
 * the server of /metrics, /healthz and /readyz. On failure prints the
 * reason and returns -1 (2 for a bad address setting, 1 for the rest in
 * *rc). */
int service_connect(const cfg *c, const char *prog, service_conns *s, int *rc);
/* Takes this instance's heartbeat out of Redis (a clean stop), stops the
 * checks and the metrics server, flushes the producer and closes
 * everything; fine on a partial connect. */
void service_disconnect(service_conns *s);

/* SIGTERM and SIGINT set *run to 0, and the process exits (status 3) 14 s
 * after the first of them whatever still runs; SIGPIPE is ignored. */
void service_signals(atomic_int *run);

#endif
