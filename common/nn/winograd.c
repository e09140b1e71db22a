/* winograd.c: 3x3 stride-1 pad-1 convolutions as Winograd F(2x2, 3x3):
 * each 2x2 output tile costs 16 multiplies instead of 36. Weights and input
 * tiles are transformed (U = G g G^T, V = B^T d B), the 16 elementwise
 * products become 16 matrix products over channels, and A^T M A gives the
 * outputs. The gradient of the input is the same convolution with the
 * kernel flipped and its channels swapped, so it runs here too. The tile
 * transforms are the kernel table's (kern.h); the products run on gemm.h's
 * packed kernel of the same table, U and V laid out as its panels. This
 * file holds the loops around them. */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "winograd.h"

void nn_wino_geom_make(const nn_kern *kt, int h, int w, nn_wino_geom *g) {
    g->h = h;
    g->w = w;
    g->th = (h + 1) / 2;
    g->tw = (w + 1) / 2;
    g->T = g->th * g->tw;
    g->pw = 2 * ((g->tw + 7) / 8 * 8) + 16;
    g->ty0 = 0;
    g->nrows = g->th;
    g->TB = g->T;
    g->small = 0;
    if (kt->wino_plan) kt->wino_plan(g);
}

size_t nn_wino_u_n(const nn_kern *kt, int cout, int cin) {
    return 16 * nn_gemm_apack_n(kt, cout, cin);
}

/* The 16 matrices of V and M lie one cache line more than their size
 * apart: their sizes are mostly multiples of 4 KB, and a transform's 16
 * stores (or loads) a step, one a matrix, then all fell in the same L1
 * set (measured: the AVX2 input transform of resnet18's first layers took
 * 2.5x as long). */
static size_t spread(size_t n) { return n + 16; }

size_t nn_wino_v_n(const nn_kern *kt, int c, long P) {
    return 16 * spread(nn_gemm_bpack_n(kt, c, (int)P));
}

/* a weight gradient's V and Y rows: P tiles and room for whole vectors */
static long wg_ld(long P) { return (P + 15) / 16 * 16 + 16; }

size_t nn_wino_m_n(int cout, long P) { return 16 * spread((size_t)cout * wg_ld(P)) + 16; }

size_t nn_wino_wv_n(int c, long P) { return 16 * spread((size_t)c * wg_ld(P)) + 16; }

static size_t maxz(size_t a, size_t b) { return a > b ? a : b; }

size_t nn_wino_rows_n(int h, int w, long P) {
    size_t th = (size_t)(h + 1) / 2, tw = (size_t)(w + 1) / 2, T = th * tw;
    /* kern_avx512.c: four padded rows, or its small images' padded copy */
    size_t rows = 4 * (2 * ((tw + 15) / 16 * 16) + 36);
    size_t small = (2 * th + 2) * (2 * tw + 2) + 16;
    /* kern_c.h and kern_avx2.c: the pass's images' padded copies one after
     * another, (2 th + 4) rows of pw, and room to read whole vectors around */
    size_t imgs = P > (long)T ? ((size_t)P + T - 1) / T : 1;
    size_t copy = imgs * (2 * th + 4) * (2 * ((tw + 7) / 8 * 8) + 16) + 96;
    return maxz(maxz(rows, small), copy);
}

size_t nn_wino_wg_rows_n(int h, int w, long P) {
    size_t th = (size_t)(h + 1) / 2, tw = (size_t)(w + 1) / 2;
    /* dy's padded channel: kern_avx512.c's 2 th x 2 tw and an offset a
     * tile; kern_avx2.c's and kern_c.h's 2 th x pw */
    size_t dy = maxz(4 * th * tw + th * tw, 2 * th * (2 * ((tw + 7) / 8 * 8) + 16));
    return nn_wino_rows_n(h, w, P) + dy + 16;
}

