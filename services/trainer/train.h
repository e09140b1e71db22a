/* train.h: the training and lr_find jobs of ursa-trainer; see train.c. */
#ifndef URSA_TRAINER_TRAIN_H
#define URSA_TRAINER_TRAIN_H

#include "run.h"

/* Trains on the snapshot in R->im (a seeded split, the spec's stages) and
 * publishes the model; ends the job (or not: see tjob_outcome). */
tjob_outcome train_run(run *R);

/* The loss against the learning rate over a sweep, and the suggested
 * rate, into the job; ends the job (or not: see tjob_outcome). */
tjob_outcome train_lr_find(run *R);

#endif
