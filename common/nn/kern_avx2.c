/* kern_avx2.c: the AVX2 + FMA kernel table; see kern.h. Built with -mavx2
 * -mfma (CMakeLists.txt), so nothing here may run before kern.c has
 * checked the CPU.
 *
 * AVX2 has 16 ymm registers of 8 floats. The tile is BLIS's and OpenBLAS's
 * Haswell shape: 6 rows x 16 columns of C in 12 registers, two for a row
 * of the B panel and one for the broadcast weight, 12 FMAs to 8 loads a
 * step. Narrow products take 6 x 8. There are no mask registers: edges go
 * through vmaskmovps with lane masks from a table, and only at edges (some
 * AMD cores run masked stores slowly). Winograd takes 8 tiles a step; 7x7
 * and 8x8 images (4 tiles a row) take two tile rows a step. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <stdint.h>

#include "kern_c.h"

#define MR 6
#define NR 16

/* ---- lanes ---------------------------------------------------------------- */

static const int32_t first_tab[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* the mask of the first n lanes, 0 <= n <= 8 */
static inline __m256i first(int n) {
    return _mm256_loadu_si256((const __m256i *)(first_tab + 8 - n));
}

/* the first n lanes from p (n clamped to [0, 8]), zeros elsewhere */
static inline __m256 load_n(const float *p, int n) {
    if (n >= 8) return _mm256_loadu_ps(p);
    return n > 0 ? _mm256_maskload_ps(p, first(n)) : _mm256_setzero_ps();
}

/* the first n lanes of v to p, nothing else touched */
static inline void store_n(float *p, __m256 v, int n) {
    if (n >= 8) _mm256_storeu_ps(p, v);
    else if (n > 0) _mm256_maskstore_ps(p, first(n), v);
}

/* the lanes whose bit in m is set */
static inline __m256i bits8(uint32_t m) {
    const __m256i lb = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)m), lb), lb);
}

/* even and odd lanes of the 16 values (v0, v1), in order */
static inline __m256 even(__m256 v0, __m256 v1) {
    return _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(v0, v1, 0x88)), 0xD8));
}
static inline __m256 odd(__m256 v0, __m256 v1) {
    return _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(v0, v1, 0xDD)), 0xD8));
}

/* r[l] (row l of an 8 x 8 block) becomes column l */
static inline void tr8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) { /* u[i + q]: rows i..i+3 of columns q and q + 4 */
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int q = 0; q < 4; q++) {
        r[q] = _mm256_permute2f128_ps(u[q], u[4 + q], 0x20);
        r[q + 4] = _mm256_permute2f128_ps(u[q], u[4 + q], 0x31);
    }
}

/* ---- the packed product --------------------------------------------------- */

/* the finished tile (acc[r][v]: row r, columns 8v..8v+7) to C */
static inline void tile_store(__m256 acc[MR][2], const nn_gemm_out *o, int m0, int mr, int n0,
                              int nr, int V) {
    int q0 = n0 % o->cols;
    if (q0 + nr > o->cols) { /* the tile spans images */
        float v[NR];
        for (int r = 0; r < mr; r++) {
            _mm256_storeu_ps(v, acc[r][0]);
            if (V == 2) _mm256_storeu_ps(v + 8, acc[r][1]);
            c_store_row(o, m0 + r, n0, nr, v);
        }
        return;
    }
    int n0l = nr < 8 ? nr : 8, n1l = nr - 8;
    const __m256 z = _mm256_setzero_ps();
    float *base = o->c + (size_t)(n0 / o->cols) * o->cstride + q0;
    for (int r = 0; r < mr; r++) {
        __m256 v0 = acc[r][0], v1 = acc[r][1];
        float *d = base + (size_t)(m0 + r) * o->cols;
        if (o->acc) {
            v0 = _mm256_add_ps(v0, load_n(d, n0l));
            if (V == 2) v1 = _mm256_add_ps(v1, load_n(d + 8, n1l));
        }
        if (o->bias) {
            __m256 bv = _mm256_set1_ps(o->bias[m0 + r]);
            v0 = _mm256_add_ps(v0, bv);
            v1 = _mm256_add_ps(v1, bv);
        }
        if (o->relu) {
            v0 = _mm256_max_ps(v0, z);
            v1 = _mm256_max_ps(v1, z);
        }
        store_n(d, v0, n0l);
        if (V == 2) store_n(d + 8, v1, n1l);
    }
}

