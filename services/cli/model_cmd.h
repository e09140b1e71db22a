/* model_cmd.h: `ursa predict` and `ursa bench-model`. */
#ifndef URSA_CLI_MODEL_CMD_H
#define URSA_CLI_MODEL_CMD_H

#include "config.h"

extern const cfg_def predict_defs[];
extern const cfg_def bench_model_defs[];
int predict_cmd(const cfg *c, int argc, char **argv);
int bench_model_cmd(const cfg *c, int argc, char **argv);

#endif
