/* gemm.c: our own packed matrix product for convolutions; see gemm.h.
 *
 * The micro-kernel keeps an 8 x 32 tile of C in 16 AVX-512 registers (8 x
 * 16 in 8 for narrow products) and runs the whole inner dimension: each
 * step loads a row of the B panel and broadcasts eight weights. The panels
 * are laid out in the order the kernel reads them, so every load is
 * sequential. */
#include "gemm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MR NN_GEMM_MR
#define NR NN_GEMM_NR

size_t nn_gemm_apack_n(int m, int k) { return (size_t)((m + MR - 1) / MR) * MR * k; }

/* 16 columns when that pads at least a quarter less than 32 would (7x7
 * outputs of one image: 16 Winograd tiles, not 32) */
int nn_gemm_nr(int n) {
    int p16 = (n + 15) / 16 * 16, p32 = (n + 31) / 32 * 32;
    return 4 * p16 <= 3 * p32 ? 16 : 32;
}
int nn_gemm_npanels(int n) { return (n + nn_gemm_nr(n) - 1) / nn_gemm_nr(n); }
size_t nn_gemm_bpack_n(int k, int n) { return (size_t)nn_gemm_npanels(n) * nn_gemm_nr(n) * k; }

void nn_gemm_pack_a(const float *a, int lda, int m, int k, float *ap) {
    nn_gemm_pack_a_cols(a, lda, m, k, k, 0, ap);
}

/* one finished tile row: bias, ReLU, store (v holds NR values, nr valid),
 * a run of columns in one image at a time */
static inline void store_row(const nn_gemm_out *o, int r, int n0, int nr, const float *v) {
    float b = o->bias ? o->bias[r] : 0.0f;
    for (int j = n0; j < n0 + nr;) {
        int q = j % o->cols, len = o->cols - q < n0 + nr - j ? o->cols - q : n0 + nr - j;
        float *d = o->c + (size_t)(j / o->cols) * o->cstride + (size_t)r * o->cols + q;
        const float *sv = v + (j - n0);
        for (int i = 0; i < len; i++) {
            float t = sv[i] + b + (o->acc ? d[i] : 0.0f);
            d[i] = o->relu && !(t > 0) ? 0 : t;
        }
        j += len;
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

int nn_gemm_phases_ok(int h, int w, int s, int ho, int wo) {
    return s == 2 && h % 2 == 0 && w % 2 == 0 && ho == h / 2 && wo == w / 2;
}

TGT void nn_gemm_phase_split(const float *x, size_t xper, int nimg, int cin, int h, int w,
                             float *ph, int c0, int c1) {
    (void)cin; /* [c0, c1) says which */
    const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    size_t q = (size_t)(h / 2) * (w / 2); /* a plane */
    for (int i = 0; i < nimg; i++)
        for (int c = c0; c < c1; c++) {
            const float *xc = x + xper * i + (size_t)c * h * w;
            float *pc = ph + xper * i + (size_t)c * 4 * q;
            for (int r = 0; r < h; r++) {
                float *e = pc + (size_t)(r & 1) * 2 * q + (size_t)(r >> 1) * (w / 2), *o = e + q;
                const float *xr = xc + (size_t)r * w;
                for (int j = 0; j < w; j += 32) {
                    int nl = w - j < 32 ? w - j : 32; /* values; half to each plane */
                    uint32_t m = nl >= 32 ? ~0u : (1u << nl) - 1;
                    __m512 v0 = _mm512_maskz_loadu_ps((__mmask16)m, xr + j);
                    __m512 v1 = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), xr + j + 16);
                    __mmask16 k = (__mmask16)((1u << (nl / 2)) - 1);
                    _mm512_mask_storeu_ps(e + j / 2, k, _mm512_permutex2var_ps(v0, ev, v1));
                    _mm512_mask_storeu_ps(o + j / 2, k, _mm512_permutex2var_ps(v0, od, v1));
                }
            }
        }
}