/* One step of the inner dimension for row r: the broadcast weight times
 * the B row. Named registers, not an array: GCC kept an array of
 * accumulators in memory and stored it every step (half the speed). */
#define STEP2(r)                                                                                   \
    av = _mm256_broadcast_ss(a + r);                                                               \
    c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);                                                    \
    c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1);
#define STEP1(r)                                                                                   \
    av = _mm256_broadcast_ss(a + r);                                                               \
    c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);

/* How far ahead (floats) the weights are fetched: a panel streamed from
 * memory (resnet's last layers at batch 1, whose 16.8 MB of Winograd
 * weights are read once) otherwise waits on every line; measured on the
 * 512-channel 7x7 products: 85 -> 110 GFLOP/s on one core. */
#define PF_AHEAD 1536
/* ...only where the inner dimension is long enough that the weights are
 * large: short ones (64 channels) sit in L1 and the fetches cost slots */
#define PF_MIN_K 256

static void tile16(int k, const float *a, const float *b, const nn_gemm_out *o, int m0, int mr,
                   int n0, int nr) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    int i = 0;
    for (; k >= PF_MIN_K && i + 4 <= k; i += 4) { /* 24 weights: two lines to fetch */
        _mm_prefetch((const char *)(a + PF_AHEAD), _MM_HINT_T0);
        _mm_prefetch((const char *)(a + PF_AHEAD + 16), _MM_HINT_T0);
#pragma GCC unroll 4
        for (int u = 0; u < 4; u++, a += MR, b += 16) {
            __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8), av;
            STEP2(0) STEP2(1) STEP2(2) STEP2(3) STEP2(4) STEP2(5)
        }
    }
    for (; i < k; i++, a += MR, b += 16) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8), av;
        STEP2(0) STEP2(1) STEP2(2) STEP2(3) STEP2(4) STEP2(5)
    }
    __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    tile_store(acc, o, m0, mr, n0, nr, 2);
}

static void tile8(int k, const float *a, const float *b, const nn_gemm_out *o, int m0, int mr,
                  int n0, int nr) {
    __m256 c00 = _mm256_setzero_ps(), c10 = c00, c20 = c00, c30 = c00, c40 = c00, c50 = c00;
    int i = 0;
    for (; k >= PF_MIN_K && i + 4 <= k; i += 4) {
        _mm_prefetch((const char *)(a + PF_AHEAD), _MM_HINT_T0);
        _mm_prefetch((const char *)(a + PF_AHEAD + 16), _MM_HINT_T0);
#pragma GCC unroll 4
        for (int u = 0; u < 4; u++, a += MR, b += 8) {
            __m256 b0 = _mm256_load_ps(b), av;
            STEP1(0) STEP1(1) STEP1(2) STEP1(3) STEP1(4) STEP1(5)
        }
    }
    for (; i < k; i++, a += MR, b += 8) {
        __m256 b0 = _mm256_load_ps(b), av;
        STEP1(0) STEP1(1) STEP1(2) STEP1(3) STEP1(4) STEP1(5)
    }
    const __m256 z = _mm256_setzero_ps();
    __m256 acc[MR][2] = {{c00, z}, {c10, z}, {c20, z}, {c30, z}, {c40, z}, {c50, z}};
    tile_store(acc, o, m0, mr, n0, nr, 1);
}

static void tile(int k, const float *a, const float *b, const nn_gemm_out *o, int m0, int mr,
                 int n0, int nr, int W) {
    if (W == 16) tile16(k, a, b, o, m0, mr, n0, nr);
    else tile8(k, a, b, o, m0, mr, n0, nr);
}

