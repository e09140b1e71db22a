/* kern_avx512.c: the AVX-512 kernel table; see kern.h. Built with
 * -mavx512f (CMakeLists.txt), so nothing here may run before kern.c has
 * checked the CPU.
 *
 * The tile keeps 8 x 32 floats of C in 16 zmm registers (8 x 16 in 8 for
 * narrow products) and runs the whole inner dimension: each step loads a
 * row of the B panel and broadcasts eight weights. Masked loads and stores
 * handle every edge, compress and two-source permutes the Winograd tiles'
 * shuffles. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <stdint.h>

#include "kern_c.h"

#define MR 8
#define NR 32

/* ---- the packed product --------------------------------------------------- */

static void phase_split(const float *x, size_t xper, int nimg, int cin, int h, int w, float *ph,
                        int c0, int c1) {
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
static inline uint32_t in_range(__m512i v0, __m512i v1, __m512i lim) {
    const __m512i z = _mm512_setzero_si512();
    return (uint32_t)(_mm512_cmpge_epi32_mask(v0, z) & _mm512_cmplt_epi32_mask(v0, lim)) |
           (uint32_t)(_mm512_cmpge_epi32_mask(v1, z) & _mm512_cmplt_epi32_mask(v1, lim)) << 16;
}

static void pack_conv(const float *x, const float *ph, size_t xper, int nimg, int cin, int h,
                      int w, int k, int s, int p, int ho, int wo, int W, float *bp, int p0,
                      int p1) {
    if (k > 8) { /* the masks below are for up to 8 taps a side */
        c_pack_conv(x, ph, xper, nimg, cin, h, w, k, s, p, ho, wo, W, bp, p0, p1);
        return;
    }
    int hwo = ho * wo, n = nimg * hwo, K = cin * k * k;
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
static inline void tr16(__m512 r[16]) {
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
static inline void load_tr16(const float *src, size_t ld, int nrows, __mmask16 km, __m512 r[16]) {
    for (int l = 0; l < 16; l++)
        r[l] = l < nrows ? _mm512_maskz_loadu_ps(km, src + (size_t)l * ld) : _mm512_setzero_ps();
    tr16(r);
}

static void pack_bt(const float *bt, int ldb, int k, int n, int W, float *bp) {
    int NP = (n + W - 1) / W;
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
static void pack_a_cols(const float *a, int lda, int m, int k, int ktot, int k0, float *ap) {
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
static inline __attribute__((always_inline)) void tile_v(int k, const float *a, const float *b,
                                                         const nn_gemm_out *o, int m0, int mr,
                                                         int n0, int nr, const int V) {
    __m512 acc[MR][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    int i = 0;
    /* long inner dimensions: the weights are large and streamed, so fetch
     * them ahead (a line every two steps); see kern_avx2.c's PF_AHEAD */
    for (; k >= 256 && i + 2 <= k; i += 2) {
        _mm_prefetch((const char *)(a + 2048), _MM_HINT_T0);
#pragma GCC unroll 2
        for (int u = 0; u < 2; u++, a += MR, b += 16 * V) {
            __m512 b0 = _mm512_load_ps(b), b1 = V == 2 ? _mm512_load_ps(b + 16) : b0;
#pragma GCC unroll 8
            for (int r = 0; r < MR; r++) {
                __m512 av = _mm512_set1_ps(a[r]);
                acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
                if (V == 2) acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
            }
        }
    }
    for (; i < k; i++, a += MR, b += 16 * V) {
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
            c_store_row(o, m0 + r, n0, nr, v);
        }
    }
}

static void tile(int k, const float *a, const float *b, const nn_gemm_out *o, int m0, int mr,
                 int n0, int nr, int W) {
    if (W == 32) tile_v(k, a, b, o, m0, mr, n0, nr, 2);
    else tile_v(k, a, b, o, m0, mr, n0, nr, 1);
}

/* ---- Winograd F(2x2, 3x3) ------------------------------------------------- *
 * Large images go a tile row at a time, 16 tiles a step, from four padded
 * input rows; small ones (g->small) 16 tiles a step across tile rows, from
 * a padded copy of the whole channel, as the plan says. */

/* the four padded rows of a tile row: 2 * round16(tw) + 36 floats each */
static inline int row_pitch(int tw) { return 2 * ((tw + 15) / 16 * 16) + 36; }
/* the small path's padded copy: 2 tw + 2 floats a row */
static inline int small_pitch(int tw) { return 2 * tw + 2; }

static void wino_plan(nn_wino_geom *g) {
    int th = g->th, tw = g->tw, T = g->T, w = g->w, pw = small_pitch(tw);
    g->small = tw < 16 && T <= NN_WINO_SMALL_T;
    if (!g->small) return;
    for (int p = 0; p < T; p++) g->off[p] = 2 * (p / tw) * pw + 2 * (p % tw);
    for (int q = 0; q < T; q += 16) {
        int t0 = q / tw, ok = pw <= 16;
        g->k23[q / 16] = 0;
        for (int l = 0; l < 16; l++) {
            int p = q + l < T ? q + l : q, slot = p / tw - t0, tx = p % tw;
            if (slot > 3) ok = 0;
            g->i01[q + l] = (slot == 1 ? 16 : 0) + 2 * tx;
            g->i23[q + l] = (slot == 3 ? 16 : 0) + 2 * tx;
            if (slot >= 2) g->k23[q / 16] |= (uint16_t)(1u << l);
        }
        g->t0[q / 16] = (int16_t)(ok ? t0 : -1);
        for (int s = 0; s < 4; s++) {
            g->omask[q / 16][s] = 0;
            for (int j = 0; j < 16; j++) {
                int tx = j / 2, lane = (t0 + s) * tw + tx - q;
                int in = j < w && tx < tw && lane >= 0 && lane < 16 && q + lane < T;
                g->oidx[q / 16][s][j] = (j & 1 ? 16 : 0) + (in ? lane : 0);
                if (in) g->omask[q / 16][s] |= (uint16_t)(1u << j);
            }
        }
    }
    memset(g->rok, 0, sizeof g->rok);
    memset(g->cok, 0, sizeof g->cok);
    for (int p = 0; p < T; p++) {
        int ty = p / tw, tx = p % tw;
        g->ooff[p] = 2 * ty * w + 2 * tx;
        if (2 * ty + 1 < g->h) g->rok[p / 16] |= (uint16_t)(1u << p % 16);
        if (2 * tx + 1 < w) g->cok[p / 16] |= (uint16_t)(1u << p % 16);
    }
    (void)th;
}

/* store lanes [0, nl) of v as V's columns pp.. of row c (packed panels),
 * splitting where the columns cross into the next panel */
static inline void v_store(float *V, int W, int cin, long pp, int c, __m512 v, int nl) {
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
static inline void in_tiles(__m512 d[4][4], float *V, size_t st, int W, int cin, int c, long pp,
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

/* B^T d B for the tiles of one tile row, 16 tiles a step: r0..r3 the four
 * padded input rows (pwr apart), tiles p0.. in V */
static void wino_in_row(const float *r0, int pwr, int tw, float *V, size_t st, int W, int cin,
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

/* a small image: xc copied into the padded copy, (2 th + 2) x pw, then the
 * tiles taken from it 16 at a time as the plan says */
static void wino_in_small(const nn_wino_geom *g, const float *xc, float *pad, float *V, size_t st,
                          int W, int cin, int c, long p0) {
    int h = g->h, w = g->w, th = g->th, T = g->T, pw = small_pitch(g->tw);
    for (int yy = 0; yy < h; yy++)
        memcpy(pad + (size_t)(yy + 1) * pw + 1, xc + (size_t)yy * w, sizeof(float) * w);
    const __m512 z = _mm512_setzero_ps();
    for (int q = 0; q < T; q += 16) {
        int nl = T - q < 16 ? T - q : 16, t0 = g->t0[q / 16];
        __mmask16 k = (__mmask16)((1u << nl) - 1);
        __m512 d[4][4];
        if (t0 >= 0) {
            __m512i i01 = _mm512_loadu_si512(g->i01 + q), i23 = _mm512_loadu_si512(g->i23 + q);
            __mmask16 k23 = g->k23[q / 16];
            for (int a = 0; a < 4; a++) {
                __m512 S[4];
                for (int s = 0; s < 4; s++) { /* rows past the image's feed no lane */
                    int r = 2 * (t0 + s) + a, last = 2 * th + 1;
                    S[s] = _mm512_loadu_ps(pad + (size_t)(r < last ? r : last) * pw);
                }
                for (int b = 0; b < 4; b++) {
                    __m512i bv = _mm512_set1_epi32(b);
                    __m512 lo = _mm512_permutex2var_ps(S[0], _mm512_add_epi32(i01, bv), S[1]);
                    __m512 hi = _mm512_permutex2var_ps(S[2], _mm512_add_epi32(i23, bv), S[3]);
                    d[a][b] = _mm512_mask_blend_ps(k23, lo, hi);
                }
            }
        } else {
            __m512i base = _mm512_maskz_loadu_epi32(k, g->off + q);
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++)
                    d[a][b] = _mm512_mask_i32gather_ps(
                        z, k, _mm512_add_epi32(base, _mm512_set1_epi32(a * pw + b)), pad, 4);
        }
        in_tiles(d, V, st, W, cin, c, p0 + q, nl);
    }
}

static void wino_in(const nn_wino_geom *g, const float *x, size_t xper, int n, float *rows,
                    float *V, size_t st, int W, int cin, int c) {
    int h = g->h, w = g->w, pwr = row_pitch(g->tw);
    for (int i = 0; i < n; i++) {
        const float *xc = x + xper * i;
        if (g->small) { /* the whole image: small ones are never banded */
            wino_in_small(g, xc, rows, V, st, W, cin, c, (long)i * g->TB);
            continue;
        }
        /* only [1, w] of a row is ever written: the padding around it stays
         * zero, and so do the lanes the vector loads read past it */
        for (int r = 0; r < g->nrows; r++) {
            int ty = g->ty0 + r;
            for (int a = 0; a < 4; a++) {
                float *rr = rows + (size_t)a * pwr;
                int yy = 2 * ty - 1 + a;
                if (yy >= 0 && yy < h) memcpy(rr + 1, xc + (size_t)yy * w, sizeof(float) * (size_t)w);
                else memset(rr + 1, 0, sizeof(float) * (size_t)w);
            }
            wino_in_row(rows, pwr, g->tw, V, st, W, cin, c, (long)i * g->TB + (long)r * g->tw);
        }
    }
}

/* the 16 products' values of 16 tiles (masked to k), from column off of M's
 * row for the channel (rows ms apart, one per product) */
static inline void load_m(const float *M, size_t ms, long off, __mmask16 k, __m512 m[4][4]) {
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++)
            m[a][b] = _mm512_maskz_loadu_ps(k, M + (size_t)(a * 4 + b) * ms + off);
}

/* output row a (0 or 1) of 16 tiles' A^T m A: its even and odd columns */
static inline void out_tiles(__m512 m[4][4], int a, __m512 *even, __m512 *odd) {
    __m512 t[4];
    for (int b = 0; b < 4; b++)
        t[b] = a == 0 ? _mm512_add_ps(_mm512_add_ps(m[0][b], m[1][b]), m[2][b])
                      : _mm512_sub_ps(_mm512_sub_ps(m[1][b], m[2][b]), m[3][b]);
    *even = _mm512_add_ps(_mm512_add_ps(t[0], t[1]), t[2]);
    *odd = _mm512_sub_ps(_mm512_sub_ps(t[1], t[2]), t[3]);
}

/* A^T m A for one tile row of one output channel, 16 tiles a step: m from
 * M (row o of each of the 16 products, tiles p0..), out to y rows yy, yy+1 */
static void wino_out_row(const float *M, size_t ms, long p0, int tw, float *yrow, int w, int nrows,
                         int accumulate, float bias, int relu) {
    const __m512 bv = _mm512_set1_ps(bias), z = _mm512_setzero_ps();
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
            v0 = _mm512_add_ps(v0, bv);
            v1 = _mm512_add_ps(v1, bv);
            if (relu) {
                v0 = _mm512_max_ps(v0, z);
                v1 = _mm512_max_ps(v1, z);
            }
            _mm512_mask_storeu_ps(d, k0, v0);
            _mm512_mask_storeu_ps(d + 16, k1, v1);
        }
    }
}

/* A^T m A for all the tiles of one output channel of a small image, 16
 * tiles a step across tile rows, into yo (h x w): a row run at a time as
 * the plan says, or else scattered */
static void wino_out_small(const nn_wino_geom *g, const float *M, size_t ms, long p0, float *yo,
                           int accumulate, float bias, int relu) {
    int h = g->h, w = g->w, T = g->T;
    const __m512 bv = _mm512_set1_ps(bias), z = _mm512_setzero_ps();
    for (int q = 0; q < T; q += 16) {
        int nl = T - q < 16 ? T - q : 16, t0 = g->t0[q / 16];
        __mmask16 k = (__mmask16)((1u << nl) - 1);
        __m512 m[4][4];
        load_m(M, ms, p0 + q, k, m);
        __m512i base = _mm512_maskz_loadu_epi32(k, g->ooff + q);
        __mmask16 rk = g->rok[q / 16], ck = g->cok[q / 16];
        for (int a = 0; a < 2; a++) {
            __m512 r0, r1; /* even and odd columns */
            out_tiles(m, a, &r0, &r1);
            if (t0 >= 0) { /* each output row's run: a permute of the two */
                for (int s = 0; s < 4; s++) {
                    int yy = 2 * (t0 + s) + a;
                    __mmask16 om = g->omask[q / 16][s];
                    if (yy >= h || !om) continue;
                    __m512 v =
                        _mm512_permutex2var_ps(r0, _mm512_loadu_si512(g->oidx[q / 16][s]), r1);
                    float *d = yo + (size_t)yy * w;
                    if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(om, d));
                    v = _mm512_add_ps(v, bv);
                    if (relu) v = _mm512_max_ps(v, z);
                    _mm512_mask_storeu_ps(d, om, v);
                }
                continue;
            }
            __mmask16 ka = a ? (__mmask16)(k & rk) : k;
            __m512i i0 = _mm512_add_epi32(base, _mm512_set1_epi32(a * w));
            __m512i i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(1));
            if (accumulate) {
                r0 = _mm512_add_ps(r0, _mm512_mask_i32gather_ps(z, ka, i0, yo, 4));
                r1 = _mm512_add_ps(r1, _mm512_mask_i32gather_ps(z, (__mmask16)(ka & ck), i1, yo, 4));
            }
            r0 = _mm512_add_ps(r0, bv);
            r1 = _mm512_add_ps(r1, bv);
            if (relu) {
                r0 = _mm512_max_ps(r0, z);
                r1 = _mm512_max_ps(r1, z);
            }
            _mm512_mask_i32scatter_ps(yo, ka, i0, r0, 4);
            _mm512_mask_i32scatter_ps(yo, (__mmask16)(ka & ck), i1, r1, 4);
        }
    }
}

static void wino_out(const nn_wino_geom *g, const float *M, size_t ms, long p0, float *yo,
                     int accumulate, float bias, int relu) {
    if (g->small) {
        wino_out_small(g, M, ms, p0, yo, accumulate, bias, relu);
        return;
    }
    for (int r = 0; r < g->nrows; r++) {
        int ty = g->ty0 + r;
        wino_out_row(M, ms, p0 + (long)r * g->tw, g->tw, yo + (size_t)2 * ty * g->w, g->w,
                     2 * ty + 1 < g->h ? 2 : 1, accumulate, bias, relu);
    }
}

/* A dy A^T of one image: each channel copied into pad (2 th x 2 tw, its
 * zero border past an odd size kept zero), then 16 tiles a step, their four
 * values gathered from off[] (after pad) */
static void wino_dy(const nn_wino_geom *g, const float *dy, int cout, float *pad, float *Y,
                    size_t ldy, size_t ys) {
    int h = g->h, w = g->w, tw = g->tw, T = g->T, pw = 2 * tw;
    int *off = (int *)(pad + (size_t)2 * g->th * pw);
    memset(pad, 0, sizeof(float) * (size_t)2 * g->th * pw);
    for (int p = 0, ty = 0; ty < g->th; ty++)
        for (int tx = 0; tx < tw; tx++) off[p++] = 2 * ty * pw + 2 * tx;
    const __m512 z = _mm512_setzero_ps();
    for (int o = 0; o < cout; o++) {
        const float *dc = dy + (size_t)o * h * w;
        for (int yy = 0; yy < h; yy++)
            memcpy(pad + (size_t)yy * pw, dc + (size_t)yy * w, sizeof(float) * w);
        float *yo = Y + (size_t)o * ldy;
        for (int q = 0; q < T; q += 16) {
            int nl = T - q < 16 ? T - q : 16;
            __mmask16 k = (__mmask16)((1u << nl) - 1);
            __m512i b0 = _mm512_maskz_loadu_epi32(k, off + q);
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
            for (int s = 0; s < 4; s++) {
                __m512 u = r[s][0], v = r[s][1];
                float *dst = yo + q + (size_t)(4 * s) * ys;
                _mm512_mask_storeu_ps(dst, k, u);
                _mm512_mask_storeu_ps(dst + ys, k, _mm512_add_ps(u, v));
                _mm512_mask_storeu_ps(dst + 2 * ys, k, _mm512_sub_ps(u, v));
                _mm512_mask_storeu_ps(dst + 3 * ys, k, _mm512_sub_ps(z, v));
            }
        }
    }
}

/* ---- reductions: 16 partial sums ------------------------------------------ */

static inline __mmask16 tail(size_t left) { return (__mmask16)((1u << left) - 1); }

static float vsum(const float *x, size_t n) {
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        a = _mm512_add_ps(a, _mm512_loadu_ps(x + j));
        b = _mm512_add_ps(b, _mm512_loadu_ps(x + j + 16));
    }
    for (; j < n; j += 16) {
        __mmask16 k = n - j >= 16 ? (__mmask16)0xffff : tail(n - j);
        a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(k, x + j));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a, b));
}

