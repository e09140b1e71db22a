/* winograd.c: 3x3 stride-1 pad-1 convolutions as Winograd F(2x2, 3x3):
 * each 2x2 output tile costs 16 multiplies instead of 36. Weights and input
 * tiles are transformed (U = G g G^T, V = B^T d B), the 16 elementwise
 * products become 16 matrix products over channels (sgemm), and A^T M A
 * gives the outputs. The gradient of the input is the same convolution with
 * the kernel flipped and its channels swapped, so it runs here too. The
 * products run on gemm.h's packed kernel where the CPU has it (U and V are
 * then laid out as its panels), else on OpenBLAS. */
#include <cblas.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "winograd.h"

size_t nn_wino_u_n(int cout, int cin, int packed) {
    return 16 * (packed ? nn_gemm_apack_n(cout, cin) : (size_t)cout * cin);
}

size_t nn_wino_v_n(int c, long P) { return 16 * nn_gemm_bpack_n(c, (int)P); }

void nn_wino_weights(const float *w, int cout, int cin, int for_dx, int packed, float *U) {
    /* for_dx: kernel k'[c][o][y][x] = k[o][c][2-y][2-x]; U is [16][cout'][cin'] */
    int co = for_dx ? cin : cout, ci = for_dx ? cout : cin;
    size_t us = packed ? nn_gemm_apack_n(co, ci) : (size_t)co * ci; /* from one xi to the next */
    if (packed && co % NN_GEMM_MR) memset(U, 0, sizeof(float) * 16 * us);
#pragma omp parallel for schedule(static) if ((long)cout * cin > 4096)
    for (int o = 0; o < co; o++)
        for (int c = 0; c < ci; c++) {
            float g[3][3], t[4][3];
            for (int y = 0; y < 3; y++)
                for (int x = 0; x < 3; x++)
                    g[y][x] = for_dx ? w[(((size_t)c * cin + o) * 3 + (2 - y)) * 3 + (2 - x)]
                                     : w[(((size_t)o * cin + c) * 3 + y) * 3 + x];
            for (int x = 0; x < 3; x++) { /* G g */
                t[0][x] = g[0][x];
                t[1][x] = 0.5f * (g[0][x] + g[1][x] + g[2][x]);
                t[2][x] = 0.5f * (g[0][x] - g[1][x] + g[2][x]);
                t[3][x] = g[2][x];
            }
            for (int y = 0; y < 4; y++) { /* (G g) G^T */
                float u[4] = {t[y][0], 0.5f * (t[y][0] + t[y][1] + t[y][2]),
                              0.5f * (t[y][0] - t[y][1] + t[y][2]), t[y][2]};
                /* packed: gemm.h's panels of MR rows, each ci x MR */
                size_t at = packed ? (size_t)(o / NN_GEMM_MR) * NN_GEMM_MR * ci +
                                         (size_t)c * NN_GEMM_MR + o % NN_GEMM_MR
                                   : (size_t)o * ci + c;
                for (int x = 0; x < 4; x++) U[(size_t)(y * 4 + x) * us + at] = u[x];
            }
        }
}

/* small images (a tile row under 16 tiles, 256 tiles in all) go through
 * gathers from a zero-padded copy of the whole channel, 16 tiles a step
 * across tile rows; larger ones a tile row at a time */
#define SMALL_T 256
static int small_img(int h, int w) {
    int th = (h + 1) / 2, tw = (w + 1) / 2;
    return tw < 16 && th * tw <= SMALL_T;
}

size_t nn_wino_rows_n(int h, int w) {
    int tw = (w + 1) / 2;
    size_t rows = 4 * ((size_t)2 * ((tw + 15) / 16 * 16) + 36);
    size_t img = (size_t)(2 * ((h + 1) / 2) + 2) * (2 * tw + 2) + 16; /* + a vector read past */
    return small_img(h, w) && img > rows ? img : rows;
}