/* A's panels from its rows: 6 rows by 8 columns at a time, transposed in
 * registers; a column's 6 values are written as 8 (the next column's store
 * covers the 2 extra) except the very last column's */
static void pack_a_cols(const float *a, int lda, int m, int k, int ktot, int k0, float *ap) {
    for (int m0 = 0; m0 < m; m0 += MR) {
        int mr = m - m0 < MR ? m - m0 : MR;
        float *d = ap + (size_t)m0 * ktot + (size_t)k0 * MR;
        for (int i0 = 0; i0 < k; i0 += 8) {
            int ni = k - i0 < 8 ? k - i0 : 8;
            __m256 r[8];
            for (int l = 0; l < 8; l++)
                r[l] = l < mr ? load_n(a + (size_t)(m0 + l) * lda + i0, ni) : _mm256_setzero_ps();
            tr8(r);
            for (int l = 0; l < ni; l++) {
                float *dc = d + (size_t)(i0 + l) * MR;
                if (i0 + l < k - 1) {
                    _mm256_storeu_ps(dc, r[l]);
                } else {
                    _mm_storeu_ps(dc, _mm256_castps256_ps128(r[l]));
                    _mm_storel_pi((__m64 *)(dc + 4), _mm256_extractf128_ps(r[l], 1));
                }
            }
        }
    }
}

static void pack_bt(const float *bt, int ldb, int k, int n, int W, float *bp) {
    int NP = (n + W - 1) / W;
    for (int pn = 0; pn < NP; pn++)
        for (int h = 0; h < W; h += 8) { /* 8 of the panel's columns: rows of bt */
            int j0 = pn * W + h, nj = n - j0;
            float *d = bp + (size_t)pn * W * k + h;
            for (int i0 = 0; i0 < k; i0 += 8) {
                int ni = k - i0 < 8 ? k - i0 : 8;
                __m256 r[8];
                for (int l = 0; l < 8; l++)
                    r[l] = l < nj ? load_n(bt + (size_t)(j0 + l) * ldb + i0, ni) : _mm256_setzero_ps();
                tr8(r);
                for (int l = 0; l < ni; l++) _mm256_storeu_ps(d + (size_t)(i0 + l) * W, r[l]);
            }
        }
}

/* im2col straight into panels; see kern_avx512.c's, which this follows
 * with 8-lane halves and lane masks in place of mask registers */
