/* vec.h: the reductions batch norm runs over every channel's rows: sums,
 * sums of squared deviations, and the two sums of its backward pass.
 *
 * A plain C loop that adds into one float cannot be vectorised without
 * -ffast-math (it would change the order of the additions), so these ran
 * one float at a time. Here they run on AVX-512 (16 partial sums) where
 * gemm.h's kernel runs (nn_gemm_avail), and on 8 partial sums otherwise;
 * either way the order differs from a serial loop only by rounding. */
#ifndef URSA_NN_VEC_H
#define URSA_NN_VEC_H

#include <stddef.h>

/* sum of x[0..n) */
float nn_vsum(const float *x, size_t n);
/* sum of (x - mu)^2 */
float nn_vsqdev(const float *x, size_t n, float mu);
/* *sd += sum of d, *sdx += sum of d * (x - mu) */
void nn_vsum2(const float *d, const float *x, size_t n, float mu, float *sd, float *sdx);

#endif
