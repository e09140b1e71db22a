/* gemm.h: our own matrix product for convolutions, on the kernel table's
 * register tile (kern.h).
 *
 * OpenBLAS packs both operands on every call, and a convolution's product
 * is small (the small resnet's are 64 x 576 x 1568): packing the weights
 * again each time, im2col into a matrix and then packing that matrix, and
 * a second pass for bias and ReLU cost as much as the product. Here the
 * weights are packed once (per inference model; per step in training),
 * im2col writes the packed panels directly, and bias and ReLU are applied
 * in registers before the store.
 *
 * Layouts, for a table kt. A (m x k, the weights): panels of kt->mr rows,
 * each k x mr, zero-padded to a whole panel. B (k x n, the im2col columns):
 * panels of nn_gemm_nr(kt, n) columns, each k x that, zero-padded. C goes
 * straight to NCHW: column j of the product is pixel j % cols of image j /
 * cols. Packed operands are only for the table that packed them. */
#ifndef URSA_NN_GEMM_H
#define URSA_NN_GEMM_H

#include <stddef.h>

#include "kern.h"

/* B's panels are kt->nr columns wide, or half that where that pads much
 * less: the width for n columns, and the panels */
int nn_gemm_nr(const nn_kern *kt, int n);
int nn_gemm_npanels(const nn_kern *kt, int n);

/* floats a packed A or B needs */
size_t nn_gemm_apack_n(const nn_kern *kt, int m, int k);
size_t nn_gemm_bpack_n(const nn_kern *kt, int k, int n);

/* a: m x k row-major (lda floats a row) -> ap */
void nn_gemm_pack_a(const nn_kern *kt, const float *a, int lda, int m, int k, float *ap);
/* the same for columns [k0, k0 + k) of a packed A whose inner dimension is
 * ktot, from a (m x k, lda floats a row): a weight gradient's dY, image by
 * image, without first copying the images side by side */
void nn_gemm_pack_a_cols(const nn_kern *kt, const float *a, int lda, int m, int k, int ktot,
                         int k0, float *ap);
/* A = a^T, for a (k x m, lda floats a row): the transposed weights of an
 * input gradient (dX = W^T dY) */
void nn_gemm_pack_at(const nn_kern *kt, const float *a, int lda, int m, int k, float *ap);

/* Stride-2 convolutions whose output grid is half the input's (even h and
 * w): nn_gemm_phases_ok says so. x split by row and column parity into four
 * planes a channel, so that each tap reads consecutive values of one plane
 * as a stride-1 convolution does, where it would read every other value:
 * ph gets nimg images of cin x 4 x h/2 x w/2 (xper floats apart, as x),
 * channels [c0, c1) of each. */
int nn_gemm_phases_ok(int h, int w, int s, int ho, int wo);
void nn_gemm_phase_split(const nn_kern *kt, const float *x, size_t xper, int nimg, int cin,
                         int h, int w, float *ph, int c0, int c1);

/* The B panels [p0, p1) of a convolution's im2col: the product's columns
 * are the output pixels of nimg images (x: cin x h x w each, xper floats
 * apart), image after image; columns past the last are zeros. ph: x's
 * parity planes where nn_gemm_phases_ok (else NULL). */
void nn_gemm_pack_conv(const nn_kern *kt, const float *x, const float *ph, size_t xper, int nimg,
                       int cin, int h, int w, int k, int s, int p, int ho, int wo, float *bp,
                       int p0, int p1);

/* B (k x n) from its transpose bt (n x k, ldb floats a row): a weight
 * gradient's im2col rows, whose inner dimension (the pixels) runs along
 * the rows. */
void nn_gemm_pack_bt(const nn_kern *kt, const float *bt, int ldb, int k, int n, float *bp);

/* The panels [p0, p1) of B (k x n) from rows of nimg images side by side:
 * row r of image i is at b + i*bstride + r*cols (cols columns an image, n =
 * nimg*cols): an input gradient's dY. */
void nn_gemm_pack_b_imgs(const nn_kern *kt, const float *b, size_t bstride, int cols, int nimg,
                         int k, float *bp, int p0, int p1);

/* C = A B (m x n, inner k) from packed operands, the tiles of worker t of
 * T (call it from each of T threads, or with t=0, T=1 for all). */
void nn_gemm_packed(const nn_kern *kt, int m, int n, int k, const float *ap, const float *bp,
                    const nn_gemm_out *o, int t, int T);

#endif