static void pack_conv(const float *x, const float *ph, size_t xper, int nimg, int cin, int h,
                      int w, int k, int s, int p, int ho, int wo, int W, float *bp, int p0,
                      int p1) {
    if (k > 8) {
        c_pack_conv(x, ph, xper, nimg, cin, h, w, k, s, p, ho, wo, W, bp, p0, p1);
        return;
    }
    int hwo = ho * wo, n = nimg * hwo, K = cin * k * k, halves = W / 8;
    int32_t off[NR], iy[NR], ix[NR];
    uint32_t rowok[8], colok[8];
    __m256i tm[64][2]; /* tap masks, by half */
    for (int pn = p0; pn < p1; pn++) {
        int j = pn * W, img = j / hwo, oy = j % hwo / wo, ox = j % hwo % wo;
        for (int jj = 0; jj < W; jj++, j++) {
            if (j < n) {
                iy[jj] = oy * s - p;
                ix[jj] = ox * s - p;
                off[jj] = (int32_t)((size_t)img * xper + (ptrdiff_t)iy[jj] * w + ix[jj]);
            } else {
                iy[jj] = ix[jj] = -(1 << 20);
                off[jj] = 0;
            }
            if (++ox == wo) {
                ox = 0;
                if (++oy == ho) oy = 0, img++;
            }
        }
        for (int t = 0; t < k; t++) {
            uint32_t ro = 0, co = 0;
            for (int jj = 0; jj < W; jj++) {
                ro |= (uint32_t)((unsigned)(iy[jj] + t) < (unsigned)h) << jj;
                co |= (uint32_t)((unsigned)(ix[jj] + t) < (unsigned)w) << jj;
            }
            rowok[t] = ro;
            colok[t] = co;
        }
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                uint32_t m = rowok[ky] & colok[kx];
                tm[ky * k + kx][0] = bits8(m);
                tm[ky * k + kx][1] = bits8(m >> 8);
            }
        float *d = bp + (size_t)pn * K * W;
        int j0 = pn * W;
        int jl = (j0 + W < n ? j0 + W : n) - 1;
        const float *src = s == 1 && ho == h && wo == w ? x : ph;
        const float *sb[8];
        __m256i sm[8][2];
        int ns = 0;
        for (int L = 0, jj = j0; src && L < W && jj <= jl; ns++) {
            int q = jj % hwo, len = hwo - q < jl + 1 - jj ? hwo - q : jl + 1 - jj;
            if (len > W - L) len = W - L;
            if (ns == 8) {
                src = NULL;
                break;
            }
            uint32_t m = ((1u << len) - 1) << L;
            sb[ns] = src + (size_t)(jj / hwo) * xper + q - L; /* lane L reads sb + L */
            sm[ns][0] = bits8(m);
            sm[ns][1] = bits8(m >> 8);
            L += len;
            jj += len;
        }
        if (src) {
            int npc = src == x ? 1 : 4;
            for (int c = 0; c < cin; c++)
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++, d += W) {
                        int py = npc == 4 ? (ky - p) & 1 : 0, px = npc == 4 ? (kx - p) & 1 : 0;
                        int dy = (ky - p - py) / (npc == 4 ? 2 : 1);
                        int dx = (kx - p - px) / (npc == 4 ? 2 : 1);
                        ptrdiff_t to = (ptrdiff_t)(c * npc + py * 2 + px) * hwo + dy * wo + dx;
                        const __m256i *mk = tm[ky * k + kx];
                        for (int hf = 0; hf < halves; hf++) {
                            __m256 v = _mm256_setzero_ps();
                            for (int g = 0; g < ns; g++)
                                v = _mm256_or_ps(v, _mm256_maskload_ps(
                                                        sb[g] + to + 8 * hf,
                                                        _mm256_and_si256(mk[hf], sm[g][hf])));
                            _mm256_storeu_ps(d + 8 * hf, v);
                        }
                    }
            continue;
        }
        const __m256 z = _mm256_setzero_ps();
        for (int c = 0; c < cin; c++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++, d += W) {
                    __m256i dl = _mm256_set1_epi32(c * h * w + ky * w + kx);
                    for (int hf = 0; hf < halves; hf++) {
                        __m256i idx = _mm256_add_epi32(
                            _mm256_loadu_si256((const __m256i *)(off + 8 * hf)), dl);
                        _mm256_storeu_ps(d + 8 * hf,
                                         _mm256_mask_i32gather_ps(
                                             z, x, idx, _mm256_castsi256_ps(tm[ky * k + kx][hf]), 4));
                    }
                }
    }
}

/* ---- Winograd F(2x2, 3x3) ------------------------------------------------- *
 * Eight tiles a step. Inputs: the channel's band of n images is copied
 * into one zero-padded buffer, image after image, and V's columns are taken
 * in aligned groups of 8, whatever tile rows they span: each run of a
 * group's lanes within one tile row is 4 loads a pixel row, blended in, and
 * every store is a whole vector. Outputs: 8 tiles of one tile row at a
 * time (two rows of 4-tile images). The transforms go in two halves so
 * that what is live fits the 16 registers. */

static const int32_t from_tab[16] = {0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1};

/* the mask of lanes s.. (0 <= s <= 8) */
static inline __m256 from(int s) {
    return _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)(from_tab + 8 - s)));
}

/* one group's lanes: run k takes lanes [at[k], at[k + 1]), lane l reading
 * from off[k] + 2 l in the padded copy */
