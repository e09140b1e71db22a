/* ops.h: the layers other than convolution (conv.c), as plain functions
 * over floats and shapes, the way llm.c writes them: <op>_forward and
 * <op>_backward, shapes in comments, testable without an executor.
 *
 * Tensors are NCHW and contiguous. kt is the instruction-set table whose
 * element-wise passes run the hot loops (kern.h); nth the OpenMP threads a
 * function may use. Gradients are added to (+=) unless a function says it
 * writes them; a NULL gradient is not wanted. */
#ifndef URSA_NN_OPS_H
#define URSA_NN_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "kern.h"

/* Batch norm. x, y (N, C, HW); y may be x. train: normalise with the
 * batch's statistics, kept in mean and istd (C) for backward, and move the
 * running ones (rmean, rvar) by momentum (PyTorch's: unbiased variance,
 * none for a single value); with calib, instead set gamma, beta and the
 * running statistics so this batch passes unchanged (nn_unfold_bn). Else
 * normalise with the running statistics. relu: max(0, .) after. */
void nn_bn_forward(const nn_kern *kt, float *y, float *mean, float *istd, const float *x,
                   float *gamma, float *beta, float *rmean, float *rvar, int N, int C, size_t HW,
                   float eps, float momentum, int train, int calib, int relu, int nth);
/* dx (N, C, HW) written when fresh, else added to; dgamma, dbeta (C). */
void nn_bn_backward(const nn_kern *kt, float *dx, float *dgamma, float *dbeta, const float *dy,
                    const float *x, const float *gamma, const float *mean, const float *istd,
                    int N, int C, size_t HW, int fresh, int nth);

/* y = max(0, x); dx += (y > 0) dy; (n) */
void nn_relu_forward(float *y, const float *x, size_t n);
void nn_relu_backward(float *dx, const float *dy, const float *y, size_t n, int nth);

/* Max pooling, k x k windows, stride s, padding p: x (NC, H, W), y (NC,
 * Ho, Wo). NaN passes through; ties go to the first maximum, as PyTorch.
 * rows: H*Wo floats of scratch a thread, rows_n apart. */
void nn_maxpool_forward(float *y, const float *x, int NC, int H, int W, int k, int s, int p,
                        int Ho, int Wo, float *rows, size_t rows_n, int nth);
void nn_maxpool_backward(float *dx, const float *dy, const float *x, int NC, int H, int W, int k,
                         int s, int p, int Ho, int Wo, int nth);

/* Average pooling, k x k, stride s, no padding: x (NC, H, W), y (NC, Ho, Wo). */
void nn_avgpool_forward(float *y, const float *x, int NC, int H, int W, int k, int s, int Ho,
                        int Wo);
void nn_avgpool_backward(float *dx, const float *dy, int NC, int H, int W, int k, int s, int Ho,
                         int Wo);

/* Global pooling, average or max: x (NC, HW), y (NC). */
void nn_gpool_forward(float *y, const float *x, int NC, size_t HW, int max);
void nn_gpool_backward(float *dx, const float *dy, const float *x, int NC, size_t HW, int max);

/* Channels of a (N, na) then b (N, nb): y (N, na + nb). */
void nn_concat_forward(float *y, const float *a, const float *b, int N, size_t na, size_t nb);
void nn_concat_backward(float *da, float *db, const float *dy, int N, size_t na, size_t nb);

/* y (N, out) = x (N, in) w^T (w: out x in) + b (out, may be NULL);
 * on OpenBLAS, nth threads each taking a slice. */
void nn_linear_forward(float *y, const float *x, const float *w, const float *b, int N, int in,
                       int out, int nth);
void nn_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, int N, int in, int out, int nth);

/* Dropout with probability p: keeps a unit with 1 - p (mask), scaled by
 * 1/(1 - p); rng is xorshift state. mask NULL: y = x. */
void nn_dropout_forward(float *y, uint8_t *mask, const float *x, size_t n, float p,
                        uint64_t *rng);
void nn_dropout_backward(float *dx, const float *dy, const uint8_t *mask, size_t n, float p);

/* y = a + b, then max(0, .) when relu; (n) */
void nn_add_forward(const nn_kern *kt, float *y, const float *a, const float *b, size_t n,
                    int relu, int nth);

#endif
