/* train_cmd.h: the training commands of the CLI: train, lr-find, audit, jobs, job. */
#ifndef URSA_CLI_TRAIN_CMD_H
#define URSA_CLI_TRAIN_CMD_H

#include "config.h"

extern const cfg_def train_defs[], lrfind_defs[], audit_defs[], jobs_defs[], job_defs[];

int train_cmd(const cfg *c, int argc, char **argv);
int lrfind_cmd(const cfg *c, int argc, char **argv);
int audit_cmd(const cfg *c, int argc, char **argv);
int jobs_cmd(const cfg *c, int argc, char **argv);
int job_cmd(const cfg *c, int argc, char **argv);

/* `ursa train`'s stage flags are ordered and repeatable (--stage 4
 * --unfreeze --stage 2:3e-5:3e-4), which settings are not: this folds them
 * into one --stages=... argument. Returns a new argv of *nargc entries
 * (free() it and *owned, the one string it made), or NULL on ENOMEM. */
char **train_argv(int argc, char **argv, int *nargc, char **owned);

#endif
