/* learner.h: fast.ai's training loop: fit_one_cycle with the per-epoch
 * table (epoch, train_loss, valid_loss, error_rate, time), and lr_find. */
#ifndef URSA_NN_LEARNER_H
#define URSA_NN_LEARNER_H

#include <stdatomic.h>
#include <stdio.h>

#include "data.h"
#include "nn.h"

typedef struct {
    int epoch;
    float train_loss, valid_loss, error_rate;
    double seconds;
} nn_epoch_row;

typedef struct {
    nn_model *m;
    nn_loader *train, *valid;
    int bs, h, w;
    nn_adamw opt;
    FILE *table;            /* where the epoch table goes (NULL: nowhere) */
    float label_smoothing;  /* eps of the training loss (0: plain cross-entropy);
                             * valid_loss is always plain cross-entropy */
    unsigned tta;           /* validation's test-time augmentation (NN_TTA_*): the loss
                             * and error of each image's views' mean probabilities */
    float ema;              /* decay of a moving average of the weights (and batch norm's
                             * statistics) that validation uses and a fit leaves in the
                             * model at its end; 0: none */
    atomic_int *stop;     /* set to stop after the current batch */
    void *ctx;
    /* progress: called every batch (may be NULL) */
    void (*on_batch)(void *ctx, int epoch, int it, int n_it, float smooth_loss, float lr);
    void (*on_epoch)(void *ctx, const nn_epoch_row *row);
    /* internal */
    nn_exec *tr, *ev;
    int epochs_done;
    float **ema_w, *tta_x;
    long ema_n;
} nn_learner;

ursa_err nn_learner_init(nn_learner *L, nn_model *m, nn_loader *train, nn_loader *valid, int bs);
void nn_learner_free(nn_learner *L);

/* fit_one_cycle(epochs, slice(lr_lo, lr_hi)) with fast.ai's defaults (pct
 * 0.3, div 25, final div 25e4, moms 0.95/0.85, wd 1e-2). Returns
 * URSA_ERR_SHUTDOWN when stopped. */
ursa_err nn_fit_one_cycle(nn_learner *L, int epochs, float lr_lo, float lr_hi);
/* The same cycle resumed after its first `from` epochs (from a checkpoint):
 * the schedules continue where those epochs left them. */
ursa_err nn_fit_one_cycle_from(nn_learner *L, int epochs, int from, float lr_lo, float lr_hi);

/* Validation loss and error rate of the current weights. */
ursa_err nn_validate(nn_learner *L, float *loss, float *err);

/* lr_find: 1e-7 to 10 over up to 100 steps, stopping when the smoothed loss
 * passes 4x its best; the weights are restored afterwards. Fills lrs and
 * losses (smoothed) with *n points and returns the suggestion. */
ursa_err nn_lr_find(nn_learner *L, float *lrs, float *losses, int *n, float *suggestion);

#endif
