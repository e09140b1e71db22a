/* gemm.c: our own packed matrix product for convolutions; see gemm.h.
 *
 * The micro-kernel keeps an 8 x 32 tile of C in 16 AVX-512 registers and
 * runs the whole inner dimension: each step loads a row of the B panel
 * (two vectors) and broadcasts eight weights. The panels are laid out in
 * the order the kernel reads them, so every load is sequential. */
#include "gemm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MR NN_GEMM_MR
#define NR NN_GEMM_NR

size_t nn_gemm_apack_n(int m, int k) { return (size_t)((m + MR - 1) / MR) * MR * k; }
size_t nn_gemm_bpack_n(int k, int n) { return (size_t)((n + NR - 1) / NR) * NR * k; }

void nn_gemm_pack_a(const float *a, int lda, int m, int k, float *ap) {
    for (int m0 = 0; m0 < m; m0 += MR) {
        float *d = ap + (size_t)m0 * k;
        int mr = m - m0 < MR ? m - m0 : MR;
        for (int i = 0; i < k; i++, d += MR) {
            for (int r = 0; r < mr; r++) d[r] = a[(size_t)(m0 + r) * lda + i];
            for (int r = mr; r < MR; r++) d[r] = 0;
        }
    }
}

/* the output address of row r, column j */
static inline float *out_at(const nn_gemm_out *o, int r, int j) {
    return o->c + (size_t)(j / o->cols) * o->cstride + (size_t)r * o->cols + j % o->cols;
}

/* one finished tile row: bias, ReLU, store (v holds NR values, nr valid) */
static inline void store_row(const nn_gemm_out *o, int r, int n0, int nr, float *v) {
    float b = o->bias ? o->bias[r] : 0.0f;
    for (int j = 0; j < nr; j++) {
        float t = v[j] + b;
        if (o->relu && !(t > 0)) t = 0;
        *out_at(o, r, n0 + j) = t;
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

#define TGT __attribute__((target("avx512f")))

int nn_gemm_avail(void) {
    static int avail = -1;
    if (avail < 0) {
        const char *env = getenv("URSA_NN_GEMM");
        __builtin_cpu_init();
        avail = __builtin_cpu_supports("avx512f") && !(env && !strcmp(env, "0"));
    }
    return avail;
}

TGT void nn_gemm_pack_conv(const float *x, size_t xper, int nimg, int cin, int h, int w, int k,
                           int s, int p, int ho, int wo, float *bp, int p0, int p1) {
    int hwo = ho * wo, n = nimg * hwo, kk = k * k, K = cin * kk;
    int32_t off[NR];
    uint32_t mask[64];
    for (int pn = p0; pn < p1; pn++) {
        memset(mask, 0, sizeof(uint32_t) * (size_t)kk);
        for (int jj = 0; jj < NR; jj++) {
            int j = pn * NR + jj;
            off[jj] = 0;
            if (j >= n) continue;
            int img = j / hwo, q = j % hwo, iy0 = q / wo * s - p, ix0 = q % wo * s - p;
            off[jj] = (int32_t)((size_t)img * xper + (ptrdiff_t)iy0 * w + ix0);
            for (int ky = 0; ky < k; ky++) {
                if (iy0 + ky < 0 || iy0 + ky >= h) continue;
                for (int kx = 0; kx < k; kx++)
                    if (ix0 + kx >= 0 && ix0 + kx < w) mask[ky * k + kx] |= 1u << jj;
            }
        }
        float *d = bp + (size_t)pn * K * NR;
        int j0 = pn * NR;
        int jl = (j0 + NR < n ? j0 + NR : n) - 1; /* the panel's last real column */
        if (s == 1 && ho == h && wo == w && j0 / hwo == jl / hwo) {
            /* the output grid is the input grid and the panel is in one
             * image: a row of it is 32 consecutive input values, shifted by
             * (ky, kx), less the ones the mask says fall outside */
            const float *src = x + (size_t)(j0 / hwo) * xper + j0 % hwo - p * w - p;
            for (int c = 0; c < cin; c++, src += (size_t)h * w)
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++, d += NR) {
                        uint32_t mk = mask[ky * k + kx];
                        const float *q = src + ky * w + kx;
                        _mm512_store_ps(d, _mm512_maskz_loadu_ps((__mmask16)mk, q));
                        _mm512_store_ps(d + 16, _mm512_maskz_loadu_ps((__mmask16)(mk >> 16), q + 16));
                    }
            continue;
        }
        __m512i o0 = _mm512_loadu_si512(off), o1 = _mm512_loadu_si512(off + 16);
        const __m512 z = _mm512_setzero_ps();
        for (int c = 0; c < cin; c++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++, d += NR) {
                    uint32_t mk = mask[ky * k + kx];
                    __m512i dl = _mm512_set1_epi32(c * h * w + ky * w + kx);
                    __m512 v0 = _mm512_mask_i32gather_ps(z, (__mmask16)mk,
                                                         _mm512_add_epi32(o0, dl), x, 4);
                    __m512 v1 = _mm512_mask_i32gather_ps(z, (__mmask16)(mk >> 16),
                                                         _mm512_add_epi32(o1, dl), x, 4);
                    _mm512_store_ps(d, v0);
                    _mm512_store_ps(d + 16, v1);
                }
    }
}

#define FMA2(i)                                                                                    \
    do {                                                                                           \
        __m512 av = _mm512_set1_ps(a[i]);                                                          \
        c##i##0 = _mm512_fmadd_ps(av, b0, c##i##0);                                                \
        c##i##1 = _mm512_fmadd_ps(av, b1, c##i##1);                                                \
    } while (0)

/* rows [m0, m0+mr) x columns [n0, n0+nr) from panels a (k x MR) and b (k x NR) */
TGT static void tile(int k, const float *a, const float *b, const nn_gemm_out *o, int m0, int mr,
                     int n0, int nr) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00,
           c61 = c00, c70 = c00, c71 = c00;
    for (int i = 0; i < k; i++, a += MR, b += NR) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        FMA2(0);
        FMA2(1);
        FMA2(2);
        FMA2(3);
        FMA2(4);
        FMA2(5);
        FMA2(6);
        FMA2(7);
    }
    __m512 acc[2 * MR] = {c00, c01, c10, c11, c20, c21, c30, c31,
                          c40, c41, c50, c51, c60, c61, c70, c71};
    int q0 = n0 % o->cols;
    if (q0 + nr <= o->cols) { /* one image's row: store from the registers */
        __mmask16 k0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
        __mmask16 k1 = nr >= 32 ? 0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
        const __m512 z = _mm512_setzero_ps();
        float *base = o->c + (size_t)(n0 / o->cols) * o->cstride + q0;
        for (int r = 0; r < mr; r++) {
            __m512 v0 = acc[2 * r], v1 = acc[2 * r + 1];
            if (o->bias) {
                __m512 bv = _mm512_set1_ps(o->bias[m0 + r]);
                v0 = _mm512_add_ps(v0, bv);
                v1 = _mm512_add_ps(v1, bv);
            }
            if (o->relu) {
                v0 = _mm512_max_ps(v0, z);
                v1 = _mm512_max_ps(v1, z);
            }
            float *d = base + (size_t)(m0 + r) * o->cols;
            _mm512_mask_storeu_ps(d, k0, v0);
            _mm512_mask_storeu_ps(d + 16, k1, v1);
        }
    } else { /* the tile spans two images */
        float v[NR];
        for (int r = 0; r < mr; r++) {
            _mm512_storeu_ps(v, acc[2 * r]);
            _mm512_storeu_ps(v + 16, acc[2 * r + 1]);
            store_row(o, m0 + r, n0, nr, v);
        }
    }
}