void nn_wino_weights(const nn_kern *kt, const float *w, int cout, int cin, int for_dx, float *U) {
    /* for_dx: kernel k'[c][o][y][x] = k[o][c][2-y][2-x]; U is [16][cout'][cin'] */
    int co = for_dx ? cin : cout, ci = for_dx ? cout : cin, MR = kt->mr, NP = (co + MR - 1) / MR;
    size_t us = nn_gemm_apack_n(kt, co, ci); /* from one xi to the next */
    /* a weight panel's MR rows at a time, so that each of the 16 matrices
     * gets MR consecutive floats a channel (one row at a time scattered
     * single floats over 16 streams: 6-7 ms for 512 channels, a training
     * step has 2 such a layer) */
#pragma omp parallel for schedule(static) if ((long)cout * cin > 4096)
    for (int pn = 0; pn < NP; pn++)
        for (int c = 0; c < ci; c++) {
            float g[3][3][NN_KERN_MR_MAX], t[4][3][NN_KERN_MR_MAX];
            for (int l = 0; l < MR; l++) {
                int o = pn * MR + l;
                for (int y = 0; y < 3; y++)
                    for (int x = 0; x < 3; x++)
                        g[y][x][l] = o >= co ? 0.0f
                                     : for_dx ? w[(((size_t)c * cin + o) * 3 + (2 - y)) * 3 + (2 - x)]
                                              : w[(((size_t)o * cin + c) * 3 + y) * 3 + x];
            }
            for (int x = 0; x < 3; x++) /* G g */
                for (int l = 0; l < MR; l++) {
                    t[0][x][l] = g[0][x][l];
                    t[1][x][l] = 0.5f * (g[0][x][l] + g[1][x][l] + g[2][x][l]);
                    t[2][x][l] = 0.5f * (g[0][x][l] - g[1][x][l] + g[2][x][l]);
                    t[3][x][l] = g[2][x][l];
                }
            /* gemm.h's panels of MR rows, each ci x MR */
            float *d = U + (size_t)pn * MR * ci + (size_t)c * MR;
            for (int y = 0; y < 4; y++) /* (G g) G^T */
                for (int l = 0; l < MR; l++) {
                    float a = t[y][0][l], b = t[y][1][l], e = t[y][2][l];
                    d[(size_t)(y * 4 + 0) * us + l] = a;
                    d[(size_t)(y * 4 + 1) * us + l] = 0.5f * (a + b + e);
                    d[(size_t)(y * 4 + 2) * us + l] = 0.5f * (a - b + e);
                    d[(size_t)(y * 4 + 3) * us + l] = e;
                }
        }
}

/* One band of tile rows (g->ty0, g->nrows) of n images through the
 * three steps; with par, the threads share each step (inputs by channel,
 * products by matrix, outputs by channel), V and M thread 0's and the
 * padded copies each thread's own (rstride apart). */
static void wino_band(const nn_kern *kt, const nn_wino_geom *g, const float *U, int cin, int cout,
                      const float *x, size_t xper, int n, float *y, size_t yper, int accumulate,
                      const float *bias, int relu, float *V, float *M, float *rows0,
                      size_t rstride, size_t rn, int par) {
    long P = (long)n * g->TB;
    /* V[xi] is cin x P: gemm.h's panels of W columns, each cin x W */
    int W = nn_gemm_nr(kt, (int)P);
    size_t st = spread(nn_gemm_bpack_n(kt, cin, (int)P)); /* from one xi to the next */
    size_t ms = spread((size_t)cout * P), us = nn_gemm_apack_n(kt, cout, cin);
    size_t hw = (size_t)g->h * g->w;
    if (P % W) /* the last panel's columns past P: zeros, as packs leave them */
        for (int xi = 0; xi < 16; xi++)
            memset(V + xi * st + (size_t)(P / W) * cin * W, 0, sizeof(float) * cin * W);
#pragma omp parallel if (par)
    {
        float *rows = rows0 + (par ? rstride * (size_t)omp_get_thread_num() : 0);
        /* the transforms write only the inside of their padded copies: the
         * borders, zeroed here, stay zero; a channel's row of V is one
         * thread's */
        memset(rows, 0, sizeof(float) * rn);
#pragma omp for schedule(static)
        for (int c = 0; c < cin; c++)
            kt->wino_in(g, x + (size_t)c * hw, xper, n, rows, V, st, W, cin, c);
        /* the 16 products: M[xi] (cout x P) = U[xi] (cout x cin) x V[xi] (cin x P) */
#pragma omp for schedule(static)
        for (int xi = 0; xi < 16; xi++) {
            nn_gemm_out o = {M + (size_t)xi * ms, (int)P, 0, NULL, 0, 0};
            nn_gemm_packed(kt, cout, (int)P, cin, U + xi * us, V + xi * st, &o, 0, 1);
        }
        /* outputs: A^T m A */
#pragma omp for collapse(2) schedule(static)
        for (int i = 0; i < n; i++)
            for (int o = 0; o < cout; o++)
                kt->wino_out(g, M + (size_t)o * P, ms, (long)i * g->TB, y + yper * i + o * hw,
                             accumulate, bias ? bias[o] : 0.0f, relu);
    }
}

