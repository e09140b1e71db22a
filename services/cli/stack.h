/* stack.h: the embedded stack of `ursa up/down/status/env`: a private
 * redis-server, ursa-broker and whichever daemons are installed beside the
 * `ursa` binary, each a detached process with a pid file and a log under the
 * state dir (see common/statedir.h for the layout). */
#ifndef URSA_CLI_STACK_H
#define URSA_CLI_STACK_H

#include "config.h"

/* Settings of the stack commands (redis-server binary, timeouts). */
extern const cfg_def stack_defs[];

/* Each returns the process exit code and prints for a person. */
int stack_up(const cfg *c, int argc, char **argv);
int stack_down(const cfg *c, int argc, char **argv);
int stack_status(const cfg *c, int argc, char **argv);
int stack_env(const cfg *c, int argc, char **argv);
/* `ursa broker CMD...`: a fault-drill command to the embedded broker. */
int stack_broker(const cfg *c, int argc, char **argv);

#endif
