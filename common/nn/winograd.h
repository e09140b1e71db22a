/* winograd.h: F(2x2, 3x3) for 3x3 stride-1 pad-1 convolutions; see
 * winograd.c. The transforms are the kernel table's (kern.h); the products
 * run on gemm.h's packed kernel of the same table. */
#ifndef URSA_NN_WINOGRAD_H
#define URSA_NN_WINOGRAD_H

#include <stddef.h>
#include <stdint.h>

#include "kern.h"

/* AVX-512's small images (kern_avx512.c): a tile row under 16 tiles and at
 * most 256 tiles in all; each group of 16 tiles is put together across tile
 * rows. */
#define NN_WINO_SMALL_T 256

/* One image size's tiling, made by nn_wino_geom_make. */
struct nn_wino_geom {
    int h, w;       /* the image: outputs are the inputs' size */
    int th, tw, T;  /* tile rows, tiles a row, tiles an image */
    int pw;         /* a row of the zero-padded copy (kern_c.h, kern_avx2.c) */
    /* the band of tile rows a pass takes ([ty0, ty0 + nrows), TB tiles an
     * image): all of them, or fewer where one image has more tiles than
     * fit in L2 (nn_wino_conv) */
    int ty0, nrows, TB;
    /* AVX-512's small-image tables, filled by its wino_plan when small:
     * where a padded row fits one vector (pw <= 16) and a group's tiles lie
     * in at most four tile rows t0..t0+3, input row 2 (t0 + s) + a of slot s
     * is one vector, and a tile's pixel (a, b) is lane 2 tx + b of its
     * slot's: two two-source permutes and a blend make 16 tiles' pixel;
     * else a gather a pixel from off[] */
    int small;
    int off[NN_WINO_SMALL_T];                  /* tile p's top-left in the padded copy */
    int i01[NN_WINO_SMALL_T], i23[NN_WINO_SMALL_T]; /* per lane: the permutes' indices, b = 0 */
    uint16_t k23[NN_WINO_SMALL_T / 16];        /* lanes from slots 2 and 3 */
    int16_t t0[NN_WINO_SMALL_T / 16];          /* the group's first tile row, or -1: gather */
    /* outputs, where t0 >= 0: output column j of slot s's rows is lane
     * oidx[j] of the even (< 16) or odd (>= 16) results; omask the columns
     * made; else scattered to ooff[] (rok, cok: tiles with a second output
     * row, column) */
    int oidx[NN_WINO_SMALL_T / 16][4][16];
    uint16_t omask[NN_WINO_SMALL_T / 16][4];
    int ooff[NN_WINO_SMALL_T];
    uint16_t rok[NN_WINO_SMALL_T / 16], cok[NN_WINO_SMALL_T / 16];
};

void nn_wino_geom_make(const nn_kern *kt, int h, int w, nn_wino_geom *g);

/* floats U takes (as gemm.h's weight panels of kt), and V for c channels
 * and P tiles */
size_t nn_wino_u_n(const nn_kern *kt, int cout, int cin);
size_t nn_wino_v_n(const nn_kern *kt, int c, long P);
/* floats M takes for cout channels and P tiles (a little past the last
 * product: the transforms read whole vectors; and dy's rows in a weight
 * gradient are P + 8 long) */
size_t nn_wino_m_n(int cout, long P);
/* floats V takes in a weight gradient (plain rows, a little longer) */
size_t nn_wino_wv_n(int c, long P);
/* floats of scratch a thread needs for h x w images, P tiles a pass at
 * most: the forward's, and the weight gradient's (more) */
size_t nn_wino_rows_n(int h, int w, long P);
size_t nn_wino_wg_rows_n(int h, int w, long P);

/* U (16 x cout x cin) from conv weights w (cout x cin x 3 x 3); with
 * for_dx, the transform of the flipped, channel-swapped kernel that maps
 * output gradients to input gradients (U is then 16 x cin x cout). Each of
 * the 16 matrices is laid out as gemm.h's weight panels of kt. */
void nn_wino_weights(const nn_kern *kt, const float *w, int cout, int cin, int for_dx, float *U);

/* y = (or +=, with accumulate) the convolution of n images x (cin x h x w,
 * xper floats apart) with the kernel behind U, into y (cout x h x w, yper
 * apart), plus bias (cout, or NULL), then max(0, .) when relu. Scratch for
 * each thread that works, thread t's tstride floats after thread 0's: V
 * nn_wino_v_n(cin, P) floats, 64-byte aligned, M nn_wino_m_n(cout, P) and
 * rows nn_wino_rows_n(h, w, P), P = n * ceil(h/2) * ceil(w/2). par: spread
 * the work over the OpenMP threads. An image of more than NN_WINO_BAND
 * tiles goes a band of tile rows at a time, so that V and M stay in L2. */
#define NN_WINO_BAND 256
void nn_wino_conv(const nn_kern *kt, const float *U, int cin, int cout, const float *x,
                  size_t xper, int h, int w, int n, float *y, size_t yper, int accumulate,
                  const float *bias, int relu, float *V, float *M, float *rows, size_t tstride,
                  int par);

/* Weight gradients. nn_wino_wgrad adds to M (16 x cout x cin) the
 * transformed gradient of n images: x (cin x h x w, xper apart) and dy
 * (cout x h x w, yper apart). Scratch, for P = n * ceil(h/2) * ceil(w/2)
 * tiles: V nn_wino_wv_n(cin, P) floats, Y nn_wino_m_n(cout, P), ap nn_gemm_apack_n(kt,
 * cout, P), bp nn_gemm_bpack_n(kt, P, cin) (64-byte aligned), rows
 * nn_wino_wg_rows_n(h, w, P). One thread. nn_wino_wgrad_finish adds the 3x3
 * gradient M stands for to dw (cout x cin x 3 x 3). */
void nn_wino_wgrad(const nn_kern *kt, const float *x, size_t xper, const float *dy, size_t yper,
                   int cin, int cout, int h, int w, int n, float *M, float *V, float *Y, float *ap,
                   float *bp, float *rows, size_t rows_n);
void nn_wino_wgrad_finish(const float *M, int cout, int cin, float *dw);

#endif