/* How each group of 16 tiles of a small image is put together. Where a
 * padded row fits one vector (pw <= 16) and the group's tiles lie in at
 * most four tile rows t0..t0+3, input row 2 (t0 + s) + a of tile-row slot
 * s is one vector S[s], and a tile's pixel (a, b) is lane 2 tx + b of its
 * slot's vector: two two-source permutes (slots 0-1, 2-3) and a blend
 * make d[a][b] for all 16 tiles. Else a gather a pixel, from off[]. */
typedef struct {
    int off[SMALL_T];             /* tile p's top-left in the padded image */
    int i01[SMALL_T], i23[SMALL_T]; /* per group, per lane: the permutes' indices for b = 0 */
    uint16_t k23[SMALL_T / 16];   /* lanes from slots 2 and 3 */
    int16_t t0[SMALL_T / 16];     /* the group's first tile row, or -1: gather */
    /* outputs, where t0 >= 0: output column j of slot s's two rows is lane
     * oidx[j] of the even (< 16) or odd (>= 16) results; omask: the columns
     * this group's tiles make */
    int oidx[SMALL_T / 16][4][16];
    uint16_t omask[SMALL_T / 16][4];
} small_plan;

static inline void small_plan_make(small_plan *sp, int tw, int T, int pw, int w) {
    for (int p = 0; p < T; p++) sp->off[p] = 2 * (p / tw) * pw + 2 * (p % tw);
    for (int g = 0; g < T; g += 16) {
        int t0 = g / tw, ok = pw <= 16;
        sp->k23[g / 16] = 0;
        for (int l = 0; l < 16; l++) {
            int p = g + l < T ? g + l : g, slot = p / tw - t0, tx = p % tw;
            if (slot > 3) ok = 0;
            sp->i01[g + l] = (slot == 1 ? 16 : 0) + 2 * tx;
            sp->i23[g + l] = (slot == 3 ? 16 : 0) + 2 * tx;
            if (slot >= 2) sp->k23[g / 16] |= (uint16_t)(1u << l);
        }
        sp->t0[g / 16] = (int16_t)(ok ? t0 : -1);
        for (int q = 0; q < 4; q++) {
            sp->omask[g / 16][q] = 0;
            for (int j = 0; j < 16; j++) {
                int tx = j / 2, lane = (t0 + q) * tw + tx - g;
                int in = j < w && tx < tw && lane >= 0 && lane < 16 && g + lane < T;
                sp->oidx[g / 16][q][j] = (j & 1 ? 16 : 0) + (in ? lane : 0);
                if (in) sp->omask[g / 16][q] |= (uint16_t)(1u << j);
            }
        }
    }
}

#if defined(__x86_64__)
#include <immintrin.h>
#define TGT __attribute__((target("avx512f")))

/* store lanes [0, nl) of v as V's columns pp.. of row c (packed panels),
 * splitting where the columns cross into the next panel */
TGT static inline void v_store(float *V, int W, int cin, long pp, int c, __m512 v, int nl) {
    int q = (int)(pp % W), n1 = W - q < nl ? W - q : nl;
    float *d = V + (size_t)(pp / W) * cin * W + (size_t)c * W + q;
    _mm512_mask_storeu_ps(d, (__mmask16)((1u << n1) - 1), v);
    if (n1 < nl) {
        __mmask16 hi = (__mmask16)(((1u << nl) - 1) & ~((1u << n1) - 1));
        _mm512_mask_storeu_ps(V + (size_t)(pp / W + 1) * cin * W + (size_t)c * W,
                              (__mmask16)((1u << (nl - n1)) - 1), _mm512_maskz_compress_ps(hi, v));
    }
}

/* B^T d B of 16 tiles (d[a][b]: their input pixel (a, b) each), into V's
 * columns pp.. of row c of the 16 matrices */