/* the 32 lanes of (v0, v1) in [0, lim), as bits */
TGT static inline uint32_t in_range(__m512i v0, __m512i v1, __m512i lim) {
    const __m512i z = _mm512_setzero_si512();
    return (uint32_t)(_mm512_cmpge_epi32_mask(v0, z) & _mm512_cmplt_epi32_mask(v0, lim)) |
           (uint32_t)(_mm512_cmpge_epi32_mask(v1, z) & _mm512_cmplt_epi32_mask(v1, lim)) << 16;
}

TGT void nn_gemm_pack_conv(const float *x, const float *ph, size_t xper, int nimg, int cin, int h,
                           int w, int k, int s, int p, int ho, int wo, float *bp, int p0, int p1) {
    int hwo = ho * wo, n = nimg * hwo, kk = k * k, K = cin * kk, W = nn_gemm_nr(n);
    int32_t off[NR], iy[NR], ix[NR];
    uint32_t mask[64], rowok[8], colok[8];
    for (int pn = p0; pn < p1; pn++) {
        /* each column's image and top-left input pixel, stepping along the
         * output rows from the panel's first column (no division a column) */
        int j = pn * W, img = j / hwo, oy = j % hwo / wo, ox = j % hwo % wo;
        for (int jj = 0; jj < NR; jj++, j++) {
            if (jj < W && j < n) {
                iy[jj] = oy * s - p;
                ix[jj] = ox * s - p;
                off[jj] = (int32_t)((size_t)img * xper + (ptrdiff_t)iy[jj] * w + ix[jj]);
            } else { /* past the last column: no tap is inside */
                iy[jj] = ix[jj] = -(1 << 20);
                off[jj] = 0;
            }
            if (++ox == wo) {
                ox = 0;
                if (++oy == ho) oy = 0, img++;
            }
        }
        /* tap (ky, kx) reads inside the image for the columns in both the
         * row mask of ky and the column mask of kx */
        __m512i iy0 = _mm512_loadu_si512(iy), iy1 = _mm512_loadu_si512(iy + 16);
        __m512i ix0 = _mm512_loadu_si512(ix), ix1 = _mm512_loadu_si512(ix + 16);
        __m512i hv = _mm512_set1_epi32(h), wv = _mm512_set1_epi32(w);
        for (int t = 0; t < k; t++) {
            __m512i tv = _mm512_set1_epi32(t);
            rowok[t] = in_range(_mm512_add_epi32(iy0, tv), _mm512_add_epi32(iy1, tv), hv);
            colok[t] = in_range(_mm512_add_epi32(ix0, tv), _mm512_add_epi32(ix1, tv), wv);
        }
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) mask[ky * k + kx] = rowok[ky] & colok[kx];
        float *d = bp + (size_t)pn * K * W;
        int j0 = pn * W;
        int jl = (j0 + W < n ? j0 + W : n) - 1; /* the panel's last real column */
        /* Where the output grid is the input's (stride 1, "same" padding)
         * or that of x's parity planes (stride 2, even size), a panel row
         * is consecutive values of one plane, shifted by the tap, less the
         * ones the mask says fall outside: a masked load for each image
         * the panel's columns are in. Stride-2 tap (ky, kx) reads plane
         * ((ky - p) mod 2, (kx - p) mod 2), floor((ky - p) / 2) rows and
         * floor((kx - p) / 2) columns off. */
        const float *src = s == 1 && ho == h && wo == w ? x : ph;
        const float *sb[8];
        uint32_t sm[8];
        int ns = 0;
        for (int L = 0, jj = j0; src && L < W && jj <= jl; ns++) {
            int q = jj % hwo, len = hwo - q < jl + 1 - jj ? hwo - q : jl + 1 - jj;
            if (len > W - L) len = W - L;
            if (ns == 8) { /* tiny images: many to a panel */
                src = NULL;
                break;
            }
            sb[ns] = src + (size_t)(jj / hwo) * xper + q - L; /* lane L reads sb + L */
            sm[ns] = (len >= 32 ? ~0u : (1u << len) - 1) << L;
            L += len;
            jj += len;
        }
        if (src) {
            int npc = src == x ? 1 : 4;
            const __m512 z = _mm512_setzero_ps();
            for (int c = 0; c < cin; c++)
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++, d += W) {
                        int py = npc == 4 ? (ky - p) & 1 : 0, px = npc == 4 ? (kx - p) & 1 : 0;
                        int dy = (ky - p - py) / (npc == 4 ? 2 : 1);
                        int dx = (kx - p - px) / (npc == 4 ? 2 : 1);
                        ptrdiff_t to = (ptrdiff_t)(c * npc + py * 2 + px) * hwo + dy * wo + dx;
                        uint32_t mk = mask[ky * k + kx];
                        __m512 v0 = z, v1 = z;
                        for (int g = 0; g < ns; g++) {
                            uint32_t m = mk & sm[g];
                            v0 = _mm512_mask_loadu_ps(v0, (__mmask16)m, sb[g] + to);
                            if (W == 32)
                                v1 = _mm512_mask_loadu_ps(v1, (__mmask16)(m >> 16), sb[g] + to + 16);
                        }
                        _mm512_store_ps(d, v0);
                        if (W == 32) _mm512_store_ps(d + 16, v1);
                    }
            continue;
        }
        __m512i o0 = _mm512_loadu_si512(off), o1 = _mm512_loadu_si512(off + 16);
        const __m512 z = _mm512_setzero_ps();
        for (int c = 0; c < cin; c++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++, d += W) {
                    uint32_t mk = mask[ky * k + kx];
                    __m512i dl = _mm512_set1_epi32(c * h * w + ky * w + kx);
                    _mm512_store_ps(d, _mm512_mask_i32gather_ps(z, (__mmask16)mk,
                                                                _mm512_add_epi32(o0, dl), x, 4));
                    if (W == 32)
                        _mm512_store_ps(d + 16,
                                        _mm512_mask_i32gather_ps(z, (__mmask16)(mk >> 16),
                                                                 _mm512_add_epi32(o1, dl), x, 4));
                }
    }
}

