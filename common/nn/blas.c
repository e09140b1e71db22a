/* blas.c: choosing and checking OpenBLAS's kernel; see blas.h. */
#include "blas.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kern.h"
#include "log.h"

const char *nn_blas_core(void) { return openblas_get_corename(); }

void nn_blas_init(char **argv) {
    const char *ct = getenv("OPENBLAS_CORETYPE"); /* empty: unset (as OpenBLAS takes it) */
    if ((ct && *ct) || getenv("URSA_BLAS_REEXEC")) {
        ULOG_INFO("event=blas core=%s coretype_env=%s", nn_blas_core(),
                  ct && *ct ? ct : "(set by ursa)");
        return;
    }
    const char *core = nn_blas_core();
    const char *want = NULL;
#if defined(__x86_64__) /* OpenBLAS's misdetection is an x86 one */
    __builtin_cpu_init();
    /* the generic kernels OpenBLAS falls back to on CPUs newer than it */
    int generic = !strcasecmp(core, "Prescott") || !strcasecmp(core, "Core2") ||
                  !strcasecmp(core, "Nehalem") || !strcasecmp(core, "Sandybridge") ||
                  getenv("URSA_BLAS_TEST_GENERIC"); /* lets a test take the re-exec path */
    if (generic && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        want = "SkylakeX";
    else if (generic && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        want = "Haswell";
#endif
    if (!want) {
        ULOG_INFO("event=blas core=%s", core);
        return;
    }
    ULOG_INFO("event=blas_reexec detected=%s using=%s "
              "note=\"OpenBLAS misdetects this CPU; restarting with OPENBLAS_CORETYPE\"",
              core, want);
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("URSA_BLAS_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    ULOG_WARN("event=blas_reexec_failed core=%s", core); /* go on, slowly */
}

ursa_err nn_engine_init(char **argv, char *err, size_t errlen) {
    nn_blas_init(argv);
    ursa_err e = nn_isa_init(err, errlen);
    if (e != URSA_OK) return e;
    ULOG_INFO("event=nn_isa isa=%s best=%s blas=%s", nn_kern_get()->name,
              nn_isa_name(nn_isa_best()), nn_blas_core());
    return URSA_OK;
}

void nn_gemm_naive(int m, int n, int k, const float *a, const float *b, float *c) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++) s += (double)a[(size_t)i * k + p] * b[(size_t)p * n + j];
            c[(size_t)i * n + j] = (float)s;
        }
}

double nn_blas_check(int m, int n, int k) {
    float *a = malloc(sizeof(float) * (size_t)m * k), *b = malloc(sizeof(float) * (size_t)k * n);
    float *c = malloc(sizeof(float) * (size_t)m * n), *r = malloc(sizeof(float) * (size_t)m * n);
    double worst = INFINITY;
    if (a && b && c && r) {
        unsigned s = 12345;
        for (size_t i = 0; i < (size_t)m * k; i++) a[i] = (float)((s = s * 1103515245 + 12345) >> 16 & 1023) / 1000.0f - 0.5f;
        for (size_t i = 0; i < (size_t)k * n; i++) b[i] = (float)((s = s * 1103515245 + 12345) >> 16 & 1023) / 1000.0f - 0.5f;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c,
                    n);
        nn_gemm_naive(m, n, k, a, b, r);
        worst = 0;
        for (size_t i = 0; i < (size_t)m * n; i++) {
            double e = fabs((double)c[i] - r[i]) / (fabs(r[i]) + 1.0);
            if (e > worst || isnan(e)) worst = isnan(e) ? INFINITY : e;
        }
        ULOG_INFO("event=blas_check core=%s m=%d n=%d k=%d max_rel_err=%.3g", nn_blas_core(), m, n,
                  k, worst);
    }
    free(a);
    free(b);
    free(c);
    free(r);
    return worst;
}
