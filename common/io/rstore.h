/* rstore.h: Redis access with timeouts, reconnects and pipelining.
 *
 * One rstore is one connection, used by one thread at a time. When the
 * connection breaks, a call reconnects with exponential backoff and sends its
 * command(s) again until retry_ms has passed, then returns
 * URSA_ERR_UNAVAILABLE. Because a command may reach Redis twice (the reply to
 * the first try can be lost), everything sent through rstore must be
 * idempotent: HSET, SET NX, SADD, or a Lua script that checks a marker. */
#ifndef URSA_RSTORE_H
#define URSA_RSTORE_H

#include <hiredis.h>
#include <stddef.h>

#include "err.h"

typedef struct rstore rstore;

/* Parses url (redis://[:password@]host[:port][,host:port...][/db]) and
 * connects lazily: Redis may be down at this point. Several hosts are seed
 * nodes, tried in turn. On first contact rstore learns whether it talks to
 * one Redis or a Redis Cluster (CLUSTER SLOTS), and in a cluster sends
 * every command to its key's master (see rstore.c); a script's first
 * declared key routes it, so a script's keys must share a hash tag. NULL on
 * a bad URL, reason in errstr. */
rstore *rstore_new(const char *url, int timeout_ms, char *errstr,
                   size_t errstr_size);
void rstore_destroy(rstore *r);

/* 1 once rstore found a Redis Cluster behind its URL. */
int rstore_is_cluster(const rstore *r);
/* The cluster slot of a key: CRC16 of the key, or of its {hash tag}. */
unsigned rstore_key_slot(const char *key, size_t len);

/* How long a call keeps reconnecting before it gives up (default 10000). */
void rstore_set_retry_ms(rstore *r, int retry_ms);

/* The last connection or reply error, for logs. Borrowed. */
const char *rstore_last_error(const rstore *r);

/* Runs one command in hiredis' format ("HSET %s %s %b"). On OK *reply (if
 * not NULL) receives the reply, which the caller frees with
 * freeReplyObject(). An error reply gives URSA_ERR_REDIS. */
ursa_err rstore_cmd(rstore *r, redisReply **reply, const char *fmt, ...);
ursa_err rstore_cmdargv(rstore *r, redisReply **reply, int argc,
                        const char **argv, const size_t *argvlen);

/* HGETALL of a key; URSA_ERR_NOT_FOUND (and no reply) when the hash is
 * empty or missing. */
ursa_err rstore_hgetall(rstore *r, redisReply **reply, const char *key);

/* A pipeline: commands are formatted now, sent in one write, and their
 * replies read back in order. */
typedef struct rstore_batch rstore_batch;
rstore_batch *rstore_batch_new(void);
void rstore_batch_destroy(rstore_batch *b);
ursa_err rstore_batch_add(rstore_batch *b, const char *fmt, ...);
/* The same for a command given as argc strings (keys, for one, need no
 * format): UNLINK of many keys. */
ursa_err rstore_batch_add_argv(rstore_batch *b, int argc, const char **argv);
size_t rstore_batch_len(const rstore_batch *b);
/* Sends the batch. On OK, if replies is not NULL, *replies is a new array of
 * rstore_batch_len() replies the caller frees with rstore_replies_free(). An
 * error reply inside the batch does not fail the call; check each reply. The
 * batch stays intact and may be sent again or destroyed. */
ursa_err rstore_batch_exec(rstore *r, rstore_batch *b, redisReply ***replies);
void rstore_replies_free(redisReply **replies, size_t n);

#endif
