/* classify_cmd.h: `ursa classify`, bulk classification through
 * ursa.classify.requests and ursa-inference. */
#ifndef URSA_CLI_CLASSIFY_CMD_H
#define URSA_CLI_CLASSIFY_CMD_H

#include "config.h"

extern const cfg_def classify_defs[];
int classify_cmd(const cfg *c, int argc, char **argv);

#endif
