/* limits.c: what a model from outside may ask of the process (nn.h's
 * nn_limits) and the settings that set it. */
#include "nn.h"

const cfg_def nn_cfg_defs[] = {
    {"nn.max-model-mb", CFG_INT, "2048", 0, 1048576,
     "memory an imported model's parameters may take, weights and their gradients (an "
     "ONNX file over it is refused, naming the node); 0: no limit"},
    {"nn.max-exec-mb", CFG_INT, "4096", 0, 1048576,
     "memory one executor of a model may plan for its batch: values, scratch, packed "
     "weights (a model over it is refused, naming the node); 0: no limit"},
    {NULL, 0, NULL, 0, 0, NULL}};

static nn_limits limits; /* written at start-up only */

void nn_limits_set(const nn_limits *l) { limits = *l; }

nn_limits nn_limits_get(void) { return limits; }

void nn_limits_from_cfg(const cfg *c) {
    nn_limits l = {(size_t)cfg_int(c, "nn.max-model-mb") << 20,
                   (size_t)cfg_int(c, "nn.max-exec-mb") << 20};
    nn_limits_set(&l);
}
