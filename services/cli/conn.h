/* conn.h: how CLI commands reach the stack: Redis, Kafka and the blob store
 * at the addresses of their settings (or the embedded stack's state dir).
 * Each prints the reason to stderr and returns NULL on failure. */
#ifndef URSA_CLI_CONN_H
#define URSA_CLI_CONN_H

#include <stdint.h>

#include "blob.h"
#include "config.h"
#include "kq.h"
#include "rstore.h"

rstore *cli_redis(const cfg *c);
kq_producer *cli_kafka(const cfg *c);
blob_store *cli_blobs(const cfg *c);

/* Waiting on Redis through an outage (a failover, a restart, a stall): a
 * command that waits for the stack's work polls Redis, and a failed poll
 * is an outage, not the end; the work goes on without us. cli_outage_note
 * is called after each poll with its result and when the poll began: it
 * says when an outage begins and ends, and returns 1 (after saying so) once Redis has not answered
 * for limit_s seconds, 0 to go on polling. */
typedef struct {
    const char *cmd;  /* "ursa ingest" */
    long long limit_s;
    int64_t since;    /* when the outage began (util_mono_ms), 0: none */
    int64_t said;     /* when the last line about it was printed */
} cli_outage;
int cli_outage_note(cli_outage *o, ursa_err err, rstore *r, int64_t asked_at);

/* --dataset NAME, checked; NULL (after printing why) when missing or bad. */
const char *cli_dataset(const cfg *c, const char *cmd);
/* The --output (-o) setting of cmd: 1 for json, 0 for text, -1 (said on
 * stderr) for anything else. */
int cli_json(const cfg *c, const char *cmd);
#define CLI_OUTPUT_DEF {"output", CFG_STR, "text", 1, 0, "text or json (-o json), for scripts"}

#endif