TGT static inline void in_tiles(__m512 d[4][4], float *V, size_t st, int W, int cin, int c, long pp,
                                int nl) {
    for (int b = 0; b < 4; b++) { /* B^T d, in place: rows */
        __m512 t0 = _mm512_sub_ps(d[0][b], d[2][b]), t1 = _mm512_add_ps(d[1][b], d[2][b]);
        __m512 t2 = _mm512_sub_ps(d[2][b], d[1][b]), t3 = _mm512_sub_ps(d[1][b], d[3][b]);
        d[0][b] = t0, d[1][b] = t1, d[2][b] = t2, d[3][b] = t3;
    }
    for (int a = 0; a < 4; a++) { /* (B^T d) B: columns */
        float *Va = V + (size_t)(4 * a) * st;
        v_store(Va, W, cin, pp, c, _mm512_sub_ps(d[a][0], d[a][2]), nl);
        v_store(Va + st, W, cin, pp, c, _mm512_add_ps(d[a][1], d[a][2]), nl);
        v_store(Va + 2 * st, W, cin, pp, c, _mm512_sub_ps(d[a][2], d[a][1]), nl);
        v_store(Va + 3 * st, W, cin, pp, c, _mm512_sub_ps(d[a][1], d[a][3]), nl);
    }
}

/* B^T d B for the tiles of one tile row of one channel, 16 tiles a step:
 * r0..r3 the four padded input rows, tiles p0.. in V */
TGT static void wino_in_row(const float *r0, int pwr, int tw, float *V, size_t st, int W, int cin,
                            int c, long p0) {
    const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    for (int tx = 0; tx < tw; tx += 16) {
        int nl = tw - tx < 16 ? tw - tx : 16;
        __m512 d[4][4];
        for (int a = 0; a < 4; a++) {
            const float *r = r0 + (size_t)a * pwr + 2 * tx;
            __m512 v0 = _mm512_loadu_ps(r), v1 = _mm512_loadu_ps(r + 16);
            __m512 v2 = _mm512_loadu_ps(r + 2), v3 = _mm512_loadu_ps(r + 18);
            d[a][0] = _mm512_permutex2var_ps(v0, ev, v1);
            d[a][1] = _mm512_permutex2var_ps(v0, od, v1);
            d[a][2] = _mm512_permutex2var_ps(v2, ev, v3);
            d[a][3] = _mm512_permutex2var_ps(v2, od, v3);
        }
        in_tiles(d, V, st, W, cin, c, p0 + tx, nl);
    }
}


/* the same for a small image: xc (h x w) copied into pad, (2 th + 2) x pw
 * with zero borders (kept zero: only the inside is written), then the
 * tiles taken from it 16 at a time as sp says */
TGT static void wino_in_small(const float *xc, int h, int w, float *pad, int pw,
                              const small_plan *sp, int th, int T, float *V, size_t st, int W,
                              int cin, int c, long p0) {
    for (int yy = 0; yy < h; yy++)
        memcpy(pad + (size_t)(yy + 1) * pw + 1, xc + (size_t)yy * w, sizeof(float) * w);
    const __m512 z = _mm512_setzero_ps();
    for (int g = 0; g < T; g += 16) {
        int nl = T - g < 16 ? T - g : 16, t0 = sp->t0[g / 16];
        __mmask16 k = (__mmask16)((1u << nl) - 1);
        __m512 d[4][4];
        if (t0 >= 0) {
            __m512i i01 = _mm512_loadu_si512(sp->i01 + g), i23 = _mm512_loadu_si512(sp->i23 + g);
            __mmask16 k23 = sp->k23[g / 16];
            for (int a = 0; a < 4; a++) {
                __m512 S[4];
                for (int q = 0; q < 4; q++) { /* rows past the image's feed no lane */
                    int r = 2 * (t0 + q) + a, last = 2 * th + 1;
                    S[q] = _mm512_loadu_ps(pad + (size_t)(r < last ? r : last) * pw);
                }
                for (int b = 0; b < 4; b++) {
                    __m512i bv = _mm512_set1_epi32(b);
                    __m512 lo = _mm512_permutex2var_ps(S[0], _mm512_add_epi32(i01, bv), S[1]);
                    __m512 hi = _mm512_permutex2var_ps(S[2], _mm512_add_epi32(i23, bv), S[3]);
                    d[a][b] = _mm512_mask_blend_ps(k23, lo, hi);
                }
            }
        } else {
            __m512i base = _mm512_maskz_loadu_epi32(k, sp->off + g);
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++)
                    d[a][b] = _mm512_mask_i32gather_ps(
                        z, k, _mm512_add_epi32(base, _mm512_set1_epi32(a * pw + b)), pad, 4);
        }
        in_tiles(d, V, st, W, cin, c, p0 + g, nl);
    }
}

