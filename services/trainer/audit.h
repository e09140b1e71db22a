/* audit.h: the audit job of ursa-trainer; see audit.c. */
#ifndef URSA_TRAINER_AUDIT_H
#define URSA_TRAINER_AUDIT_H

#include "run.h"

/* Runs an audit on the snapshot in R->im; ends the job (or not: see
 * tjob_outcome). */
tjob_outcome audit_run(run *R);

#endif
