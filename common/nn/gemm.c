/* gemm.c: the packed product's sizes, the packs that need no vector code,
 * and the loop over tiles; the tile itself and the heavy packs are the
 * kernel table's (kern.h). See gemm.h. */
#include "gemm.h"

#include <string.h>

/* half-width panels when that pads at least a quarter less than full ones
 * would (7x7 outputs of one image: 16 Winograd tiles, not 32) */
int nn_gemm_nr(const nn_kern *kt, int n) {
    int w = kt->nr, h = w / 2;
    int ph = (n + h - 1) / h * h, pw = (n + w - 1) / w * w;
    return 4 * ph <= 3 * pw ? h : w;
}

int nn_gemm_npanels(const nn_kern *kt, int n) {
    int W = nn_gemm_nr(kt, n);
    return (n + W - 1) / W;
}

size_t nn_gemm_apack_n(const nn_kern *kt, int m, int k) {
    return (size_t)((m + kt->mr - 1) / kt->mr) * kt->mr * k;
}

size_t nn_gemm_bpack_n(const nn_kern *kt, int k, int n) {
    return (size_t)nn_gemm_npanels(kt, n) * nn_gemm_nr(kt, n) * k;
}

void nn_gemm_pack_a(const nn_kern *kt, const float *a, int lda, int m, int k, float *ap) {
    kt->pack_a_cols(a, lda, m, k, k, 0, ap);
}

void nn_gemm_pack_a_cols(const nn_kern *kt, const float *a, int lda, int m, int k, int ktot,
                         int k0, float *ap) {
    kt->pack_a_cols(a, lda, m, k, ktot, k0, ap);
}

/* row i of a^T's panel is a's column: each step of the inner dimension is
 * mr consecutive values of one row of a */
void nn_gemm_pack_at(const nn_kern *kt, const float *a, int lda, int m, int k, float *ap) {
    int MR = kt->mr;
    for (int m0 = 0; m0 < m; m0 += MR) {
        int mr = m - m0 < MR ? m - m0 : MR;
        float *d = ap + (size_t)m0 * k;
        for (int i = 0; i < k; i++, d += MR) {
            memcpy(d, a + (size_t)i * lda + m0, sizeof(float) * mr);
            if (mr < MR) memset(d + mr, 0, sizeof(float) * (MR - mr));
        }
    }
}

void nn_gemm_pack_b_imgs(const nn_kern *kt, const float *b, size_t bstride, int cols, int nimg,
                         int k, float *bp, int p0, int p1) {
    int n = cols * nimg, W = nn_gemm_nr(kt, n);
    for (int pn = p0; pn < p1; pn++) {
        float *d = bp + (size_t)pn * W * k;
        int j0 = pn * W;
        for (int r = 0; r < k; r++, d += W)
            for (int L = 0, j = j0; L < W;) { /* runs of columns within one image */
                if (j >= n) {
                    memset(d + L, 0, sizeof(float) * (W - L));
                    break;
                }
                int q = j % cols, len = cols - q < W - L ? cols - q : W - L;
                memcpy(d + L, b + (size_t)(j / cols) * bstride + (size_t)r * cols + q,
                       sizeof(float) * len);
                L += len;
                j += len;
            }
    }
}

int nn_gemm_phases_ok(int h, int w, int s, int ho, int wo) {
    return s == 2 && h % 2 == 0 && w % 2 == 0 && ho == h / 2 && wo == w / 2;
}

void nn_gemm_phase_split(const nn_kern *kt, const float *x, size_t xper, int nimg, int cin,
                         int h, int w, float *ph, int c0, int c1) {
    kt->phase_split(x, xper, nimg, cin, h, w, ph, c0, c1);
}

void nn_gemm_pack_conv(const nn_kern *kt, const float *x, const float *ph, size_t xper, int nimg,
                       int cin, int h, int w, int k, int s, int p, int ho, int wo, float *bp,
                       int p0, int p1) {
    kt->pack_conv(x, ph, xper, nimg, cin, h, w, k, s, p, ho, wo,
                  nn_gemm_nr(kt, nimg * ho * wo), bp, p0, p1);
}

void nn_gemm_pack_bt(const nn_kern *kt, const float *bt, int ldb, int k, int n, float *bp) {
    kt->pack_bt(bt, ldb, k, n, nn_gemm_nr(kt, n), bp);
}

void nn_gemm_packed(const nn_kern *kt, int m, int n, int k, const float *ap, const float *bp,
                    const nn_gemm_out *o, int t, int T) {
    int MR = kt->mr, MP = (m + MR - 1) / MR, W = nn_gemm_nr(kt, n), NP = (n + W - 1) / W;
    long tot = (long)MP * NP, lo = tot * t / T, hi = tot * (t + 1) / T;
    /* few column panels: each weight panel meets all of them while it is
     * in cache; else each column panel meets all the weights */
    int mmajor = NP <= 4;
    for (long id = lo; id < hi; id++) {
        int mp = mmajor ? (int)(id / NP) : (int)(id % MP);
        int np = mmajor ? (int)(id % NP) : (int)(id / MP);
        int m0 = mp * MR, n0 = np * W;
        kt->tile(k, ap + (size_t)m0 * k, bp + (size_t)np * W * k, o, m0, m - m0 < MR ? m - m0 : MR,
                 n0, n - n0 < W ? n - n0 : W, W);
    }
}