/* the 16 products' values of 16 tiles (masked to k), from column off of M's
 * row for the channel (rows ms apart, one per product) */
TGT static inline void load_m(const float *M, size_t ms, long off, __mmask16 k, __m512 m[4][4]) {
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++)
            m[a][b] = _mm512_maskz_loadu_ps(k, M + (size_t)(a * 4 + b) * ms + off);
}

/* output row a (0 or 1) of 16 tiles' A^T m A: its even and odd columns */
TGT static inline void out_tiles(__m512 m[4][4], int a, __m512 *even, __m512 *odd) {
    __m512 t[4];
    for (int b = 0; b < 4; b++)
        t[b] = a == 0 ? _mm512_add_ps(_mm512_add_ps(m[0][b], m[1][b]), m[2][b])
                      : _mm512_sub_ps(_mm512_sub_ps(m[1][b], m[2][b]), m[3][b]);
    *even = _mm512_add_ps(_mm512_add_ps(t[0], t[1]), t[2]);
    *odd = _mm512_sub_ps(_mm512_sub_ps(t[1], t[2]), t[3]);
}

/* A^T m A for one tile row of one output channel, 16 tiles a step: m from
 * M (row o of each of the 16 products, tiles p0..), out to y rows yy, yy+1 */
TGT static void wino_out_row(const float *M, size_t ms, long p0, int tw, float *yrow, int w,
                             int nrows, int accumulate) {
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    for (int tx = 0; tx < tw; tx += 16) {
        int nl = tw - tx < 16 ? tw - tx : 16;
        __mmask16 k = (__mmask16)((1u << nl) - 1);
        __m512 m[4][4];
        load_m(M, ms, p0 + tx, k, m);
        int cnt = w - 2 * tx < 2 * nl ? w - 2 * tx : 2 * nl; /* outputs in the row */
        __mmask16 k0 = (__mmask16)(cnt >= 16 ? 0xFFFF : (1u << cnt) - 1);
        __mmask16 k1 = (__mmask16)(cnt >= 32 ? 0xFFFF : cnt > 16 ? (1u << (cnt - 16)) - 1 : 0);
        for (int a = 0; a < nrows; a++) {
            __m512 e, o;
            out_tiles(m, a, &e, &o);
            __m512 v0 = _mm512_permutex2var_ps(e, lo, o), v1 = _mm512_permutex2var_ps(e, hi, o);
            float *d = yrow + (size_t)a * w + 2 * tx;
            if (accumulate) {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(k0, d));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(k1, d + 16));
            }
            _mm512_mask_storeu_ps(d, k0, v0);
            _mm512_mask_storeu_ps(d + 16, k1, v1);
        }
    }
}

/* A^T m A for all the tiles of one output channel of a small image, 16
 * tiles a step across tile rows, into yo (h x w): a row run at a time as
 * sp says, or else scattered: tile p's top-left output is yo[oo[p]], its
 * right column and bottom row exist where bits p of cok and rok are set */
