/* service.h: what every ursa daemon does before and around its loop:
 * settings with --help, the log level, stop signals. */
#ifndef URSA_SERVICE_H
#define URSA_SERVICE_H

#include <signal.h>

#include "config.h"

/* Loads the settings of a daemon named name (also its log svc= value) from
 * tables (NULL-terminated; "kafka." pass-through on). On --help prints usage
 * and the settings to stdout and returns 0 with *out NULL; on a bad setting
 * prints the reason to stderr and returns 2; else returns -1 and *out holds
 * the config (caller destroys it) and *argi the first positional argument. */
int service_setup(const char *name, const char *usage,
                  const cfg_def *const *tables, int argc, char **argv,
                  cfg **out, int *argi);

/* Records that this daemon is alive, at most every 2 s: the hash
 * ursa:svc:<name>:<pid> gets ts_ms and the given counters (NULL-terminated
 * name/value pairs) and expires after 15 s. `ursa status` reads it. Redis
 * being down is not an error here (the next beat tries again). */
struct rstore;
void service_beat(struct rstore *r, const char *name, const char *const *kv);

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

/* SIGTERM and SIGINT set *run to 0; SIGPIPE is ignored. */
void service_signals(volatile sig_atomic_t *run);

#endif