typedef struct {
    int nrun, at[8];
    long off[8];
} wgroup;

/* pixels (b, b + 1) of the 8 tiles: ao is the row's and b's offset */
static inline void px(const float *base, const wgroup *gp, size_t ao, __m256 *e, __m256 *o) {
    const float *q = base + gp->off[0] + ao;
    __m256 v0 = _mm256_loadu_ps(q), v1 = _mm256_loadu_ps(q + 8);
    *e = even(v0, v1);
    *o = odd(v0, v1);
    for (int k = 1; k < gp->nrun; k++) {
        q = base + gp->off[k] + ao;
        v0 = _mm256_loadu_ps(q);
        v1 = _mm256_loadu_ps(q + 8);
        __m256 m = from(gp->at[k]);
        *e = _mm256_blendv_ps(*e, even(v0, v1), m);
        *o = _mm256_blendv_ps(*o, odd(v0, v1), m);
    }
}

static void wino_in(const nn_wino_geom *g, const float *x, size_t xper, int n, float *pad,
                    float *V, size_t st, int W, int cin, int c) {
    int pw = g->pw, tw = g->tw, nr = g->nrows, bpr = 2 * nr + 4; /* rows an image's copy takes */
    float *base = pad + 32; /* a run's loads start up to 14 floats before its tile */
    for (int i = 0; i < n; i++) c_wino_pad(g, x + xper * i, base + (size_t)i * bpr * pw);
    long P = (long)n * g->TB;
    int i = 0, r = 0, tx = 0; /* the tile at the next group's lane 0 */
    for (long p = 0; p < P; p += 8) {
        wgroup gp;
        gp.nrun = 0;
        for (int l = 0; l < 8 && i < n;) { /* lanes past the last tile: the last run's reads */
            int take = tw - tx < 8 - l ? tw - tx : 8 - l;
            gp.at[gp.nrun] = l;
            gp.off[gp.nrun++] = ((long)i * bpr + 2 * r) * pw + 2 * tx - 2 * l;
            l += take;
            if ((tx += take) == tw) {
                tx = 0;
                if (++r == nr) r = 0, i++;
            }
        }
        float *dv = V + (size_t)(p / W) * cin * W + (size_t)c * W + p % W;
        __m256 s0[4], s1[4], d0, d1, d2, d3;
        for (int a = 0; a < 4; a++) { /* columns 0 and 1 of d B */
            px(base, &gp, (size_t)a * pw, &d0, &d1);
            px(base, &gp, (size_t)a * pw + 2, &d2, &d3);
            s0[a] = _mm256_sub_ps(d0, d2);
            s1[a] = _mm256_add_ps(d1, d2);
        }
        for (int j = 0; j < 2; j++) { /* B^T of them: matrices 4 a + j */
            __m256 *t = j ? s1 : s0;
            _mm256_storeu_ps(dv + (size_t)j * st, _mm256_sub_ps(t[0], t[2]));
            _mm256_storeu_ps(dv + (size_t)(4 + j) * st, _mm256_add_ps(t[1], t[2]));
            _mm256_storeu_ps(dv + (size_t)(8 + j) * st, _mm256_sub_ps(t[2], t[1]));
            _mm256_storeu_ps(dv + (size_t)(12 + j) * st, _mm256_sub_ps(t[1], t[3]));
        }
        for (int a = 0; a < 4; a++) { /* columns 2 and 3 */
            px(base, &gp, (size_t)a * pw, &d0, &d1);
            px(base, &gp, (size_t)a * pw + 2, &d2, &d3);
            s0[a] = _mm256_sub_ps(d2, d1);
            s1[a] = _mm256_sub_ps(d1, d3);
        }
        for (int j = 0; j < 2; j++) {
            __m256 *t = j ? s1 : s0;
            _mm256_storeu_ps(dv + (size_t)(2 + j) * st, _mm256_sub_ps(t[0], t[2]));
            _mm256_storeu_ps(dv + (size_t)(6 + j) * st, _mm256_add_ps(t[1], t[2]));
            _mm256_storeu_ps(dv + (size_t)(10 + j) * st, _mm256_sub_ps(t[2], t[1]));
            _mm256_storeu_ps(dv + (size_t)(14 + j) * st, _mm256_sub_ps(t[1], t[3]));
        }
    }
}