TGT static void wino_out_small(const float *M, size_t ms, long p0, int T, const int *oo,
                               const uint16_t *rok, const uint16_t *cok, const small_plan *sp,
                               float *yo, int h, int w, int accumulate) {
    for (int g = 0; g < T; g += 16) {
        int nl = T - g < 16 ? T - g : 16, t0 = sp->t0[g / 16];
        __mmask16 k = (__mmask16)((1u << nl) - 1);
        __m512 m[4][4];
        load_m(M, ms, p0 + g, k, m);
        __m512i base = _mm512_maskz_loadu_epi32(k, oo + g);
        __mmask16 rk = rok[g / 16], ck = cok[g / 16];
        for (int a = 0; a < 2; a++) {
            __m512 r0, r1; /* even and odd columns */
            out_tiles(m, a, &r0, &r1);
            if (t0 >= 0) { /* each output row's run: a permute of the two */
                for (int q = 0; q < 4; q++) {
                    int yy = 2 * (t0 + q) + a;
                    __mmask16 om = sp->omask[g / 16][q];
                    if (yy >= h || !om) continue;
                    __m512 v = _mm512_permutex2var_ps(
                        r0, _mm512_loadu_si512(sp->oidx[g / 16][q]), r1);
                    float *d = yo + (size_t)yy * w;
                    if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(om, d));
                    _mm512_mask_storeu_ps(d, om, v);
                }
                continue;
            }
            __mmask16 ka = a ? (__mmask16)(k & rk) : k;
            __m512i i0 = _mm512_add_epi32(base, _mm512_set1_epi32(a * w));
            __m512i i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(1));
            if (accumulate) {
                const __m512 z = _mm512_setzero_ps();
                r0 = _mm512_add_ps(r0, _mm512_mask_i32gather_ps(z, ka, i0, yo, 4));
                r1 = _mm512_add_ps(r1, _mm512_mask_i32gather_ps(z, (__mmask16)(ka & ck), i1, yo, 4));
            }
            _mm512_mask_i32scatter_ps(yo, ka, i0, r0, 4);
            _mm512_mask_i32scatter_ps(yo, (__mmask16)(ka & ck), i1, r1, 4);
        }
    }
}

/* Y[xi][o][p] = (A dy A^T)[xi] for the tiles of n images dy (cout x h x w,
 * yper floats apart): each channel copied into pad (2 th x 2 tw, its zero
 * border past an odd size kept zero), then 16 tiles a step, their four
 * values gathered from off[] */
TGT static void wino_dy(const float *dy, size_t yper, int h, int w, int n, int cout, float *Y,
                        float *pad, int *off) {
    int th = (h + 1) / 2, tw = (w + 1) / 2, T = th * tw, pw = 2 * tw;
    size_t P = (size_t)n * T, ys = (size_t)cout * P;
    memset(pad, 0, sizeof(float) * (size_t)2 * th * pw);
    for (int p = 0; p < T; p++) off[p] = 2 * (p / tw) * pw + 2 * (p % tw);
    const __m512 z = _mm512_setzero_ps();
    for (int i = 0; i < n; i++)
        for (int o = 0; o < cout; o++) {
            const float *dc = dy + yper * i + (size_t)o * h * w;
            for (int yy = 0; yy < h; yy++)
                memcpy(pad + (size_t)yy * pw, dc + (size_t)yy * w, sizeof(float) * w);
            float *yo = Y + (size_t)o * P + (size_t)i * T;
            for (int g = 0; g < T; g += 16) {
                int nl = T - g < 16 ? T - g : 16;
                __mmask16 k = (__mmask16)((1u << nl) - 1);
                __m512i b0 = _mm512_maskz_loadu_epi32(k, off + g);
                __m512i b1 = _mm512_add_epi32(b0, _mm512_set1_epi32(1));
                __m512i b2 = _mm512_add_epi32(b0, _mm512_set1_epi32(pw));
                __m512i b3 = _mm512_add_epi32(b2, _mm512_set1_epi32(1));
                __m512 a = _mm512_mask_i32gather_ps(z, k, b0, pad, 4);
                __m512 b = _mm512_mask_i32gather_ps(z, k, b1, pad, 4);
                __m512 c = _mm512_mask_i32gather_ps(z, k, b2, pad, 4);
                __m512 d = _mm512_mask_i32gather_ps(z, k, b3, pad, 4);
                /* A dy: rows (a b), (a+c b+d), (a-c b-d), (-c -d); then each
                 * row (u v) times A^T: u, u+v, u-v, -v */
                __m512 r[4][2] = {{a, b},
                                  {_mm512_add_ps(a, c), _mm512_add_ps(b, d)},
                                  {_mm512_sub_ps(a, c), _mm512_sub_ps(b, d)},
                                  {_mm512_sub_ps(z, c), _mm512_sub_ps(z, d)}};
                for (int q = 0; q < 4; q++) {
                    __m512 u = r[q][0], v = r[q][1];
                    float *dst = yo + g + (size_t)(4 * q) * ys;
                    _mm512_mask_storeu_ps(dst, k, u);
                    _mm512_mask_storeu_ps(dst + ys, k, _mm512_add_ps(u, v));
                    _mm512_mask_storeu_ps(dst + 2 * ys, k, _mm512_sub_ps(u, v));
                    _mm512_mask_storeu_ps(dst + 3 * ys, k, _mm512_sub_ps(z, v));
                }
            }
        }
}
#endif

