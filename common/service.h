/* service.h: what every ursa daemon does before and around its loop:
 * settings with --help, the log level, stop signals. */
#ifndef URSA_SERVICE_H
#define URSA_SERVICE_H

#include <signal.h>

#include "config.h"

/* Loads the settings of a daemon named name (also its log svc= value) from
 * tables (NULL-terminated; "kafka." pass-through on). On --help prints usage
 * and the settings to stdout and returns 0 with *out NULL; on a bad setting
 * prints the reason to stderr and returns 2; else returns -1 and *out holds
 * the config (caller destroys it) and *argi the first positional argument. */
int service_setup(const char *name, const char *usage,
                  const cfg_def *const *tables, int argc, char **argv,
                  cfg **out, int *argi);

/* SIGTERM and SIGINT set *run to 0; SIGPIPE is ignored. */
void service_signals(volatile sig_atomic_t *run);

#endif
