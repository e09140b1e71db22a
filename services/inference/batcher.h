/* batcher.h: the served model and dynamic batching, as Triton does it.
 *
 * Decode threads preprocess an image for the current model and queue it
 * (batcher_submit; the bulk consumer waits with batcher_run); a batching
 * thread takes up to max_batch queued images of the same
 * model, waiting at most max_delay_us after the first for more, runs them
 * through the model in one forward pass, and hands each request its
 * probabilities. There is one batching thread per model instance, each
 * with its own executor and cores/instances of the engine's threads: one
 * instance runs each batch on every core (the lowest latency); as many as
 * cores run batches side by side with no threads to synchronise (the most
 * throughput for small models under many requests). The queue is bounded:
 * a full queue refuses at once (the server answers 503 with Retry-After).
 *
 * Models are swapped atomically: a new model serves every request queued
 * after the swap, while requests already queued finish on the model they
 * were preprocessed for, which is freed when the last of them is done. */
#ifndef URSA_INFERENCE_BATCHER_H
#define URSA_INFERENCE_BATCHER_H

#include <pthread.h>
#include <stdint.h>

#include "err.h"
#include "nn.h"

typedef struct served served; /* a loaded model, reference-counted */

/* Loads ONNX bytes into a model ready to serve (BN folded, an executor for
 * max_batch images for each of instances). tta is the test-time
 * augmentation it answers with: "off", "flip", "shift", "flip+shift", or
 * "model" (what the model was trained with, its metadata's tta=; NULL is
 * "off"); a mode of k views costs k passes a batch. NULL with the reason
 * in err. */
served *served_load(const uint8_t *onnx, size_t len, const char *id, int max_batch, int instances,
                    const char *tta, char *err, size_t errlen);
void served_release(served *s);
const char *served_id(const served *s);
const nn_meta *served_meta(const served *s);
int served_in_c(const served *s);
int served_nclass(const served *s);
unsigned served_tta(const served *s); /* NN_TTA_* */

typedef struct batcher batcher;

typedef struct {
    int max_batch, max_delay_us, max_queue;
    int instances; /* batching threads (see batcher_instances) */
} batcher_opts;

batcher *batcher_new(const batcher_opts *o);
/* Its batching threads: what served_load() must be given. */
int batcher_instances(const batcher *b);
/* Stops the thread; queued requests get URSA_ERR_SHUTDOWN. */
void batcher_free(batcher *b);

/* Makes s the model new requests use (takes the caller's reference);
 * NULL unloads. */
void batcher_swap(batcher *b, served *s);
/* The current model with a reference the caller releases, or NULL. */
served *batcher_current(batcher *b);

/* An image on its way (being decoded) is announced (+1) before
 * batcher_submit() or batcher_run(), which take the announcement back, or
 * given up (-1) when it fails: the batching thread waits for more only
 * while some are on their way. */
void batcher_arriving(batcher *b, int delta);

/* Classifies one preprocessed image x (C x size x size of model m, which
 * the caller holds a reference to); x and probs (nclass floats) stay the
 * caller's and must live until done(arg, err) is called, on a batching
 * thread (keep it short). URSA_ERR_UNAVAILABLE at once, and no call of
 * done, when the queue is full. gone (or NULL) is asked when the image's
 * batch is formed: nonzero drops it, and done gets URSA_ERR_TIMEOUT. */
ursa_err batcher_submit(batcher *b, served *m, const float *x, float *probs,
                        void (*done)(void *arg, ursa_err err), int (*gone)(void *arg),
                        void *arg);
/* The same, waiting: probs on OK. */
ursa_err batcher_run(batcher *b, served *m, const float *x, float *probs);

typedef struct {
    uint64_t batches, images, rejected;
    uint64_t dropped; /* not run: gone() said nobody waits for them */
    uint64_t batch_hist[8]; /* batch sizes: 1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, more */
    int queued;
} batcher_stats;
void batcher_get_stats(batcher *b, batcher_stats *st);

#endif
