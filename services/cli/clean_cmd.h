/* clean_cmd.h: the cleaning commands of the CLI: clean, edit, edits. */
#ifndef URSA_CLI_CLEAN_CMD_H
#define URSA_CLI_CLEAN_CMD_H

#include "config.h"

extern const cfg_def clean_defs[], edit_defs[], edits_defs[];

int clean_cmd(const cfg *c, int argc, char **argv);
int edit_cmd(const cfg *c, int argc, char **argv);
int edits_cmd(const cfg *c, int argc, char **argv);

#endif
