/* demo_cmd.h: `ursa demo`, the lesson end to end with dirty data. */
#ifndef URSA_CLI_DEMO_CMD_H
#define URSA_CLI_DEMO_CMD_H

#include "config.h"

extern const cfg_def demo_defs[];
int demo_cmd(const cfg *c, int argc, char **argv);

#endif
