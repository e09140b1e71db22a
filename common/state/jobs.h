/* jobs.h: training jobs in Redis, the one owner of their keys, shared by
 * the CLI (which submits and shows them) and ursa-trainer (which runs them).
 * The models they publish are registry.h's.
 *
 *   ursa:jobs                ZSET created_ms -> job id (newest last)
 *   ursa:jobs:active         ZSET created_ms -> job id of the jobs not final
 *                            (queued, running): what the sweep walks
 *   ursa:job:<id>            HASH the job: spec (the TrainJob protobuf), kind,
 *                            dataset, arch, state, error, created_ms,
 *                            started_ms, ended_ms, worker, starts, stops
 *                            (starts its worker ended in order: the others
 *                            died), resumes, requeued (ms), requeues,
 *                            cancel, stage, stages, epoch, epochs, step,
 *                            steps, loss, beat_ms, n_train, n_valid,
 *                            manifest, model, lr_suggestion, lr_curve
 *   ursa:job:<id>:rows       HASH "<n>" -> the n-th epoch's table row,
 *                            "stage\tepoch\ttrain_loss\tvalid_loss\terror_rate\tseconds"
 *   ursa:job:<id>:lease      STRING the worker running it, with a TTL its
 *                            worker renews: one runner at a time
 *
 * A job moves queued -> running -> done | failed | cancelled, and a final
 * state never changes again (each move is one Lua script), so a replayed
 * job message or a late worker cannot undo an end.
 *
 * Kafka may lose a job's message (an embedded broker's restart loses all):
 * a job that is not final and whose lease is gone has no live owner, and
 * job_sweep() sends its spec again or, when a cancel was asked for, ends it.
 *
 * The interpretation blob is TSV, one validation image a line, worst loss
 * first: jpeg_blob, actual, predicted, loss, p_actual, source_blob. */
#ifndef URSA_JOBS_H
#define URSA_JOBS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "rstore.h"

#define JOB_ID_MAX 40

typedef enum { JOB_QUEUED = 0, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED, JOB__COUNT } job_state;

const char *job_state_name(job_state s);
/* -1 for an unknown name. */
int job_state_parse(const char *s);
int job_state_final(job_state s);

/* 1 if id is 1..40 of [A-Za-z0-9_-]. */
int job_id_valid(const char *id);
/* A new job id: "j" and 15 hex characters. */
void job_new_id(char id[JOB_ID_MAX + 1]);
/* The model a job publishes: "<dataset>-<job id>". */
void job_model_id(const char *dataset, const char *job_id, char *out, size_t size);

/* Records a new job (state queued) unless it exists: spec is the packed
 * TrainJob. *created is 1 when it was new. */
ursa_err job_create(rstore *r, const char *id, const char *kind, const char *dataset,
                    const char *arch, const void *spec, size_t spec_len, int *created);

/* Records a job (state queued) and queues its message on ursa.train.jobs,
 * acknowledged by Kafka: a job is never accepted and then lost. When Kafka
 * does not take it, the job is recorded as failed with the reason. Returns
 * URSA_ERR_UNAVAILABLE (Redis), URSA_ERR_KAFKA, or OK. */
struct kq_producer;
struct ProtobufCMessage;
ursa_err job_queue(rstore *r, struct kq_producer *p, const char *id, const char *kind,
                   const char *dataset, const char *arch, const struct ProtobufCMessage *spec);

/* The spec of the job that made the dataset's newest model (registry.h),
 * or NULL (none, or Redis failed); the caller frees it with
 * ursa__train_job__free_unpacked. *model (may be NULL, 160 bytes) gets
 * that model's id. */
struct Ursa__TrainJob;
struct Ursa__TrainJob *job_last_recipe(rstore *r, const char *dataset, char *model);

/* The job's state; URSA_ERR_NOT_FOUND when there is no such job. */
ursa_err job_get_state(rstore *r, const char *id, job_state *s);

/* Moves a job that is not final to state s, with HSET of the given
 * NULL-terminated name/value pairs in the same step. *moved (may be NULL)
 * is 0 when the job was already final (nothing is written then). Final
 * states also set ended_ms. */
ursa_err job_set_state(rstore *r, const char *id, job_state s, const char *const *kv, int *moved);