/* V[xi][c][p] = (B^T d B)[xi] for the tiles of n images x (cin x h x w,
 * xper floats apart): V's rows in panels of W columns (W = P: plain rows),
 * st floats from one xi to the next. Four input rows at a time, copied
 * with their zero padding so the tile loop has no bounds. vec: on AVX-512;
 * sp: small images' plan (vec only), else NULL. */
static void wino_in(const float *x, size_t xper, int h, int w, int n, int cin, float *V, int W,
                    size_t st, int vec, const small_plan *sp, float *rows0, size_t rows_n,
                    int par) {
    int th = (h + 1) / 2, tw = (w + 1) / 2, T = th * tw;
    /* a padded row, and room for the vector loads past its end */
    int pwr = (int)(nn_wino_rows_n(h, w) / 4);
    (void)vec;
    (void)sp;
#pragma omp parallel if (par)
    {
        float *rows = rows0 + (par ? rows_n * (size_t)omp_get_thread_num() : 0);
        /* only [1, w] of a row (small images: [1, h] x [1, w]) is ever
         * written below: the padding around it stays zero, and so do the
         * lanes the vector loads read past it */
        memset(rows, 0, sizeof(float) * nn_wino_rows_n(h, w));
#pragma omp for collapse(2) schedule(static)
        for (int i = 0; i < n; i++)
            for (int c = 0; c < cin; c++) {
                const float *xc = x + xper * i + (size_t)c * h * w;
#if defined(__x86_64__)
                if (sp) {
                    wino_in_small(xc, h, w, rows, 2 * tw + 2, sp, th, T, V, st, W, cin, c,
                                  (long)i * T);
                    continue;
                }
#endif
                for (int ty = 0; ty < th; ty++) {
                    for (int a = 0; a < 4; a++) {
                        float *r = rows + (size_t)a * pwr;
                        int yy = 2 * ty - 1 + a;
                        if (yy >= 0 && yy < h) memcpy(r + 1, xc + (size_t)yy * w, sizeof(float) * (size_t)w);
                        else memset(r + 1, 0, sizeof(float) * (size_t)w);
                    }
                    const float *r0 = rows, *r1 = rows + pwr, *r2 = rows + 2 * pwr, *r3 = rows + 3 * pwr;
                    long p0 = (long)i * T + (long)ty * tw;
#if defined(__x86_64__)
                    if (vec) {
                        wino_in_row(rows, pwr, tw, V, st, W, cin, c, p0);
                        continue;
                    }
#endif
                    for (int tx = 0; tx < tw; tx++) {
                        long pp = p0 + tx;
                        float *vp = V + (size_t)(pp / W) * cin * W + (size_t)c * W + pp % W;
                        int o = 2 * tx;
                        float t[4][4];
                        for (int b = 0; b < 4; b++) {
                            t[0][b] = r0[o + b] - r2[o + b];
                            t[1][b] = r1[o + b] + r2[o + b];
                            t[2][b] = r2[o + b] - r1[o + b];
                            t[3][b] = r1[o + b] - r3[o + b];
                        }
                        for (int a = 0; a < 4; a++) {
                            vp[(4 * a + 0) * st] = t[a][0] - t[a][2];
                            vp[(4 * a + 1) * st] = t[a][1] + t[a][2];
                            vp[(4 * a + 2) * st] = t[a][2] - t[a][1];
                            vp[(4 * a + 3) * st] = t[a][1] - t[a][3];
                        }
                    }
                }
            }
    }
}

