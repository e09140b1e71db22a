/* kern_generic.c: the plain-C kernel table, built on every architecture
 * and the reference the tests hold the vector tables to; see kern.h. Its
 * tile is 4 x 16 (or 4 x 8) floats in a local array the compiler keeps in
 * whatever vector registers the target has. */
#include "kern_c.h"

#define MR 4

/* W (8 or 16) a constant after inlining, so the inner loop is fixed-size */
static inline __attribute__((always_inline)) void tile_w(int k, const float *a, const float *b,
                                                         const nn_gemm_out *o, int m0, int mr,
                                                         int n0, int nr, const int W) {
    float acc[MR][16];
    memset(acc, 0, sizeof acc);
    for (int i = 0; i < k; i++, a += MR, b += W)
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < W; j++) acc[r][j] += a[r] * b[j];
    for (int r = 0; r < mr; r++) c_store_row(o, m0 + r, n0, nr, acc[r]);
}

static void tile(int k, const float *a, const float *b, const nn_gemm_out *o, int m0, int mr,
                 int n0, int nr, int W) {
    if (W == 16) tile_w(k, a, b, o, m0, mr, n0, nr, 16);
    else tile_w(k, a, b, o, m0, mr, n0, nr, 8);
}

static void pack_a_cols(const float *a, int lda, int m, int k, int ktot, int k0, float *ap) {
    c_pack_a_cols(a, lda, m, k, ktot, k0, MR, ap);
}

const nn_kern nn_kern_generic = {
    .isa = NN_ISA_GENERIC,
    .name = "generic",
    .mr = MR,
    .nr = 16,
    .tile = tile,
    .pack_a_cols = pack_a_cols,
    .pack_bt = c_pack_bt,
    .pack_conv = c_pack_conv,
    .phase_split = c_phase_split,
    .wino_plan = NULL,
    .wino_in = c_wino_in,
    .wino_out = c_wino_out,
    .wino_dy = c_wino_dy,
    .vsum = c_vsum,
    .vsqdev = c_vsqdev,
    .vsum2 = c_vsum2,
    .affine = c_affine,
    .bn_dx = c_bn_dx,
    .relu_mask = c_relu_mask,
    .add = c_add,
};
