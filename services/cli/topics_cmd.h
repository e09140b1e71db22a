/* topics_cmd.h: `ursa topics`: list ursa's topics on a cluster, or create
 * the missing ones on a real Kafka (the embedded broker creates its own). */
#ifndef URSA_CLI_TOPICS_CMD_H
#define URSA_CLI_TOPICS_CMD_H

#include "config.h"

extern const cfg_def topics_cmd_defs[];
int topics_cmd(const cfg *c, int argc, char **argv);

#endif