void nn_wino_conv(const float *U, int packed, int cin, int cout, const float *x, size_t xper,
                  int h, int w, int n, float *y, size_t yper, int accumulate, float *V, float *M,
                  float *rows0, size_t rows_n, int par) {
    int th = (h + 1) / 2, tw = (w + 1) / 2, T = th * tw;
    long P = (long)n * T;
    /* V[xi] is cin x P, packed: gemm.h's panels of W columns, each cin x W */
    int W = packed ? nn_gemm_nr((int)P) : (int)P;
    /* from one xi to the next */
    size_t st = packed ? nn_gemm_bpack_n(cin, (int)P) : (size_t)cin * P;
    if (packed && P % W)
        for (int xi = 0; xi < 16; xi++)
            memset(V + xi * st + (size_t)(P / W) * cin * W, 0, sizeof(float) * cin * W);
    small_plan *spp = NULL;
#if defined(__x86_64__)
    /* small images: each tile's top-left in the padded copy and in y, and
     * which tiles have a second output row and column */
    int small = packed && small_img(h, w), ooff[SMALL_T];
    uint16_t rok[SMALL_T / 16], cok[SMALL_T / 16];
    small_plan sp;
    if (small) {
        small_plan_make(&sp, tw, T, 2 * tw + 2, w);
        spp = &sp;
        memset(rok, 0, sizeof rok);
        memset(cok, 0, sizeof cok);
        for (int p = 0; p < T; p++) {
            int ty = p / tw, tx = p % tw;
            ooff[p] = 2 * ty * w + 2 * tx;
            if (2 * ty + 1 < h) rok[p / 16] |= (uint16_t)(1u << p % 16);
            if (2 * tx + 1 < w) cok[p / 16] |= (uint16_t)(1u << p % 16);
        }
    }
#endif
    wino_in(x, xper, h, w, n, cin, V, W, st, packed, spp, rows0, rows_n, par);
    /* the 16 products: M[xi] (cout x P) = U[xi] (cout x cin) x V[xi] (cin x P) */
#pragma omp parallel for schedule(static) if (par)
    for (int xi = 0; xi < 16; xi++)
        if (packed) {
            nn_gemm_out o = {M + (size_t)xi * cout * P, (int)P, 0, NULL, 0, 0};
            nn_gemm_packed(cout, (int)P, cin, U + xi * nn_gemm_apack_n(cout, cin), V + xi * st, &o,
                           0, 1);
        } else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)P, cin, 1.0f,
                    U + (size_t)xi * cout * cin, cin, V + (size_t)xi * cin * P, (int)P, 0.0f,
                    M + (size_t)xi * cout * P, (int)P);
    /* outputs: A^T m A */
#pragma omp parallel for collapse(2) schedule(static) if (par)
    for (int i = 0; i < n; i++)
        for (int o = 0; o < cout; o++) {
            float *yo = y + yper * i + (size_t)o * h * w;
#if defined(__x86_64__)
            if (small) {
                wino_out_small(M + (size_t)o * P, (size_t)cout * P, (long)i * T, T, ooff, rok, cok,
                               &sp, yo, h, w, accumulate);
                continue;
            }
            if (packed) {
                for (int ty = 0; ty < th; ty++)
                    wino_out_row(M + (size_t)o * P, (size_t)cout * P, (long)i * T + (long)ty * tw,
                                 tw, yo + (size_t)2 * ty * w, w, 2 * ty + 1 < h ? 2 : 1,
                                 accumulate);
                continue;
            }
#endif
            for (int ty = 0; ty < th; ty++)
                for (int tx = 0; tx < tw; tx++) {
                    long p = (long)i * T + ty * tw + tx;
                    float m[4][4], t[2][4];
                    for (int a = 0; a < 4; a++)
                        for (int b = 0; b < 4; b++) m[a][b] = M[((size_t)(a * 4 + b) * cout + o) * P + p];
                    for (int b = 0; b < 4; b++) {
                        t[0][b] = m[0][b] + m[1][b] + m[2][b];
                        t[1][b] = m[1][b] - m[2][b] - m[3][b];
                    }
                    for (int a = 0; a < 2; a++) {
                        int yy = 2 * ty + a;
                        if (yy >= h) break;
                        float r[2] = {t[a][0] + t[a][1] + t[a][2], t[a][1] - t[a][2] - t[a][3]};
                        for (int b = 0; b < 2; b++) {
                            int xx = 2 * tx + b;
                            if (xx >= w) break;
                            if (accumulate) yo[yy * w + xx] += r[b];
                            else yo[yy * w + xx] = r[b];
                        }
                    }
                }
        }
}

