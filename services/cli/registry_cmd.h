/* registry_cmd.h: the model commands of the CLI: models, export, interp. */
#ifndef URSA_CLI_REGISTRY_CMD_H
#define URSA_CLI_REGISTRY_CMD_H

#include "config.h"

extern const cfg_def models_defs[], export_model_defs[], interp_defs[];

int models_cmd(const cfg *c, int argc, char **argv);
int export_model_cmd(const cfg *c, int argc, char **argv);
int interp_cmd(const cfg *c, int argc, char **argv);

#endif
