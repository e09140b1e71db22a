/* gc_cmd.h: `ursa gc`, blobs nothing refers to removed after a grace
 * period. */
#ifndef URSA_CLI_GC_CMD_H
#define URSA_CLI_GC_CMD_H

#include "config.h"

extern const cfg_def gc_defs[];
int gc_cmd(const cfg *c, int argc, char **argv);

#endif