/* HSET of name/value pairs on a job that is not final (progress). */
ursa_err job_update(rstore *r, const char *id, const char *const *kv);

/* Asks for a job to stop: a queued job is cancelled at once, a running one
 * by its worker within a few seconds, or at once when no worker holds its
 * lease (its worker died): the cancel takes the lease for that moment, so
 * no worker starts the job meanwhile. *state gets the state it was in;
 * *ended (may be NULL) is 1 when the job is cancelled now. */
ursa_err job_cancel(rstore *r, const char *id, job_state *state, int *ended);

/* The lease: one worker runs a job. Acquire takes a free lease or renews
 * our own; *got is 0 when another worker holds it. */
ursa_err job_lease(rstore *r, const char *id, const char *worker, int ttl_ms, int *got);
ursa_err job_lease_release(rstore *r, const char *id, const char *worker);
/* Who holds the lease into out ("" when nobody: no live owner). */
ursa_err job_lease_holder(rstore *r, const char *id, char *out, size_t n);

/* The sweep over the jobs that are not final, for the trainers (all: over
 * every job ever listed, as at a trainer's start, which also lists again
 * in the active set what it lacks). A job whose lease is gone and which
 * saw no worker (created, beat_ms) for ttl_ms has no live owner: with a
 * cancel asked for it is cancelled; else its spec goes again to
 * ursa.train.jobs, at most every gap_ms for a job, doubling with every
 * time it is sent again up to 5 minutes (a job waiting behind a long one
 * is sent again a few times, not every gap_ms). Sending twice is
 * harmless: a worker drops a job's message once the job is final, and
 * waits while another holds the lease. cb (may be NULL) hears of each job
 * sent again ("requeued") or cancelled, with why. Not flushed: the
 * caller's producer delivers it. */
typedef void job_sweep_cb(void *opaque, const char *id, const char *what, const char *why);
ursa_err job_sweep(rstore *r, struct kq_producer *p, int all, int ttl_ms, int gap_ms,
                   job_sweep_cb *cb, void *opaque);

/* Every field of a job; URSA_ERR_NOT_FOUND for an unknown job. */
ursa_err job_get_all(rstore *r, const char *id, redisReply **rep);
/* One field (a nil reply when unset). */
ursa_err job_get_field(rstore *r, const char *id, const char *field, redisReply **rep);
/* HDEL: forgets a field whatever the job's state (a dropped checkpoint's
 * blob key, which outlives the job's end by a moment). */
ursa_err job_del_field(rstore *r, const char *id, const char *field);
/* HINCRBY field 1 (starts, resumes). */
ursa_err job_incr(rstore *r, const char *id, const char *field);
/* HSETNX: sets field unless it is set (started_ms). */
ursa_err job_set_once(rstore *r, const char *id, const char *field, const char *value);
/* Deletes an ended job: its fields, epoch rows and lease, and its place
 * in the lists. A job queued or running is refused (URSA_ERR_INVALID,
 * *state says which: cancel it first); an unknown one is
 * URSA_ERR_NOT_FOUND. A tombstone (ursa:job:<id>:deleted, a week: Kafka's
 * retention) keeps a replay of its message from making it again
 * (job_is_deleted). Its blobs stay until they are collected. */
ursa_err job_delete(rstore *r, const char *id, job_state *state);
/* 1 if the job was deleted within the week, else 0 (and on an error). */
int job_is_deleted(rstore *r, const char *id);
/* Every job id, oldest first (an array reply). */
ursa_err job_list(rstore *r, redisReply **ids);
/* The ids of the jobs not final (queued, running), oldest first; a job
 * from before the active set is listed once a trainer swept. */
ursa_err job_list_active(rstore *r, redisReply **ids);

/* One row of a job's epoch table: row n of the whole job (from 0). */
typedef struct {
    int n, stage, epoch;
    double train_loss, valid_loss, error_rate, seconds;
} job_row;
/* Records a row (idempotent: a row is keyed by n). */
ursa_err job_row_put(rstore *r, const char *id, const job_row *row);
/* The job's rows in order; the caller frees *rows. */
ursa_err job_rows_read(rstore *r, const char *id, job_row **rows, int *n);

#endif
