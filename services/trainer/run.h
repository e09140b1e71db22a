/* run.h: the state of one job as its thread runs it, and the helpers the
 * kinds of job share (run.c): training and lr_find (train.c) and the audit
 * (audit.c) sit on it; job.c takes the job and dispatches by kind. */
#ifndef URSA_TRAINER_RUN_H
#define URSA_TRAINER_RUN_H

#include <pthread.h>
#include <stdint.h>

#include "dataset.h"
#include "job.h"
#include "learner.h"
#include "rstore.h"

/* Where a run is: written into every checkpoint. */
typedef struct {
    uint32_t magic, stage, epoch; /* next epoch to run: stage, epoch within it */
    uint32_t done;                /* epochs finished over all stages */
} position;

#define POS_MAGIC 0x55544b31u /* "UTK1" */

#define RUN_STAGES_MAX 16 /* a job's stages at most (main.c checks it) */

typedef struct {
    tjob *tj;
    const Ursa__TrainJob *spec;
    rstore *r;
    ds_image *im; /* the snapshot, sorted by image id */
    size_t nim;
    char **classes; /* sorted */
    int nclass;
    int *tr_idx, *tr_lab, ntr, *va_idx, *va_lab, nva;
    int pretrained;
    nn_model m;
    nn_loader *tr, *va;
    nn_learner L;
    int have_learner;
    int cancelled;
    int64_t last_beat;
    position pos;
    uint32_t epochs[RUN_STAGES_MAX]; /* each stage's: the spec's, or an audit's
                                      * scaled to its --min-steps (audit.c) */
    int total_epochs;
    int audit, fold;     /* an audit's fold being trained (audit.c) */
    float *feat;         /* an audit of a pretrained body: its pooled features of
                          * every image (n x fdim); the model is then the head alone */
    int fdim;
    uint32_t epoch_base; /* epochs of the job before this fit (earlier folds) */
    /* decoded images kept for the job's later epochs, stages and folds
     * (by snapshot index), up to cache_max bytes of pixels: reading and
     * decoding each image again every epoch took a third core's worth of
     * the two the math runs on */
    img_rgb *cache;
    size_t cache_bytes, cache_max;
    pthread_mutex_t cache_mu;
    char ckpt[4200];
    char why[512]; /* the reason a job failed */
} run;

/* A context for the job, its model empty, no Redis connection yet (the
 * caller opens R->r); NULL when out of memory. run_free frees everything
 * it holds, R->r included, and R. */
run *run_new(tjob *tj);
void run_free(run *R);

/* Registers the running job's progress gauges (job.h's
 * tjob_register_metrics). */
void run_register_metrics(void);

/* A field of the job's hash into out ("" when it has none); -1 when
 * Redis fails. */
int run_field(run *R, const char *field, char *out, size_t n);
/* Progress news on ursa.train.progress (at most once). */
void run_progress(run *R, const char *state, const nn_epoch_row *row, const char *error);
/* Ends the job as failed with R->why. */
tjob_outcome run_fail(run *R);
/* Redis failed: try the job again later. */
tjob_outcome run_redis_down(run *R, const char *what);
/* Ends the job as cancelled. */
tjob_outcome run_cancelled(run *R);
/* Reads (or takes, on the first start) the dataset's snapshot into R->im;
 * TJ_DONE with R->why empty when it is there. */
tjob_outcome run_snapshot(run *R);
/* The sorted class list of R->im (and room for the index arrays); -1 with
 * R->why set when there are fewer than two classes or no memory. */
int run_classes(run *R);
int run_class_of(run *R, const char *label);
/* An image of the snapshot, decoded (an nn_image_fn). */
int run_load_image(void *ctx, int i, img_rgb *out);
/* The job's model with fresh weights (or the pretrained body) and a head
 * of R->nclass; the head alone, on features of R->fdim, when R->feat is set. */
int run_build_model(run *R);
/* Loaders over tr_idx/va_idx (images, or the rows of R->feat when it is
 * set) and the learner. */
int run_learner_up(run *R, uint64_t seed);
/* Frees the learner and the loaders (a fold's, before the next). */
void run_learner_down(run *R);
/* The job's checkpoint named R->ckpt: a file in trainer.checkpoint-dir,
 * or, when the trainer has none (an object store that hosts share, no
 * shared disk), a blob whose key the job's hash keeps under
 * ckpt:<name of R->ckpt>, the one it supersedes deleted. Save writes the
 * model and R->pos; load reads them into R->m and *pos (NOT_FOUND when
 * there is none; CORRUPT when unusable); drop removes it. */
ursa_err run_ckpt_save(run *R, char *err, size_t n);

/* A store the job cannot go on without (a checkpoint, its results): store
 * is called until it returns anything but URSA_ERR_NO_SPACE. Meanwhile the
 * job is paused, its state in memory and no CPU spent: "waiting for space
 * to store <what>" is in the job's record (field "waiting", which `ursa
 * job` shows) and in tjob_waiting() (the trainer's health: DEGRADED), and
 * the store is tried again every tj->space_retry_ms. Returns store's last
 * error, or URSA_ERR_SHUTDOWN when the job was stopped or cancelled
 * (R->cancelled) while it waited. err gets store's reason. */
typedef ursa_err (*run_store_fn)(run *R, void *ctx, char *err, size_t n);
ursa_err run_store(run *R, const char *what, run_store_fn store, void *ctx, char *err,
                   size_t n);
/* A run_store_fn: blob_put of a run_blob. */
typedef struct {
    const void *data;
    size_t len;
    char *key; /* [65]: where the key goes */
} run_blob;
ursa_err run_store_blob(run *R, void *ctx, char *err, size_t n);
ursa_err run_ckpt_load(run *R, void *pos, uint32_t poslen, char *err, size_t n);
void run_ckpt_drop(run *R);

/* Runs the spec's stages for R->epochs each, resuming from R->ckpt when it holds a checkpoint
 * and writing one after every epoch. 0 when every stage ran; 1 when the
 * job must end now with *out (stopped, cancelled or failed). */
int run_fit_stages(run *R, tjob_outcome *out);

#endif