/* n outputs to d, written or added, plus bias, ReLU'd. room: 8 floats
 * from d are this plane's, so a partial vector can be a whole-vector read,
 * blend and write; else a masked store. */
typedef struct {
    int accumulate, relu;
    __m256 bias;
} outop;

static inline __m256 out_fin(const outop *op, __m256 v, __m256 cur) {
    if (op->accumulate) v = _mm256_add_ps(v, cur);
    v = _mm256_add_ps(v, op->bias);
    return op->relu ? _mm256_max_ps(v, _mm256_setzero_ps()) : v;
}

/* n < 8: a masked store, never a load-blend-store of the whole vector: the
 * lanes past the row are the next row's, which another thread may be
 * writing (nn_wino_conv splits an image by tile rows), and a rewrite of
 * what was read would undo its store (seen: conv_matches_naive's dx at 35
 * px, one run in five) */
static inline void out_store(float *d, __m256 v, int n, const outop *op) {
    if (n <= 0) return;
    if (n >= 8) _mm256_storeu_ps(d, out_fin(op, v, op->accumulate ? _mm256_loadu_ps(d) : v));
    else store_n(d, out_fin(op, v, op->accumulate ? load_n(d, n) : v), n);
}

/* A^T m A of 8 tiles at column p of M: output rows 0 (ra) and 1 (rb), each
 * as the first 4 tiles' columns (lo) and the last 4's (hi) */
static inline void out_tiles(const float *M, size_t ms, long p, __m256 ra[2], __m256 rb[2]) {
    __m256 ta[4], tb[4];
    for (int b = 0; b < 4; b++) { /* A^T m, a column at a time */
        __m256 m0 = _mm256_loadu_ps(M + (size_t)b * ms + p);
        __m256 m1 = _mm256_loadu_ps(M + (size_t)(4 + b) * ms + p);
        __m256 m2 = _mm256_loadu_ps(M + (size_t)(8 + b) * ms + p);
        __m256 m3 = _mm256_loadu_ps(M + (size_t)(12 + b) * ms + p);
        ta[b] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
        tb[b] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
    }
    for (int a = 0; a < 2; a++) { /* then A: even and odd columns, interleaved */
        __m256 *t = a ? tb : ta, *r = a ? rb : ra;
        __m256 e = _mm256_add_ps(_mm256_add_ps(t[0], t[1]), t[2]);
        __m256 o = _mm256_sub_ps(_mm256_sub_ps(t[1], t[2]), t[3]);
        __m256 l = _mm256_unpacklo_ps(e, o), h = _mm256_unpackhi_ps(e, o);
        r[0] = _mm256_permute2f128_ps(l, h, 0x20);
        r[1] = _mm256_permute2f128_ps(l, h, 0x31);
    }
}

/* M is read 8 tiles at a time past a row's last tile (nn_wino_m_n's
 * slack); those lanes are never stored */
