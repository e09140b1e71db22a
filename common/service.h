/* service.h: what every ursa daemon does before and around its loop:
 * settings with --help, the log level, stop signals. */
#ifndef URSA_SERVICE_H
#define URSA_SERVICE_H

#include <stdatomic.h>

#include "config.h"
#include "err.h"

/* Loads the settings of a daemon named name (also its log svc= value) from
 * tables (NULL-terminated; "kafka." pass-through on). On --help prints usage
 * and the settings to stdout and returns 0 with *out NULL; on a bad setting
 * prints the reason to stderr and returns 2; else returns -1 and *out holds
 * the config (caller destroys it) and *argi the first positional argument. */
int service_setup(const char *name, const char *usage,
                  const cfg_def *const *tables, int argc, char **argv,
                  cfg **out, int *argi);

/* 1 when the next heartbeat is due (every 2 s); callers format their
 * counters only then. */
int service_beat_due(void);

/* Records that this daemon is alive: the hash
 * ursa:svc:<name>:<pid> gets ts_ms and the given counters (NULL-terminated
 * name/value pairs) and expires after 15 s. Call it when service_beat_due(). `ursa status` reads it. Redis
 * being down is not an error here (the next beat tries again). */
struct rstore;
void service_beat(struct rstore *r, const char *name, const char *const *kv);
/* A daemon's last heartbeat (HGETALL: an array reply, empty when it has
 * none or it expired). */
struct redisReply;
ursa_err service_beat_get(struct rstore *r, const char *name, int pid,
                          struct redisReply **rep);

/* Says why this daemon cannot do its work now ("blob store full (N bytes
 * free)"), or that it can again (NULL). The heartbeat carries it as the
 * field degraded, and `ursa status` shows it; the next beat is sent at
 * once. */
void service_degraded(const char *why);

/* Where a daemon finds Kafka, Redis and the blob store: the settings
 * kafka.bootstrap, redis.url and blob.dir, or the embedded stack's files in
 * the state dir (common/statedir.h). */
typedef struct {
    char kafka[512];
    char redis[600];
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

/* Resolves the addresses and opens all three; on failure prints the reason
 * and returns -1 (2 for a bad address setting, 1 for the rest in *rc). */
int service_connect(const cfg *c, const char *prog, service_conns *s, int *rc);
/* Flushes the producer and closes everything; fine on a partial connect. */
void service_disconnect(service_conns *s);

/* SIGTERM and SIGINT set *run to 0, and the process exits (status 3) 14 s
 * after the first of them whatever still runs; SIGPIPE is ignored. */
void service_signals(atomic_int *run);

#endif
