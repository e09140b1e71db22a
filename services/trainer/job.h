/* job.h: one job (training, lr_find or an audit), run on its own thread
 * by ursa-trainer (main.c), which holds the job's lease meanwhile.
 *
 * The run is restartable at every step: the dataset's manifest is
 * snapshotted into a blob on the first start and read from it afterwards;
 * after every epoch the weights, the optimiser's moments and the position
 * (stage, epoch) go to a checkpoint file, from which a later start resumes;
 * publishing is idempotent (content-addressed blobs, HSET, a model id
 * derived from the job) and the job becomes done only once the model's
 * announcement was acknowledged by Kafka. */
#ifndef URSA_TRAINER_JOB_H
#define URSA_TRAINER_JOB_H

#include <stdatomic.h>

#include "blob.h"
#include "jobs.h"
#include "kq.h"
#include "ursa.pb-c.h"

typedef enum {
    TJ_DONE = 0, /* the job reached a final state (done, failed or cancelled) */
    TJ_RETRY,    /* Redis, Kafka or the disk failed: try again later */
    TJ_STOPPED,  /* stopped for a shutdown: resume from the checkpoint later */
} tjob_outcome;

typedef struct {
    /* set before the thread starts, borrowed by it */
    char id[JOB_ID_MAX + 1];
    Ursa__TrainJob *spec;
    const char *redis_url;
    blob_store *bs;
    kq_producer *p;
    const char *ckpt_dir;
    const char *worker;
    int min_per_class;
    int max_starts; /* deaths of its workers a job survives (trainer.max-starts) */
    size_t image_cache_bytes; /* decoded images kept in memory (0: none) */
    int space_retry_ms; /* a store that failed for a full disk: tried again this often */
    /* control: 1 stops the job after the current batch (set by the daemon
     * for a shutdown, or by the job itself when it sees a cancel) */
    atomic_int stop;
    /* results, valid once finished is 1 */
    atomic_int finished;
    tjob_outcome outcome;
    int started; /* this run counted a start (job_incr "starts") */
    char reason[512];
} tjob;

/* The thread's body; arg is a tjob. */
void *tjob_run(void *arg);

/* 1 while the running job waits for space to store a checkpoint or its
 * results (a full disk), with why ("waiting for space to store ...") in
 * why; 0 otherwise. Thread-safe: the daemon shows it as DEGRADED. */
int tjob_waiting(char *why, size_t n);

/* Registers the running job's progress gauges (metrics.h): job_epoch,
 * job_epochs, job_step, job_steps, job_progress_ratio. Once, at start. */
void tjob_register_metrics(void);

#endif
