/* blas.h: the matrix product under the NN engine, and getting the fast one.
 *
 * Debian's OpenBLAS 0.3.21 takes AVX-512 CPUs it does not know for a
 * Prescott and runs sgemm about 8x slower than its SkylakeX kernel, which
 * computes the same results. OpenBLAS reads OPENBLAS_CORETYPE only when it
 * loads, so nn_blas_init() sets it and re-executes the program once, before
 * any work is done; an OPENBLAS_CORETYPE already in the environment is
 * respected. nn_blas_check() compares sgemm with a naive product, which
 * every program using the engine runs at start-up. */
#ifndef URSA_NN_BLAS_H
#define URSA_NN_BLAS_H

#include <stddef.h>

#include "err.h"

/* Call first thing in main(). If OpenBLAS chose a slow generic kernel on a
 * CPU with AVX-512 (or AVX2), sets OPENBLAS_CORETYPE=SkylakeX (or Haswell)
 * and re-executes argv; returns only when nothing needed doing or the
 * re-exec failed (then the slow kernel is used and logged). */
void nn_blas_init(char **argv);

/* What every program that runs the engine calls first in main(): the
 * above, then the engine's instruction-set level (kern.h's nn_isa_init,
 * from the CPU and URSA_NN_ISA), and one log line with both
 * (event=nn_isa isa=avx2 blas=Haswell). A URSA_NN_ISA the CPU cannot run,
 * or no level at all, is URSA_ERR_INVALID with the reason in err. */
ursa_err nn_engine_init(char **argv, char *err, size_t errlen);

/* The kernel OpenBLAS runs on ("SkylakeX"). Borrowed. */
const char *nn_blas_core(void);

/* C = A (m x k) * B (k x n), row-major, float: the naive reference. */
void nn_gemm_naive(int m, int n, int k, const float *a, const float *b, float *c);

/* Runs sgemm against the naive product on m x n x k random matrices and
 * returns the largest relative error; logs the kernel and the error. */
double nn_blas_check(int m, int n, int k);

#endif