#else /* not x86-64: never chosen (nn_gemm_avail is 0); plain C for completeness */

int nn_gemm_avail(void) { return 0; }

void nn_gemm_pack_conv(const float *x, size_t xper, int nimg, int cin, int h, int w, int k, int s,
                       int p, int ho, int wo, float *bp, int p0, int p1) {
    int hwo = ho * wo, n = nimg * hwo, K = cin * k * k;
    for (int pn = p0; pn < p1; pn++)
        for (int jj = 0; jj < NR; jj++) {
            int j = pn * NR + jj, img = j / hwo, q = j % hwo;
            int iy0 = q / wo * s - p, ix0 = q % wo * s - p;
            for (int r = 0; r < K; r++) {
                int c = r / (k * k), ky = r / k % k, kx = r % k;
                int iy = iy0 + ky, ix = ix0 + kx;
                bp[((size_t)pn * K + r) * NR + jj] =
                    j < n && iy >= 0 && iy < h && ix >= 0 && ix < w
                        ? x[img * xper + ((size_t)c * h + iy) * w + ix]
                        : 0.0f;
            }
        }
}

static void tile(int k, const float *a, const float *b, const nn_gemm_out *o, int m0, int mr,
                 int n0, int nr) {
    for (int r = 0; r < mr; r++) {
        float v[NR] = {0};
        for (int i = 0; i < k; i++)
            for (int j = 0; j < NR; j++) v[j] += a[i * MR + r] * b[i * NR + j];
        store_row(o, m0 + r, n0, nr, v);
    }
}
#endif

void nn_gemm_packed(int m, int n, int k, const float *ap, const float *bp, const nn_gemm_out *o,
                    int t, int T) {
    int MP = (m + MR - 1) / MR, NP = (n + NR - 1) / NR;
    long tot = (long)MP * NP, lo = tot * t / T, hi = tot * (t + 1) / T;
    /* few column panels: each weight panel meets all of them while it is
     * in cache; else each column panel meets all the weights */
    int mmajor = NP <= 4;
    for (long id = lo; id < hi; id++) {
        int mp = mmajor ? (int)(id / NP) : (int)(id % MP);
        int np = mmajor ? (int)(id % NP) : (int)(id / MP);
        int m0 = mp * MR, n0 = np * NR;
        tile(k, ap + (size_t)m0 * k, bp + (size_t)np * NR * k, o, m0, m - m0 < MR ? m - m0 : MR,
             n0, n - n0 < NR ? n - n0 : NR);
    }
}
