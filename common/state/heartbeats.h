/* heartbeats.h: the daemons' heartbeats in Redis, the owner of the key
 * family ursa:{svc}:*. Every daemon instance beats every 2 s (service.h);
 * `ursa status` and `ursa up` read them, from any host.
 *
 *   ursa:{svc}:<service>:<instance>  hash: service, instance, host, pid,
 *                                    started_ms, version, ts_ms, metrics_port,
 *                                    degraded (while it is), and the daemon's
 *                                    counters; expires HB_TTL_MS after its
 *                                    last beat
 *   ursa:{svc}:index                 sorted set: "<service> <host> <instance>"
 *                                    scored by the last beat's time (ms);
 *                                    entries older than HB_STALE_MS are pruned
 *                                    by every beat
 *
 * An instance is live while its hash exists, stale when the hash expired
 * but the index saw it within HB_STALE_MS (a process killed, or cut off from
 * Redis), and forgotten after that. A daemon that stops cleanly takes both
 * out (hb_remove), so stopping is not mistaken for dying. The instance id is
 * the key, not the pid: in containers every daemon is PID 1. All keys share
 * the hash tag {svc}, so in a Redis Cluster they sit in one slot: no KEYS
 * or SCAN over the cluster, and a pipeline of them goes to one node. */
#ifndef URSA_HEARTBEATS_H
#define URSA_HEARTBEATS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "rstore.h"

#define HB_INTERVAL_MS 2000 /* how often a daemon beats */
#define HB_TTL_MS 15000     /* a beat expires this long after it was sent */
#define HB_STALE_MS 300000  /* an expired instance is listed as stale this long */
#define HB_INSTANCE_MAX 100 /* longest instance id */

/* Who beats. Strings borrowed. */
typedef struct {
    const char *service;  /* "crawler" */
    const char *instance; /* "myhost:1234" unless set */
    const char *host;
    int pid;
    int64_t started_ms;
    const char *version;
    int metrics_port; /* 0: none */
} hb_identity;

/* 1 if s can be an instance id: 1 to HB_INSTANCE_MAX characters of
 * letters, digits and . _ - : @ (no spaces: the index joins fields with
 * them). */
int hb_instance_valid(const char *s);

/* Sends one beat of id, with degraded ("" or NULL: not degraded) and the
 * counters kv (NULL-terminated name/value pairs; may be NULL), in one
 * round trip. Returns the rstore error (Redis down: the next beat tries
 * again). */
ursa_err hb_beat(rstore *r, const hb_identity *id, const char *degraded,
                 const char *const *kv);

/* Takes id's heartbeat and its index entry out (a clean stop). */
ursa_err hb_remove(rstore *r, const hb_identity *id);

/* One instance as read back. */
typedef struct {
    char service[32], instance[HB_INSTANCE_MAX + 1], host[256], version[64];
    char degraded[400]; /* "" when not */
    int live;           /* 0: stale (its heartbeat expired) */
    int pid, metrics_port;
    int64_t started_ms;
    int64_t last_ms;    /* the last beat's time */
    char **kv;          /* the counters: nkv name/value pairs, in the order sent */
    size_t nkv;
} hb_instance;

/* Every instance seen since now_ms - HB_STALE_MS, ordered by service, host
 * and instance id, in two round trips. *out is a new array the caller frees
 * with hb_list_free(). */
ursa_err hb_list(rstore *r, int64_t now_ms, hb_instance **out, size_t *n);
void hb_list_free(hb_instance *a, size_t n);

#endif