/* ---- weight gradients ------------------------------------------------------
 * dL/dU[xi] = sum over tiles of (A dy A^T)[xi] * (B^T d B)[xi], elementwise
 * per (o, c): 16 products over the tiles, M[xi] (cout x cin) += Y[xi] (cout
 * x P) V[xi]^T; then dL/dw = G^T M G. Both operands are packed from rows
 * whose inner dimension is the tiles, by register transposes. */

size_t nn_wino_wg_rows_n(int h, int w) {
    size_t th = (size_t)(h + 1) / 2, tw = (size_t)(w + 1) / 2;
    size_t dyn = 4 * th * tw + th * tw; /* the padded channel, then off[] */
    return dyn > nn_wino_rows_n(h, w) ? dyn : nn_wino_rows_n(h, w);
}

void nn_wino_wgrad(const float *x, size_t xper, const float *dy, size_t yper, int cin, int cout,
                   int h, int w, int n, float *M, float *V, float *Y, float *ap, float *bp,
                   float *rows, size_t rows_n) {
#if defined(__x86_64__)
    int th = (h + 1) / 2, tw = (w + 1) / 2, T = th * tw;
    long P = (long)n * T;
    small_plan sp, *spp = NULL;
    if (small_img(h, w)) {
        small_plan_make(&sp, tw, T, 2 * tw + 2, w);
        spp = &sp;
    }
    wino_in(x, xper, h, w, n, cin, V, (int)P, (size_t)cin * P, 1, spp, rows, rows_n, 0);
    wino_dy(dy, yper, h, w, n, cout, Y, rows, (int *)(rows + (size_t)4 * T));
    for (int xi = 0; xi < 16; xi++) {
        nn_gemm_pack_a_cols(Y + (size_t)xi * cout * P, (int)P, cout, (int)P, (int)P, 0, ap);
        nn_gemm_pack_bt(V + (size_t)xi * cin * P, (int)P, (int)P, cin, bp);
        nn_gemm_out o = {M + (size_t)xi * cout * cin, cin, 0, NULL, 0, 1};
        nn_gemm_packed(cout, cin, (int)P, ap, bp, &o, 0, 1);
    }
#else /* never called: the engine takes this path only where nn_gemm_avail */
    (void)x, (void)xper, (void)dy, (void)yper, (void)cin, (void)cout, (void)h, (void)w, (void)n;
    (void)M, (void)V, (void)Y, (void)ap, (void)bp, (void)rows, (void)rows_n;
#endif
}

void nn_wino_wgrad_finish(const float *M, int cout, int cin, float *dw) {
    size_t cc = (size_t)cout * cin;
    for (size_t oc = 0; oc < cc; oc++) {
        float m[4][4], t[3][4];
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++) m[a][b] = M[(size_t)(a * 4 + b) * cc + oc];
        for (int b = 0; b < 4; b++) { /* G^T m */
            t[0][b] = m[0][b] + 0.5f * (m[1][b] + m[2][b]);
            t[1][b] = 0.5f * (m[1][b] - m[2][b]);
            t[2][b] = 0.5f * (m[1][b] + m[2][b]) + m[3][b];
        }
        float *d = dw + oc * 9;
        for (int y = 0; y < 3; y++) { /* (G^T m) G */
            d[y * 3 + 0] += t[y][0] + 0.5f * (t[y][1] + t[y][2]);
            d[y * 3 + 1] += 0.5f * (t[y][1] - t[y][2]);
            d[y * 3 + 2] += 0.5f * (t[y][1] + t[y][2]) + t[y][3];
        }
    }
}