/* tile rows [r0, r1) of the image(s), a band of at most NN_WINO_BAND tiles
 * an image at a time */
static void wino_rows(const nn_kern *kt, nn_wino_geom *g, int r0, int r1, const float *U,
                      int cin, int cout, const float *x, size_t xper, int n, float *y,
                      size_t yper, int accumulate, const float *bias, int relu, float *V,
                      float *M, float *rows, size_t rstride, size_t rn, int par) {
    int band = g->T > NN_WINO_BAND ? (NN_WINO_BAND + g->tw - 1) / g->tw : g->th;
    for (int ty0 = r0; ty0 < r1; ty0 += band) {
        g->ty0 = ty0;
        g->nrows = r1 - ty0 < band ? r1 - ty0 : band;
        g->TB = g->nrows * g->tw;
        wino_band(kt, g, U, cin, cout, x, xper, n, y, yper, accumulate, bias, relu, V, M, rows,
                  rstride, rn, par);
    }
}

/* an image of this many tiles or more is split between the threads by tile
 * rows, each running all three steps on its own (one parallel region, no
 * barrier inside); fewer (deep layers, whose transformed weights are what
 * is large) share each step, so each matrix of U is read by one thread */
#define SPLIT_T 128

void nn_wino_conv(const nn_kern *kt, const float *U, int cin, int cout, const float *x,
                  size_t xper, int h, int w, int n, float *y, size_t yper, int accumulate,
                  const float *bias, int relu, float *V, float *M, float *rows, size_t tstride,
                  int par) {
    nn_wino_geom g;
    nn_wino_geom_make(kt, h, w, &g);
    size_t rn = nn_wino_rows_n(h, w, (long)n * g.T);
    if (par && n == 1 && g.T >= SPLIT_T && g.th >= 2 && omp_get_max_threads() > 1) {
#pragma omp parallel
        {
            int t = omp_get_thread_num(), T = omp_get_num_threads();
            nn_wino_geom gt = g;
            size_t off = tstride * (size_t)t;
            wino_rows(kt, &gt, g.th * t / T, g.th * (t + 1) / T, U, cin, cout, x, xper, n, y,
                      yper, accumulate, bias, relu, V + off, M + off, rows + off, 0, rn, 0);
        }
        return;
    }
    wino_rows(kt, &g, 0, g.th, U, cin, cout, x, xper, n, y, yper, accumulate, bias, relu, V, M,
              rows, tstride, rn, par);
}

/* ---- weight gradients ------------------------------------------------------
 * dL/dU[xi] = sum over tiles of (A dy A^T)[xi] * (B^T d B)[xi], elementwise
 * per (o, c): 16 products over the tiles, M[xi] (cout x cin) += Y[xi] (cout
 * x P) V[xi]^T; then dL/dw = G^T M G. Both operands are packed from rows
 * whose inner dimension is the tiles. */

void nn_wino_wgrad(const nn_kern *kt, const float *x, size_t xper, const float *dy, size_t yper,
                   int cin, int cout, int h, int w, int n, float *M, float *V, float *Y, float *ap,
                   float *bp, float *rows, size_t rows_n) {
    (void)rows_n;
    nn_wino_geom g;
    nn_wino_geom_make(kt, h, w, &g);
    long P = (long)n * g.T, ld = wg_ld(P);
    /* plain rows of ld (one panel that wide): room for whole vectors */
    size_t rn = nn_wino_rows_n(h, w, P);
    memset(rows, 0, sizeof(float) * rn);
    size_t vs = spread((size_t)cin * ld), ys = spread((size_t)cout * ld);
    for (int c = 0; c < cin; c++)
        kt->wino_in(&g, x + (size_t)c * h * w, xper, n, rows, V, vs, (int)ld, cin, c);
    float *pad = rows + rn;
    for (int i = 0; i < n; i++)
        kt->wino_dy(&g, dy + yper * i, cout, pad, Y + (long)i * g.T, (size_t)ld,
                    ys);
    for (int xi = 0; xi < 16; xi++) {
        nn_gemm_pack_a_cols(kt, Y + (size_t)xi * ys, (int)ld, cout, (int)P, (int)P, 0, ap);
        nn_gemm_pack_bt(kt, V + (size_t)xi * vs, (int)ld, (int)P, cin, bp);
        nn_gemm_out o = {M + (size_t)xi * cout * cin, cin, 0, NULL, 0, 1};
        nn_gemm_packed(kt, cout, cin, (int)P, ap, bp, &o, 0, 1);
    }
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
