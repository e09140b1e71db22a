/* gemm.h: our own matrix product for convolutions, on AVX-512.
 *
 * OpenBLAS packs both operands on every call, and a convolution's product
 * is small (the small resnet's are 64 x 576 x 1568): packing the weights
 * again each time, im2col into a matrix and then packing that matrix, and
 * a second pass for bias and ReLU cost as much as the product. Here the
 * weights are packed once (per inference model; per step in training),
 * im2col writes the packed panels directly (one masked gather a row of a
 * panel), and bias and ReLU are applied in registers before the store.
 *
 * Layouts. A (m x k, the weights): panels of NN_GEMM_MR rows, each k x MR,
 * zero-padded to a whole panel. B (k x n, the im2col columns): panels of
 * nn_gemm_nr(n) columns, each k x that, zero-padded. C goes straight to NCHW:
 * column j of the product is pixel j % cols of image j / cols.
 *
 * nn_gemm_avail() says whether the CPU runs it (AVX-512F); URSA_NN_GEMM=0
 * turns it off, and the engine then uses OpenBLAS for everything. */
#ifndef URSA_NN_GEMM_H
#define URSA_NN_GEMM_H

#include <stddef.h>

#define NN_GEMM_MR 8
#define NN_GEMM_NR 32

int nn_gemm_avail(void);

/* B's panels are NN_GEMM_NR columns wide, or 16 where that pads much less
 * (n <= 16, or 32 < n <= 48): the width for n columns, and the panels */
int nn_gemm_nr(int n);
int nn_gemm_npanels(int n);

/* floats a packed A or B needs */
size_t nn_gemm_apack_n(int m, int k);
size_t nn_gemm_bpack_n(int k, int n);

/* a: m x k row-major (lda floats a row) -> ap */
void nn_gemm_pack_a(const float *a, int lda, int m, int k, float *ap);
/* the same for columns [k0, k0 + k) of a packed A whose inner dimension is
 * ktot, from a (m x k, lda floats a row): a weight gradient's dY, image by
 * image, without first copying the images side by side */
void nn_gemm_pack_a_cols(const float *a, int lda, int m, int k, int ktot, int k0, float *ap);

/* Stride-2 convolutions whose output grid is half the input's (even h and
 * w): nn_gemm_phases_ok says so. x split by row and column parity into four
 * planes a channel, so that each tap reads consecutive values of one plane
 * as a stride-1 convolution does, where it would read every other value:
 * ph gets nimg images of cin x 4 x h/2 x w/2 (xper floats apart, as x),
 * channels [c0, c1) of each. */
int nn_gemm_phases_ok(int h, int w, int s, int ho, int wo);
void nn_gemm_phase_split(const float *x, size_t xper, int nimg, int cin, int h, int w, float *ph,
                         int c0, int c1);

/* The B panels [p0, p1) of a convolution's im2col: the product's columns
 * are the output pixels of nimg images (x: cin x h x w each, xper floats
 * apart), image after image; columns past the last are zeros. k <= 8. ph:
 * x's parity planes where nn_gemm_phases_ok (else NULL). */
void nn_gemm_pack_conv(const float *x, const float *ph, size_t xper, int nimg, int cin, int h,
                       int w, int k, int s, int p, int ho, int wo, float *bp, int p0, int p1);

/* B (k x n) from its transpose bt (n x k, ldb floats a row): a weight
 * gradient's im2col rows, whose inner dimension (the pixels) runs along
 * the rows. 16 x 16 blocks transposed in registers. */
void nn_gemm_pack_bt(const float *bt, int ldb, int k, int n, float *bp);

/* Where the product goes: column j, row r to c + (j/cols)*cstride +
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

/* C = A B (m x n, inner k) from packed operands, the tiles of worker t of
 * T (call it from each of T threads, or with t=0, T=1 for all). */
void nn_gemm_packed(int m, int n, int k, const float *ap, const float *bp, const nn_gemm_out *o,
                    int t, int T);

#endif
