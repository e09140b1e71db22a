/* verify_cmd.h: `ursa verify FILE...`, the verifier's checks on local files. */
#ifndef URSA_CLI_VERIFY_CMD_H
#define URSA_CLI_VERIFY_CMD_H

#include "config.h"

extern const cfg_def verify_cmd_defs[];
int verify_cmd(const cfg *c, int argc, char **argv);

#endif
