/* kq.h: Kafka for ursa's daemons: an idempotent producer with delivery
 * reports, and a consumer-group loop with at-least-once, effects-first
 * offset storage and dead-lettering.
 *
 * The delivery rules (docs/operations.md, "Delivery rules, as built") live here:
 *  - a consumed message's offset is stored only after its handler returned OK
 *    AND every message the handler produced through kq_job_produce() has been
 *    acknowledged by the broker; offsets of a partition are stored in order,
 *    so a slow message holds back the ones behind it, never skips them;
 *  - a handler that fails with URSA_ERR_UNAVAILABLE (Redis down, disk gone)
 *    or URSA_ERR_NO_SPACE (disk full) is retried with backoff for as long as it takes: an outage never sends
 *    good work to the dead-letter topic;
 *  - other retriable failures (URSA_ERR_TRANSIENT, URSA_ERR_TIMEOUT) are
 *    retried up to kq.max-attempts times, with exponential backoff;
 *  - then, or at once for a permanent failure, the message goes to the
 *    group's dead-letter topic (kq_dlq_name()) with headers
 *    ursa.dlq.reason, ursa.dlq.attempts, ursa.dlq.topic, ursa.dlq.partition,
 *    ursa.dlq.offset and ursa.dlq.group; its key and value are unchanged, so
 *    it can be replayed as is;
 *  - a message over kq.max-message-bytes is dead-lettered at once, unread;
 *    a dead letter too large to send whole, or any output the cluster
 *    refuses for good (too large, malformed), goes to the dead-letter topic
 *    as a summary: its first 1 KB of key and value, and headers
 *    ursa.dlq.truncated=1, ursa.dlq.size and ursa.dlq.sha256. A summary
 *    refused too is logged (event=message_lost) and let go: no message
 *    holds its partition for good, and none is lost silently;
 *  - on shutdown (*run becomes 0) the loop stops fetching, waits up to
 *    kq.drain-ms for pending effects, commits what is stored, and leaves
 *    the group in at most 4 s; the producer then waits up to kq.flush-ms.
 *    With service_signals() a daemon is gone 14 s after SIGTERM whatever
 *    the broker's state; what was not stored is delivered again.
 *
 * Threads (as librdkafka's own rules):
 *  - a producer is polled by one thread only, its poller: the thread in
 *    kq_consumer_run() of the consumer it was given to, or else the first
 *    to call kq_producer_poll(). Delivery callbacks (kq_delivery_cb, and
 *    the consumer's bookkeeping of kq_job effects) run on the poller, inside
 *    its polls. Two consumer loops on two threads need two producers;
 *  - kq_produce() may be called from any thread; when librdkafka's queue is
 *    full it waits for room, polling only on the poller (elsewhere it sleeps
 *    while the poller drains the queue);
 *  - a consumer, its handler and its tick run on the thread in
 *    kq_consumer_run(); kq_job_hold()/kq_job_done()/kq_job_abandon() and
 *    kq_job_produce() are for that thread too (work on other threads hands
 *    its result back through the tick);
 *  - the run flag may be cleared from any thread or a signal handler.
 * Settings: cfg_defs_kafka; every kafka.* pass-through setting goes straight
 * to librdkafka (after ursa's defaults, so it can override them, except
 * enable.auto.offset.store=false and enable.idempotence=true). */
#ifndef URSA_KQ_H
#define URSA_KQ_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"

typedef struct kq_producer kq_producer;

typedef struct {
    const char *name;
    const void *value;
    size_t len;
} kq_header;

/* Called from kq_producer_poll() once the broker acknowledged (err OK) or
 * finally refused (err set, reason in errstr) a message. */
typedef void kq_delivery_cb(void *opaque, ursa_err err, const char *errstr);

/* Creates an idempotent producer for bootstrap ("host:port,..."), with the
 * kafka.* settings of c (borrowed, may be NULL). NULL on error, reason in
 * errstr. */
kq_producer *kq_producer_new(const cfg *c, const char *bootstrap, char *errstr,
                             size_t errstr_size);
/* Flushes for up to 10 s and frees. Messages still undelivered are logged. */
void kq_producer_destroy(kq_producer *p);

/* Queues a message; key, value and headers are copied. cb may be NULL. */
ursa_err kq_produce(kq_producer *p, const char *topic, const void *key,
                    size_t keylen, const void *value, size_t len,
                    const kq_header *hdrs, size_t nhdrs, kq_delivery_cb *cb,
                    void *opaque);
