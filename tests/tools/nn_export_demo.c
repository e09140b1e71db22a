/* nn-export-demo: writes an untrained but non-trivial model as ONNX for the
 * ONNX tests: a resnet18 body with fast.ai's head (3 classes, with names
 * that need JSON escaping), running statistics away from 0/1 so batch norm
 * matters, input size 64.
 *
 *   nn-export-demo OUT.onnx [--no-classes] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "nn.h"

int main(int argc, char **argv) {
    char nerr[200];
    if (nn_engine_init(argv, nerr, sizeof nerr) != URSA_OK) {
        fprintf(stderr, "nn-export-demo: %s\n", nerr);
        return 2;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: nn-export-demo OUT.onnx [--no-classes]\n");
        return 2;
    }
    nn_model m;
    if (nn_resnet_body(&m, 18) != URSA_OK) return 1;
    nn_add_head(&m, 3, 512, 0.25f, 0.5f);
    nn_init_weights(&m, 3);
    uint64_t s = 7;
    for (int i = 0; i < m.nparam; i++) {
        nn_param *p = &m.param[i];
        for (size_t j = 0; j < p->n; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            float u = (float)((s >> 40) & 0xFFFF) / 65536.0f;
            if (p->kind == NN_P_BN_RM || p->kind == NN_P_BN_B) p->w[j] = 0.2f * (u - 0.5f);
            else if (p->kind == NN_P_BN_RV || p->kind == NN_P_BN_W) p->w[j] = 0.5f + u;
        }
    }
    m.meta.size = 64;
    if (argc < 3 || strcmp(argv[2], "--no-classes")) {
        const char *names[3] = {"black bear", "grizzly \"brown\"", "teddy\\bear"};
        m.meta.classes = calloc(3, sizeof(char *));
        for (int i = 0; i < 3; i++) m.meta.classes[i] = strdup(names[i]);
        m.meta.nclass = 3;
        m.meta.extra = strdup("dataset=bears\njob=demo\n");
    }
    char err[256];
    if (nn_onnx_save(&m, argv[1], err, sizeof err) != URSA_OK) {
        fprintf(stderr, "nn-export-demo: %s\n", err);
        return 1;
    }
    nn_model_free(&m);
    return 0;
}
