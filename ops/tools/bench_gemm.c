/* bench-gemm: sgemm GFLOP/s of the OpenBLAS kernel ursa runs on, after
 * nn_blas_init() picked it, checked against the naive product first.
 *   bench-gemm [N]      (default 2048; prints core=... gflops=...) */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "blas.h"
#include "util.h"

int main(int argc, char **argv) {
    nn_blas_init(argv);
    int n = argc > 1 ? atoi(argv[1]) : 2048;
    if (n < 16 || n > 16384) {
        fprintf(stderr, "usage: bench-gemm [N between 16 and 16384]\n");
        return 2;
    }
    double err = nn_blas_check(129, 97, 211);
    float *a = calloc((size_t)n * n, sizeof(float)), *b = calloc((size_t)n * n, sizeof(float)),
          *c = calloc((size_t)n * n, sizeof(float));
    if (!a || !b || !c) return 1;
    for (size_t i = 0; i < (size_t)n * n; i++) a[i] = b[i] = (float)(i % 7) / 7.0f;
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        int64_t t0 = util_mono_ms();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double s = (double)(util_mono_ms() - t0) / 1000;
        if (s < best) best = s;
    }
    printf("core=%s n=%d best_ms=%.1f gflops=%.1f check_max_rel_err=%.2g\n", nn_blas_core(), n,
           best * 1000, 2.0 * n * n * n / (best > 0 ? best : 1e-9) / 1e9, err);
    free(a);
    free(b);
    free(c);
    return err < 1e-4 ? 0 : 1;
}
