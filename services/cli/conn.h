/* conn.h: how CLI commands reach the stack: Redis, Kafka and the blob store
 * at the addresses of their settings (or the embedded stack's state dir).
 * Each prints the reason to stderr and returns NULL on failure. */
#ifndef URSA_CLI_CONN_H
#define URSA_CLI_CONN_H

#include "blob.h"
#include "config.h"
#include "kq.h"
#include "rstore.h"

rstore *cli_redis(const cfg *c);
kq_producer *cli_kafka(const cfg *c);
blob_store *cli_blobs(const cfg *c);

/* --dataset NAME, checked; NULL (after printing why) when missing or bad. */
const char *cli_dataset(const cfg *c, const char *cmd);

#endif