/* r[l] (row l of a 16 x 16 block) becomes column l: 32-bit and 64-bit
 * unpacks within 128-bit lanes, then two rounds of lane shuffles */
TGT static inline void tr16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) /* u[i + q]: rows i..i+3 of column 4L + q, lane L */
        for (int h = 0; h < 2; h++) {
            __m512d a = _mm512_castps_pd(t[i + h]), b = _mm512_castps_pd(t[i + h + 2]);
            u[i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            u[i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    for (int q = 0; q < 4; q++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[q], u[4 + q], 0x88);
        __m512 v1 = _mm512_shuffle_f32x4(u[q], u[4 + q], 0xdd);
        __m512 w0 = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0x88);
        __m512 w1 = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0xdd);
        r[q] = _mm512_shuffle_f32x4(v0, w0, 0x88);
        r[8 + q] = _mm512_shuffle_f32x4(v0, w0, 0xdd);
        r[4 + q] = _mm512_shuffle_f32x4(v1, w1, 0x88);
        r[12 + q] = _mm512_shuffle_f32x4(v1, w1, 0xdd);
    }
}

/* rows [0, nrows) of a 16 x 16 block (row l at src + l*ld, ni columns
 * under km; missing rows zero), transposed: r[l] is column l */
TGT static inline void load_tr16(const float *src, size_t ld, int nrows, __mmask16 km,
                                 __m512 r[16]) {
    for (int l = 0; l < 16; l++)
        r[l] = l < nrows ? _mm512_maskz_loadu_ps(km, src + (size_t)l * ld) : _mm512_setzero_ps();
    tr16(r);
}

TGT void nn_gemm_pack_bt(const float *bt, int ldb, int k, int n, float *bp) {
    int W = nn_gemm_nr(n), NP = (n + W - 1) / W;
    for (int pn = 0; pn < NP; pn++)
        for (int h = 0; h < W; h += 16) { /* 16 of the panel's columns: rows of bt */
            int j0 = pn * W + h, nj = n - j0;
            float *d = bp + (size_t)pn * W * k + h;
            for (int i0 = 0; i0 < k; i0 += 16) {
                int ni = k - i0 < 16 ? k - i0 : 16;
                __mmask16 km = (__mmask16)((1u << ni) - 1);
                __m512 r[16];
                load_tr16(nj > 0 ? bt + (size_t)j0 * ldb + i0 : bt, (size_t)ldb, nj, km, r);
                for (int l = 0; l < ni; l++) _mm512_store_ps(d + (size_t)(i0 + l) * W, r[l]);
            }
        }
}

