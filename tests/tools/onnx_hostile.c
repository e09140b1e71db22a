/* onnx-hostile: writes one of onnx_gen.h's hostile ONNX files, for the
 * integration tests and for trying a build by hand.
 *
 *   onnx-hostile concat|deep|deep-type|wide|fanout|big-value OUT.onnx [N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx_gen.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: onnx-hostile concat|deep|deep-type|wide|fanout|big-value "
                        "OUT.onnx [N]\n");
        return 2;
    }
    const char *k = argv[1];
    int n = argc > 3 ? atoi(argv[3]) : 0;
    size_t len = 0;
    uint8_t *b = NULL;
    if (!strcmp(k, "concat")) b = onnx_gen_concat(1, 8, n ? n : 32, &len);
    else if (!strcmp(k, "deep")) b = onnx_gen_deep(n ? n : 5000, &len);
    else if (!strcmp(k, "deep-type")) b = onnx_gen_deep_type(n ? n : 5000, &len);
    else if (!strcmp(k, "wide")) b = onnx_gen_wide(n ? n : 80000, &len);
    else if (!strcmp(k, "fanout")) b = onnx_gen_fanout(224, n ? n : 180, 64, &len);
    else if (!strcmp(k, "big-value")) b = onnx_gen_big_value(224, n ? n : 4096, &len);
    else {
        fprintf(stderr, "onnx-hostile: unknown kind %s\n", k);
        return 2;
    }
    if (!b) {
        fprintf(stderr, "onnx-hostile: out of memory\n");
        return 1;
    }
    FILE *f = fopen(argv[2], "wb");
    if (!f || fwrite(b, 1, len, f) != len || fclose(f)) {
        fprintf(stderr, "onnx-hostile: cannot write %s\n", argv[2]);
        free(b);
        return 1;
    }
    free(b);
    return 0;
}
