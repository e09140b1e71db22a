/* dataset_cmd.h: the dataset commands of the CLI: ingest, status --dataset,
 * retry, export-dataset and datasets. */
#ifndef URSA_CLI_DATASET_CMD_H
#define URSA_CLI_DATASET_CMD_H

#include "config.h"

extern const cfg_def ingest_defs[], retry_defs[], export_defs[], datasets_defs[];

int ingest_cmd(const cfg *c, int argc, char **argv);
/* `ursa status --dataset NAME [--failed]`; called by status_cmd. */
int dataset_status(const cfg *c);
int retry_cmd(const cfg *c, int argc, char **argv);
int export_cmd(const cfg *c, int argc, char **argv);
/* `ursa datasets` lists them; `ursa datasets delete NAME --yes` deletes one. */
int datasets_cmd(const cfg *c, int argc, char **argv);

#endif