/* A's panels from its rows: 16 rows (two panels) by 16 columns at a time,
 * transposed in registers so each column's 8 values of a panel are one store */
TGT void nn_gemm_pack_a_cols(const float *a, int lda, int m, int k, int ktot, int k0, float *ap) {
    for (int m0 = 0; m0 < m; m0 += 16) {
        int mr = m - m0 < 16 ? m - m0 : 16, two = mr > MR;
        float *d0 = ap + (size_t)m0 * ktot + (size_t)k0 * MR, *d1 = d0 + (size_t)MR * ktot;
        for (int i0 = 0; i0 < k; i0 += 16) {
            int ni = k - i0 < 16 ? k - i0 : 16;
            __mmask16 km = (__mmask16)((1u << ni) - 1);
            __m512 r[16];
            load_tr16(a + (size_t)m0 * lda + i0, (size_t)lda, mr, km, r);
            for (int l = 0; l < ni; l++) {
                __m512d v = _mm512_castps_pd(r[l]);
                _mm256_storeu_pd((double *)(d0 + (size_t)(i0 + l) * MR), _mm512_castpd512_pd256(v));
                if (two)
                    _mm256_storeu_pd((double *)(d1 + (size_t)(i0 + l) * MR),
                                     _mm512_extractf64x4_pd(v, 1));
            }
        }
    }
}

/* rows [m0, m0+mr) x columns [n0, n0+nr) from panels a (k x MR) and b
 * (k x 16V): the tile in 8 x V registers; V is 1 or 2, a constant after
 * inlining, so each width gets its own straight-line loop */
TGT static inline __attribute__((always_inline)) void tile_v(int k, const float *a, const float *b,
                                                             const nn_gemm_out *o, int m0, int mr,
                                                             int n0, int nr, const int V) {
    __m512 acc[MR][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int i = 0; i < k; i++, a += MR, b += 16 * V) {
        __m512 b0 = _mm512_load_ps(b), b1 = V == 2 ? _mm512_load_ps(b + 16) : b0;
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            __m512 av = _mm512_set1_ps(a[r]);
            acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
            if (V == 2) acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
        }
    }
    int q0 = n0 % o->cols;
    if (q0 + nr <= o->cols) { /* one image's row: store from the registers */
        __mmask16 k0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
        __mmask16 k1 = nr >= 32 ? 0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
        const __m512 z = _mm512_setzero_ps();
        float *base = o->c + (size_t)(n0 / o->cols) * o->cstride + q0;
        for (int r = 0; r < mr; r++) {
            __m512 v0 = acc[r][0], v1 = acc[r][1];
            float *d = base + (size_t)(m0 + r) * o->cols;
            if (o->acc) {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(k0, d));
                if (V == 2) v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(k1, d + 16));
            }
            if (o->bias) {
                __m512 bv = _mm512_set1_ps(o->bias[m0 + r]);
                v0 = _mm512_add_ps(v0, bv);
                v1 = _mm512_add_ps(v1, bv);
            }
            if (o->relu) {
                v0 = _mm512_max_ps(v0, z);
                v1 = _mm512_max_ps(v1, z);
            }
            _mm512_mask_storeu_ps(d, k0, v0);
            if (V == 2) _mm512_mask_storeu_ps(d + 16, k1, v1);
        }
    } else { /* the tile spans images */
        float v[NR];
        for (int r = 0; r < mr; r++) {
            _mm512_storeu_ps(v, acc[r][0]);
            if (V == 2) _mm512_storeu_ps(v + 16, acc[r][1]);
            store_row(o, m0 + r, n0, nr, v);
        }
    }
}

TGT static void tile(int k, const float *a, const float *b, const nn_gemm_out *o, int m0, int mr,
                     int n0, int nr, int W) {
    if (W == 32) tile_v(k, a, b, o, m0, mr, n0, nr, 2);
    else tile_v(k, a, b, o, m0, mr, n0, nr, 1);
}

