/* bench-gemm: sgemm GFLOP/s of the OpenBLAS kernel ursa runs on, after
 * nn_blas_init() picked it, checked against the naive product first; with
 * --conv, one thread's convolutions (the small resnet's and resnet18's
 * shapes) through im2col + OpenBLAS and through our packed product and
 * Winograd, on every instruction-set level this CPU runs (kern.h), or the
 * one URSA_NN_ISA names.
 *   bench-gemm [N]      (default 2048; prints core=... gflops=...)
 *   bench-gemm --conv   (a line a shape and level: blas_gflops ours_gflops ratio) */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blas.h"
#include "gemm.h"
#include "kern.h"
#include "nn.h"
#include "util.h"
#include "winograd.h"

static double secs(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* one shape: cin x h x w images, cout k x k filters, stride s, pad k/2 */
static int conv_shape(const nn_kern *kt, const char *name, int nimg, int cin, int h, int cout,
                      int k, int s) {
    int p = k / 2, ho = (h + 2 * p - k) / s + 1, hwo = ho * ho, K = cin * k * k, N = nimg * hwo;
    size_t xper = (size_t)cin * h * h, yper = (size_t)cout * hwo;
    float *x = malloc(sizeof(float) * xper * nimg), *w = malloc(sizeof(float) * (size_t)cout * K);
    float *col = malloc(sizeof(float) * (size_t)K * N), *tmp = malloc(sizeof(float) * cout * (size_t)N);
    float *y1 = malloc(sizeof(float) * yper * nimg), *y2 = malloc(sizeof(float) * yper * nimg);
    float *ap = malloc(sizeof(float) * nn_gemm_apack_n(kt, cout, K)), *bp = NULL;
    if (posix_memalign((void **)&bp, 64, sizeof(float) * nn_gemm_bpack_n(kt, K, N))) bp = NULL;
    float *ph = nn_gemm_phases_ok(h, h, s, ho, ho) ? malloc(sizeof(float) * xper * nimg) : NULL;
    if (!x || !w || !col || !tmp || !y1 || !y2 || !ap || !bp) return 1;
    for (size_t i = 0; i < xper * nimg; i++) x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    for (size_t i = 0; i < (size_t)cout * K; i++) w[i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
    nn_gemm_pack_a(kt, w, K, cout, K, ap);
    double flops = 2.0 * cout * K * N, tb = 1e30, to = 1e30, tp = 1e30;
    for (int r = 0; r < 20; r++) {
        double t0 = secs();
        for (int i = 0; i < nimg; i++)
            nn_im2col(x + xper * i, cin, h, h, k, s, p, ho, ho, col + (size_t)i * hwo, N);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, N, K, 1.0f, w, K, col, N,
                    0.0f, tmp, N);
        for (int i = 0; i < nimg; i++)
            for (int o = 0; o < cout; o++)
                memcpy(y1 + yper * i + (size_t)o * hwo, tmp + (size_t)o * N + (size_t)i * hwo,
                       sizeof(float) * hwo);
        double t1 = secs();
        int NP = nn_gemm_npanels(kt, N);
        if (ph) nn_gemm_phase_split(kt, x, xper, nimg, cin, h, h, ph, 0, cin);
        nn_gemm_pack_conv(kt, x, ph, xper, nimg, cin, h, h, k, s, p, ho, ho, bp, 0, NP);
        double t2 = secs();
        nn_gemm_out o = {y2, hwo, yper, NULL, 0, 0};
        nn_gemm_packed(kt, cout, N, K, ap, bp, &o, 0, 1);
        double t3 = secs();
        if (t1 - t0 < tb) tb = t1 - t0;
        if (t3 - t1 < to) to = t3 - t1;
        if (t2 - t1 < tp) tp = t2 - t1;
    }
    double err = 0, tw = 0;
    for (size_t i = 0; i < yper * nimg; i++)
        err = fmax(err, fabs(y1[i] - y2[i]) / (fabs(y1[i]) + 1));
    if (k == 3 && s == 1) { /* Winograd F(2x2,3x3) on the packed kernel */
        long P = (long)nimg * ((h + 1) / 2) * ((h + 1) / 2);
        float *U = malloc(sizeof(float) * nn_wino_u_n(kt, cout, cin)), *V = NULL;
        float *M = malloc(sizeof(float) * nn_wino_m_n(cout, P)), *rows = malloc(sizeof(float) * nn_wino_rows_n(h, h, P));
        if (posix_memalign((void **)&V, 64, sizeof(float) * nn_wino_v_n(kt, cin, P))) V = NULL;
        if (!U || !V || !M || !rows) return 1;
        nn_wino_weights(kt, w, cout, cin, 0, U);
        tw = 1e30;
        for (int r = 0; r < 20; r++) {
            double t0 = secs();
            nn_wino_conv(kt, U, cin, cout, x, xper, h, h, nimg, y2, yper, 0, NULL, 0, V, M, rows, 0, 0);
            if (secs() - t0 < tw) tw = secs() - t0;
        }
        for (size_t i = 0; i < yper * nimg; i++)
            err = fmax(err, fabs(y1[i] - y2[i]) / (fabs(y1[i]) + 1));
        free(U), free(V), free(M), free(rows);
    }
    printf("isa=%-7s %-10s m=%-4d k=%-5d n=%-5d blas_gflops=%6.1f ours_gflops=%6.1f ratio=%.2f "
           "pack_share=%.2f wino_gflops=%6.1f max_rel_diff=%.1g\n",
           kt->name, name, cout, K, N, flops / tb / 1e9, flops / to / 1e9, tb / to, tp / to,
           tw > 0 ? flops / tw / 1e9 : 0.0, err);
    free(x), free(w), free(col), free(tmp), free(y1), free(y2), free(ap), free(bp), free(ph);
    return err > 1e-4;
}

static int conv_bench(void) {
    openblas_set_num_threads(1);
    int bad = 0;
    for (int lv = nn_isa_best(); lv >= 0; lv--) {
        const nn_kern *kt = nn_kern_of((nn_isa)lv);
        if (!kt || (getenv("URSA_NN_ISA") && kt != nn_kern_get())) continue;
        bad |= conv_shape(kt, "small.c1", 8, 3, 28, 32, 3, 1);
        bad |= conv_shape(kt, "small.l1a", 8, 32, 28, 64, 3, 2);
        bad |= conv_shape(kt, "small.l1b", 8, 64, 14, 64, 3, 1);
        bad |= conv_shape(kt, "small.l2a", 8, 64, 14, 128, 3, 2);
        bad |= conv_shape(kt, "small.l2b", 8, 128, 7, 128, 3, 1);
        bad |= conv_shape(kt, "small.ds", 8, 64, 14, 128, 1, 2);
        bad |= conv_shape(kt, "r18.conv1", 1, 3, 224, 64, 7, 2);
        bad |= conv_shape(kt, "r18.l1", 1, 64, 56, 64, 3, 1);
        bad |= conv_shape(kt, "r18.l2", 1, 128, 28, 128, 3, 1);
        bad |= conv_shape(kt, "r18.l3", 1, 256, 14, 256, 3, 1);
        bad |= conv_shape(kt, "r18.l4", 1, 512, 7, 512, 3, 1);
    }
    return bad;
}

int main(int argc, char **argv) {
    char nerr[200];
    if (nn_engine_init(argv, nerr, sizeof nerr) != URSA_OK) {
        fprintf(stderr, "bench-gemm: %s\n", nerr);
        return 2;
    }
    if (argc > 1 && !strcmp(argv[1], "--conv")) return conv_bench();
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
