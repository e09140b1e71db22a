/* winograd.h: F(2x2, 3x3) for 3x3 stride-1 pad-1 convolutions; see
 * winograd.c. */
#ifndef URSA_NN_WINOGRAD_H
#define URSA_NN_WINOGRAD_H

#include <stddef.h>

/* floats U takes (packed: as gemm.h's weight panels), and V for c
 * channels and P tiles (either layout) */
size_t nn_wino_u_n(int cout, int cin, int packed);
size_t nn_wino_v_n(int c, long P);
/* floats of row scratch a thread needs for h x w images */
size_t nn_wino_rows_n(int h, int w);

/* U (16 x cout x cin) from conv weights w (cout x cin x 3 x 3); with
 * for_dx, the transform of the flipped, channel-swapped kernel that maps
 * output gradients to input gradients (U is then 16 x cin x cout). packed:
 * each of the 16 matrices laid out for gemm.h (only where nn_gemm_avail). */
void nn_wino_weights(const float *w, int cout, int cin, int for_dx, int packed, float *U);

/* y = (or +=, with accumulate) the convolution of n images x (cin x h x w,
 * xper floats apart) with the kernel behind U, into y (cout x h x w, yper
 * apart). U packed as nn_wino_weights made it. V needs nn_wino_v_n(cin, P)
 * floats, 64-byte aligned, and M 16*cout*P, P = n * ceil(h/2) *
 * ceil(w/2). rows: nn_wino_rows_n(h, w) floats of scratch for each thread that works
 * (rows_n apart). par: spread the work over the OpenMP threads. */
void nn_wino_conv(const float *U, int packed, int cin, int cout, const float *x, size_t xper,
                  int h, int w, int n, float *y, size_t yper, int accumulate, float *V, float *M,
                  float *rows, size_t rows_n, int par);

/* Weight gradients. nn_wino_wgrad adds to M (16 x cout x cin) the
 * transformed gradient of n images: x (cin x h x w, xper apart) and dy
 * (cout x h x w, yper apart). Scratch, for P = n * ceil(h/2) * ceil(w/2)
 * tiles: V 16*cin*P floats, Y 16*cout*P, ap nn_gemm_apack_n(cout, P), bp
 * nn_gemm_bpack_n(P, cin) (64-byte aligned), rows nn_wino_wg_rows_n(h, w).
 * Only where nn_gemm_avail. nn_wino_wgrad_finish adds the 3x3 gradient M
 * stands for to dw (cout x cin x 3 x 3). */
size_t nn_wino_wg_rows_n(int h, int w);
void nn_wino_wgrad(const float *x, size_t xper, const float *dy, size_t yper, int cin, int cout,
                   int h, int w, int n, float *M, float *V, float *Y, float *ap, float *bp,
                   float *rows, size_t rows_n);
void nn_wino_wgrad_finish(const float *M, int cout, int cin, float *dw);

#endif