#else /* not x86-64: never chosen (nn_gemm_avail is 0); plain C for completeness */

int nn_gemm_avail(void) { return 0; }

int nn_gemm_phases_ok(int h, int w, int s, int ho, int wo) {
    (void)h, (void)w, (void)s, (void)ho, (void)wo;
    return 0;
}

void nn_gemm_phase_split(const float *x, size_t xper, int nimg, int cin, int h, int w, float *ph,
                         int c0, int c1) {
    (void)x, (void)xper, (void)nimg, (void)cin, (void)h, (void)w, (void)ph, (void)c0, (void)c1;
}

void nn_gemm_pack_conv(const float *x, const float *ph, size_t xper, int nimg, int cin, int h,
                       int w, int k, int s, int p, int ho, int wo, float *bp, int p0, int p1) {
    (void)ph;
    int hwo = ho * wo, n = nimg * hwo, K = cin * k * k, W = nn_gemm_nr(n);
    for (int pn = p0; pn < p1; pn++)
        for (int jj = 0; jj < W; jj++) {
            int j = pn * W + jj, img = j / hwo, q = j % hwo;
            int iy0 = q / wo * s - p, ix0 = q % wo * s - p;
            for (int r = 0; r < K; r++) {
                int c = r / (k * k), ky = r / k % k, kx = r % k;
                int iy = iy0 + ky, ix = ix0 + kx;
                bp[((size_t)pn * K + r) * W + jj] =
                    j < n && iy >= 0 && iy < h && ix >= 0 && ix < w
                        ? x[img * xper + ((size_t)c * h + iy) * w + ix]
                        : 0.0f;
            }
        }
}

void nn_gemm_pack_a_cols(const float *a, int lda, int m, int k, int ktot, int k0, float *ap) {
    for (int m0 = 0; m0 < m; m0 += MR) {
        float *d = ap + (size_t)m0 * ktot + (size_t)k0 * MR;
        int mr = m - m0 < MR ? m - m0 : MR;
        for (int i = 0; i < k; i++, d += MR) {
            for (int r = 0; r < mr; r++) d[r] = a[(size_t)(m0 + r) * lda + i];
            for (int r = mr; r < MR; r++) d[r] = 0;
        }
    }
}

void nn_gemm_pack_bt(const float *bt, int ldb, int k, int n, float *bp) {
    int W = nn_gemm_nr(n), NP = (n + W - 1) / W;
    for (int pn = 0; pn < NP; pn++)
        for (int i = 0; i < k; i++)
            for (int jj = 0; jj < W; jj++) {
                int j = pn * W + jj;
                bp[((size_t)pn * k + i) * W + jj] = j < n ? bt[(size_t)j * ldb + i] : 0.0f;
            }
}

static void tile(int k, const float *a, const float *b, const nn_gemm_out *o, int m0, int mr,
                 int n0, int nr, int W) {
    for (int r = 0; r < mr; r++) {
        float v[NR] = {0};
        for (int i = 0; i < k; i++)
            for (int j = 0; j < W; j++) v[j] += a[i * MR + r] * b[i * W + j];
        store_row(o, m0 + r, n0, nr, v);
    }
}
#endif

void nn_gemm_packed(int m, int n, int k, const float *ap, const float *bp, const nn_gemm_out *o,
                    int t, int T) {
    int MP = (m + MR - 1) / MR, W = nn_gemm_nr(n), NP = (n + W - 1) / W;
    long tot = (long)MP * NP, lo = tot * t / T, hi = tot * (t + 1) / T;
    /* few column panels: each weight panel meets all of them while it is
     * in cache; else each column panel meets all the weights */
    int mmajor = NP <= 4;
    for (long id = lo; id < hi; id++) {
        int mp = mmajor ? (int)(id / NP) : (int)(id % MP);
        int np = mmajor ? (int)(id % NP) : (int)(id / MP);
        int m0 = mp * MR, n0 = np * W;
        tile(k, ap + (size_t)m0 * k, bp + (size_t)np * W * k, o, m0, m - m0 < MR ? m - m0 : MR,
             n0, n - n0 < W ? n - n0 : W, W);
    }
}