static void wino_out(const nn_wino_geom *g, const float *M, size_t ms, long p0, float *yo,
                     int accumulate, float bias, int relu) {
    int h = g->h, w = g->w, tw = g->tw;
    outop op = {accumulate, relu, _mm256_set1_ps(bias)};
    __m256 ra[2], rb[2];
    for (int r = 0; r < g->nrows; r += tw == 4 ? 2 : 1)
        for (int tx = 0; tx < tw; tx += 8) {
            int ty = g->ty0 + r;
            out_tiles(M, ms, p0 + (long)r * tw + tx, ra, rb);
            int cnt = w - 2 * tx < 16 ? w - 2 * tx : 16; /* outputs in a row from these tiles */
            for (int a = 0; a < 2; a++) {
                int yy = 2 * ty + a;
                if (yy >= h) break;
                __m256 *v = a ? rb : ra;
                size_t at = (size_t)yy * w + 2 * tx;
                if (tw == 4) { /* lanes 4..7: the next tile row's */
                    out_store(yo + at, v[0], w, &op);
                    if (yy + 2 < h && r + 1 < g->nrows)
                        out_store(yo + at + 2 * (size_t)w, v[1], w, &op);
                } else {
                    out_store(yo + at, v[0], cnt < 8 ? cnt : 8, &op);
                    out_store(yo + at + 8, v[1], cnt - 8, &op);
                }
            }
        }
}

/* A dy A^T of one image: each channel copied into pad (2 th rows of pw,
 * zero past the image), then 8 tiles a step from two rows. Whole-vector
 * stores: lanes past a tile row's last tile land on tiles written after
 * them, or on the slack past a row of Y. */
static void wino_dy(const nn_wino_geom *g, const float *dy, int cout, float *pad, float *Y,
                    size_t ldy, size_t ys) {
    int h = g->h, w = g->w, tw = g->tw, th = g->th, pw2 = g->pw;
    memset(pad, 0, sizeof(float) * (size_t)2 * th * pw2);
    const __m256 z = _mm256_setzero_ps();
    for (int o = 0; o < cout; o++) {
        const float *dc = dy + (size_t)o * h * w;
        for (int yy = 0; yy < h; yy++)
            memcpy(pad + (size_t)yy * pw2, dc + (size_t)yy * w, sizeof(float) * w);
        float *yo = Y + (size_t)o * ldy;
        for (int ty = 0; ty < th; ty++)
            for (int tx = 0; tx < tw; tx += 8) {
                const float *r = pad + (size_t)2 * ty * pw2 + 2 * tx;
                __m256 v0 = _mm256_loadu_ps(r), v1 = _mm256_loadu_ps(r + 8);
                __m256 v2 = _mm256_loadu_ps(r + pw2), v3 = _mm256_loadu_ps(r + pw2 + 8);
                __m256 a = even(v0, v1), b = odd(v0, v1), c = even(v2, v3), d = odd(v2, v3);
                __m256 q[4][2] = {{a, b},
                                  {_mm256_add_ps(a, c), _mm256_add_ps(b, d)},
                                  {_mm256_sub_ps(a, c), _mm256_sub_ps(b, d)},
                                  {_mm256_sub_ps(z, c), _mm256_sub_ps(z, d)}};
                float *dst = yo + (long)ty * tw + tx;
                for (int s = 0; s < 4; s++) {
                    __m256 u = q[s][0], v = q[s][1];
                    _mm256_storeu_ps(dst + (size_t)(4 * s) * ys, u);
                    _mm256_storeu_ps(dst + (size_t)(4 * s + 1) * ys, _mm256_add_ps(u, v));
                    _mm256_storeu_ps(dst + (size_t)(4 * s + 2) * ys, _mm256_sub_ps(u, v));
                    _mm256_storeu_ps(dst + (size_t)(4 * s + 3) * ys, _mm256_sub_ps(z, v));
                }
            }
    }
}

const nn_kern nn_kern_avx2 = {
    .isa = NN_ISA_AVX2,
    .name = "avx2",
    .mr = MR,
    .nr = NR,
    .tile = tile,
    .pack_a_cols = pack_a_cols,
    .pack_bt = pack_bt,
    .pack_conv = pack_conv,
    .phase_split = c_phase_split,
    .wino_plan = NULL,
    .wino_in = wino_in,
    .wino_out = wino_out,
    .wino_dy = wino_dy,
    .vsum = c_vsum,
    .vsqdev = c_vsqdev,
    .vsum2 = c_vsum2,
    .affine = c_affine,
    .bn_dx = c_bn_dx,
    .relu_mask = c_relu_mask,
    .add = c_add,
};
#endif
