/* status_cmd.h: `ursa status`: a deployment's health, from any host. */
#ifndef URSA_CLI_STATUS_CMD_H
#define URSA_CLI_STATUS_CMD_H

#include "config.h"

/* Settings of `ursa status` (--output, and --dataset's). */
extern const cfg_def status_defs[];

/* Prints the processes of an embedded stack (when the state dir holds
 * one), every daemon instance from its heartbeat, and each topic's size
 * and consumer lag, as text or JSON (--output). Returns 0 when healthy, 1
 * when not, 2 on a usage error. With --dataset: dataset_status(). */
int status_cmd(const cfg *c, int argc, char **argv);

#endif