static float vsqdev(const float *x, size_t n, float mu) {
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps(), m = _mm512_set1_ps(mu);
    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(x + j), m);
        __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(x + j + 16), m);
        a = _mm512_fmadd_ps(d0, d0, a);
        b = _mm512_fmadd_ps(d1, d1, b);
    }
    for (; j < n; j += 16) {
        __mmask16 k = n - j >= 16 ? (__mmask16)0xffff : tail(n - j);
        __m512 d = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + j), m);
        a = _mm512_fmadd_ps(d, d, a);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a, b));
}

static void vsum2(const float *d, const float *x, size_t n, float mu, float *sd, float *sdx) {
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps(), m = _mm512_set1_ps(mu);
    for (size_t j = 0; j < n; j += 16) {
        __mmask16 k = n - j >= 16 ? (__mmask16)0xffff : tail(n - j);
        __m512 g = _mm512_maskz_loadu_ps(k, d + j);
        a = _mm512_add_ps(a, g);
        b = _mm512_fmadd_ps(g, _mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), m), b);
    }
    *sd += _mm512_reduce_add_ps(a);
    *sdx += _mm512_reduce_add_ps(b);
}

const nn_kern nn_kern_avx512 = {
    .isa = NN_ISA_AVX512,
    .name = "avx512",
    .mr = MR,
    .nr = NR,
    .tile = tile,
    .pack_a_cols = pack_a_cols,
    .pack_bt = pack_bt,
    .pack_conv = pack_conv,
    .phase_split = phase_split,
    .wino_plan = wino_plan,
    .wino_in = wino_in,
    .wino_out = wino_out,
    .wino_dy = wino_dy,
    .vsum = vsum,
    .vsqdev = vsqdev,
    .vsum2 = vsum2,
    .affine = c_affine,
    .bn_dx = c_bn_dx,
    .relu_mask = c_relu_mask,
    .add = c_add,
};
#endif
