/* kern.h: the engine's instruction-set kernels, one table per level, one
 * table picked once at start-up.
 *
 * Everything whose speed depends on the vector unit lives behind a table of
 * function pointers (nn_kern), as BLIS and OpenBLAS pick their micro-kernels:
 * the packed product's register tile and the packs that feed it
 * (gemm.h), Winograd's tile transforms (winograd.h), and the element-wise
 * passes of batch norm, ReLU and residual adds. There is one table per
 * level:
 *
 *   avx512   kern_avx512.c: an 8 x 32 tile in 16 of the 32 zmm registers
 *   avx2     kern_avx2.c:   a 6 x 16 tile in 12 of the 16 ymm registers
 *            (BLIS's and OpenBLAS's Haswell shape), AVX2 + FMA
 *   generic  kern_generic.c: plain C, built on every architecture; the
 *            reference the tests hold the others to
 *
 * The plain-C versions of the simpler passes are written once (kern_c.h)
 * and compiled into each table's file with that file's instruction set, so
 * the compiler vectorises them for it; each table overrides what is worth
 * writing by hand.
 *
 * nn_isa_init() picks the best level the CPU runs (CPUID); URSA_NN_ISA=
 * avx512|avx2|generic forces a level at or below that. Executors take the
 * table in use when they are made and keep it (their packed weights are laid
 * out for its tile), so tests can run each level in turn in one process. */
#ifndef URSA_NN_KERN_H
#define URSA_NN_KERN_H

#include <stddef.h>

#include "err.h"

typedef enum { NN_ISA_GENERIC, NN_ISA_AVX2, NN_ISA_AVX512, NN_ISA_COUNT } nn_isa;

/* Where a product's tile goes: column j, row r to c + (j/cols)*cstride +
 * r*cols + j%cols; plus bias[r] when bias; then max(0, .) when relu; added
 * to what is there when acc. */
typedef struct {
    float *c;
    int cols;
    size_t cstride;
    const float *bias;
    int relu;
    int acc;
} nn_gemm_out;

typedef struct nn_wino_geom nn_wino_geom; /* winograd.h */

/* The widest B panel, and the most weight rows a panel, any table uses. */
#define NN_KERN_NR_MAX 32
#define NN_KERN_MR_MAX 8

typedef struct nn_kern {
    nn_isa isa;
    const char *name; /* "avx512", "avx2", "generic" */
    int mr;           /* rows of a weight panel: the register tile's rows */
    int nr;           /* columns of a wide B panel; nr / 2 is the narrow one */

    /* ---- the packed product (gemm.h says what each does) ---- */
    /* rows [m0, m0+mr) x columns [n0, n0+nr) of C from panels a (k x mr
     * packed) and b (k x W), W the panel width, into o */
    void (*tile)(int k, const float *a, const float *b, const nn_gemm_out *o, int m0, int mr,
                 int n0, int nr, int W);
    void (*pack_a_cols)(const float *a, int lda, int m, int k, int ktot, int k0, float *ap);
    void (*pack_bt)(const float *bt, int ldb, int k, int n, int W, float *bp);
    void (*pack_conv)(const float *x, const float *ph, size_t xper, int nimg, int cin, int h,
                      int w, int k, int s, int p, int ho, int wo, int W, float *bp, int p0,
                      int p1);
    void (*phase_split)(const float *x, size_t xper, int nimg, int cin, int h, int w, float *ph,
                        int c0, int c1);

    /* ---- Winograd F(2x2,3x3)'s transforms, one channel of one image
     * (winograd.h) ---- */
    /* fills the level's own tables of g (may be NULL: none) */
    void (*wino_plan)(nn_wino_geom *g);
    /* B^T d B of the band's tiles (g->ty0, g->nrows) of channel c of n
     * images (x: that channel of image 0, images xper floats apart): row c
     * of the 16 matrices at V (st floats apart, panels W columns wide),
     * image i's tiles from column i * g->TB. pad: nn_wino_rows_n floats,
     * zeroed by the caller before its first call. */
    void (*wino_in)(const nn_wino_geom *g, const float *x, size_t xper, int n, float *pad,
                    float *V, size_t st, int W, int cin, int c);
    /* A^T m A of the band's tiles from column p0.. of row o of the 16
     * products (M, ms floats apart) into the output channel yo (h x w),
     * written or added, then plus bias and max(0, .) when relu */
    void (*wino_out)(const nn_wino_geom *g, const float *M, size_t ms, long p0, float *yo,
                     int accumulate, float bias, int relu);
    /* A dy A^T of one image's gradient dy (cout x h x w), every tile:
     * channel o's tiles at Y + o * ldy, matrix xi ys floats after matrix 0
     * (ldy leaves 8 floats past the last tile for whole-vector stores);
     * pad: the rest of nn_wino_wg_rows_n's scratch past nn_wino_rows_n */
    void (*wino_dy)(const nn_wino_geom *g, const float *dy, int cout, float *pad, float *Y,
                    size_t ldy, size_t ys);

    /* ---- reductions and element-wise passes ---- */
    float (*vsum)(const float *x, size_t n);
    float (*vsqdev)(const float *x, size_t n, float mu);                  /* sum (x - mu)^2 */
    void (*vsum2)(const float *d, const float *x, size_t n, float mu, float *sd, float *sdx);
    /* y = x * sc + sh, then max(0, .) when relu */
    void (*affine)(const float *x, float *y, size_t n, float sc, float sh, int relu);
    /* batch norm's input gradient: dx (= or +=) k1 (d - mdy - (x - mu) k2) */
    void (*bn_dx)(const float *d, const float *x, float *dx, size_t n, float k1, float mdy,
                  float mu, float k2, int add);
    /* d = y > 0 ? d : 0 (a fused ReLU's backward) */
    void (*relu_mask)(float *d, const float *y, size_t n);
    /* o = a + b, then max(0, .) when relu */
    void (*add)(const float *a, const float *b, float *o, size_t n, int relu);
} nn_kern;

/* The tables; the x86 ones exist only on x86-64. */
extern const nn_kern nn_kern_generic;
#if defined(__x86_64__)
extern const nn_kern nn_kern_avx2;
extern const nn_kern nn_kern_avx512;
#endif

/* Picks the level from the CPU and URSA_NN_ISA. A level the CPU lacks, or
 * a name that is none, is URSA_ERR_INVALID with the reason in err (the
 * level in use is then the CPU's best). Safe to call more than once. */
ursa_err nn_isa_init(char *err, size_t errlen);
/* The table in use: the one nn_isa_init or nn_isa_set chose (the CPU's
 * best if neither ran). Borrowed, static. */
const nn_kern *nn_kern_get(void);
/* The best level this CPU runs. */
nn_isa nn_isa_best(void);
/* Makes level `isa` the one in use (tests; benchmarks): URSA_ERR_INVALID
 * when the CPU lacks it. Executors made before keep theirs. */
ursa_err nn_isa_set(nn_isa isa);
/* The table of a level (NULL: not built here), and its name. */
const nn_kern *nn_kern_of(nn_isa isa);
const char *nn_isa_name(nn_isa isa);

#endif