/* Serves delivery reports; returns how many were served. */
int kq_producer_poll(kq_producer *p, int timeout_ms);
/* Waits until every queued message is delivered or timeout_ms passes. */
ursa_err kq_producer_flush(kq_producer *p, int timeout_ms);
/* Messages queued and not yet acknowledged. */
int kq_producer_outq(kq_producer *p);
/* The librdkafka handle, borrowed, for metadata queries. */
rd_kafka_t *kq_producer_rk(kq_producer *p);

/* One consumed message as the handler sees it. Everything is borrowed for the
 * duration of the handler call. */
typedef struct {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *key;
    size_t key_len;
    const void *value;
    size_t len;
    int attempt; /* 1 on the first try */
    int replay;  /* this consumer handed out this offset or a later one of the
                    partition before: a message seen again after a rebalance
                    whose commit failed, or a retry (a handler whose work is
                    costly may look up whether it was done) */
} kq_msg;

typedef struct kq_job kq_job; /* the pending effects of one consumed message */

/* The work for one message. Write a short reason into reason on failure; it
 * goes into logs and the dead-letter headers. See the top of this file for
 * what each return value makes the loop do. */
typedef ursa_err kq_handler(void *opaque, const kq_msg *m, kq_job *job,
                            char *reason, size_t reason_size);

/* Produces a message as part of job's effects: the consumed message's offset
 * is not stored until it is delivered. Copies everything. */
ursa_err kq_job_produce(kq_job *job, const char *topic, const void *key,
                        size_t keylen, const void *value, size_t len);

/* Asynchronous handling: a handler that starts work it finishes later (a
 * download) calls kq_job_hold() before returning OK, and kq_job_done() when
 * the work's effects are durable; the offset waits for both. The job stays
 * valid until kq_job_done() even if its partition is revoked meanwhile (its
 * effects then no longer count: the new owner handles the message again). */
void kq_job_hold(kq_job *job);
void kq_job_done(kq_job *job);
/* Lets the job go without storing its offset, nor any after it on its
 * partition, in this run: the message is delivered again after a restart or
 * to the partition's next owner (work stopped for a shutdown). */
void kq_job_abandon(kq_job *job);
/* 1 once the job's partition was revoked: its effects no longer count (the
 * new owner handles the message again), so recording them can be skipped. */
int kq_job_orphaned(const kq_job *job);

typedef struct kq_consumer kq_consumer;

/* Background work of an asynchronous handler, run by the loop between
 * messages: wait for it up to timeout_ms, advance it, and return how many
 * items are still in progress (0 lets the loop sleep in Kafka's poll). */
typedef int kq_tick(void *opaque, int timeout_ms);

/* Creates a consumer in group for topics (NULL-terminated, borrowed only
 * during the call). The producer is borrowed and carries the handler's
 * outputs and the dead letters; it must outlive the consumer. */
kq_consumer *kq_consumer_new(const cfg *c, const char *bootstrap,
                             const char *group, const char *const *topics,
                             kq_producer *producer, kq_handler *handler,
                             void *opaque, char *errstr, size_t errstr_size);

/* Runs the loop until *run is 0 (set it from a signal handler), then drains
 * and commits. Returns OK after a clean stop, URSA_ERR_KAFKA on a fatal
 * client error. */
ursa_err kq_consumer_run(kq_consumer *kc, atomic_int *run);

/* Sets the loop's background work (see kq_tick); the loop, its retries, its
 * bound on in-flight messages and its final drain all keep it turning. */
void kq_consumer_set_tick(kq_consumer *kc, kq_tick *tick, void *opaque);

/* How long a revoke waits for the held jobs of the partitions it takes away
 * before forgetting them (default 30000). A consumer whose jobs run for
 * minutes and guard themselves (the trainer's leases) sets it short. */
void kq_consumer_set_revoke_wait_ms(kq_consumer *kc, int ms);

/* Stops (1) or restarts (0) fetching new messages, for a daemon that cannot
 * do its work for now (a full disk): its partitions are paused, the group
 * keeps it as a member, and the work it holds goes on. */
void kq_consumer_pause_intake(kq_consumer *kc, int pause);

/* Frees the consumer; call after kq_consumer_run() returned. */
void kq_consumer_destroy(kq_consumer *kc);


/* The dead-letter topic of a consumer group: "ursa-crawler" -> "ursa.dlq.crawler". */
void kq_dlq_name(const char *group, char *out, size_t size);

#endif
