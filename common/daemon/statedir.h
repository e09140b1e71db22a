/* statedir.h: where the embedded stack keeps its files, and how a process
 * finds Kafka, Redis and the blob store from its settings.
 *
 *   <state-dir>/broker.bootstrap   host:port of ursa-broker
 *   <state-dir>/redis.port         port of the private redis-server
 *   <state-dir>/redis/             its data (AOF) and redis.conf
 *   <state-dir>/blobs/             the blob store (unless blob.dir is set)
 *   <state-dir>/run/<name>.pid     pid files of the processes `ursa up` started
 *   <state-dir>/log/<name>.log     their logs
 * An explicit kafka.bootstrap / redis.url / blob.dir wins over these files,
 * which is how the daemons are pointed at real clusters. */
#ifndef URSA_STATEDIR_H
#define URSA_STATEDIR_H

#include <stddef.h>

#include "config.h"
#include "err.h"

/* blob.url, blob.dir, blob.min-free-mb and blob.s3-* */
extern const cfg_def cfg_defs_blob[];

/* The state dir: the state-dir setting (default ".ursa"). Borrowed. */
const char *statedir_root(const cfg *c);

/* <root>/<name> into out. */
ursa_err statedir_path(const cfg *c, const char *name, char *out, size_t size);

/* kafka.bootstrap, else the content of <state-dir>/broker.bootstrap. */
ursa_err statedir_kafka_bootstrap(const cfg *c, char *out, size_t size,
                                  char *errstr, size_t errstr_size);
/* redis.url, else redis://127.0.0.1:<port in <state-dir>/redis.port>. */
ursa_err statedir_redis_url(const cfg *c, char *out, size_t size,
                            char *errstr, size_t errstr_size);
/* blob.url, else blob.dir, else <state-dir>/blobs. */
ursa_err statedir_blob_dir(const cfg *c, char *out, size_t size);

/* Opens the blob store the settings name: an S3 bucket for blob.url
 * s3://..., with blob.s3-* and the credentials (blob.h), else the local
 * directory of statedir_blob_dir(), with blob.min-free-mb kept free. NULL
 * with one line in errstr when it cannot (for S3: unreachable, no bucket,
 * refused credentials). The caller destroys it. */
struct blob_store;
struct blob_store *statedir_blob_store(const cfg *c, char *errstr, size_t errstr_size);

#endif
