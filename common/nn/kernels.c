/* kernels.c: im2col/col2im under the fast convolution, and the naive
 * direct convolution it is tested against; see nn.h. */
#include <string.h>

#include "nn.h"

/* col has rows (c, ky, kx) and, per row, ho*wo entries for this image,
 * rows ldc apart (ldc > ho*wo when several images share one matrix). */
void nn_im2col(const float *x, int cin, int h, int w, int k, int s, int p, int ho, int wo,
               float *col, int ldc) {
#pragma omp parallel for schedule(static) if (cin * h * w > 16384)
    for (int c = 0; c < cin; c++) {
        const float *xc = x + (size_t)c * h * w;
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *row = col + (size_t)((c * k + ky) * k + kx) * ldc;
                for (int oy = 0; oy < ho; oy++) {
                    int iy = oy * s - p + ky;
                    float *r = row + (size_t)oy * wo;
                    if (iy < 0 || iy >= h) {
                        memset(r, 0, sizeof(float) * (size_t)wo);
                        continue;
                    }
                    const float *xr = xc + (size_t)iy * w;
                    /* ox range where ix = ox*s - p + kx is inside [0, w) */
                    int lo = 0, hi = wo;
                    while (lo < wo && lo * s - p + kx < 0) r[lo++] = 0;
                    while (hi > lo && (hi - 1) * s - p + kx >= w) r[--hi] = 0;
                    if (s == 1) {
                        memcpy(r + lo, xr + lo - p + kx, sizeof(float) * (size_t)(hi - lo));
                    } else {
                        for (int ox = lo; ox < hi; ox++) r[ox] = xr[ox * s - p + kx];
                    }
                }
            }
    }
}

void nn_col2im(const float *col, int ldc, int cin, int h, int w, int k, int s, int p, int ho,
               int wo, float *dx) {
#pragma omp parallel for schedule(static) if (cin * h * w > 16384)
    for (int c = 0; c < cin; c++) {
        float *xc = dx + (size_t)c * h * w;
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const float *row = col + (size_t)((c * k + ky) * k + kx) * ldc;
                for (int oy = 0; oy < ho; oy++) {
                    int iy = oy * s - p + ky;
                    if (iy < 0 || iy >= h) continue;
                    const float *r = row + (size_t)oy * wo;
                    float *xr = xc + (size_t)iy * w;
                    int lo = 0, hi = wo;
                    while (lo < wo && lo * s - p + kx < 0) lo++;
                    while (hi > lo && (hi - 1) * s - p + kx >= w) hi--;
                    if (s == 1) {
                        float *xo = xr - p + kx;
                        for (int ox = lo; ox < hi; ox++) xo[ox] += r[ox];
                    } else {
                        for (int ox = lo; ox < hi; ox++) xr[ox * s - p + kx] += r[ox];
                    }
                }
            }
    }
}

void nn_conv_fwd_naive(const float *x, int n, int cin, int h, int w, const float *wt,
                       const float *bias, int cout, int k, int s, int p, float *y) {
    int ho = (h + 2 * p - k) / s + 1, wo = (w + 2 * p - k) / s + 1;
    for (int i = 0; i < n; i++)
        for (int o = 0; o < cout; o++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    double acc = bias ? bias[o] : 0;
                    for (int c = 0; c < cin; c++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * s - p + ky, ix = ox * s - p + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                acc += (double)x[(((size_t)i * cin + c) * h + iy) * w + ix] *
                                       wt[(((size_t)o * cin + c) * k + ky) * k + kx];
                            }
                    y[(((size_t)i * cout + o) * ho + oy) * wo + ox] = (float)acc;
                }
}

void nn_conv_bwd_naive(const float *x, int n, int cin, int h, int w, const float *wt, int cout,
                       int k, int s, int p, const float *dy, float *dx, float *dw, float *db) {
    int ho = (h + 2 * p - k) / s + 1, wo = (w + 2 * p - k) / s + 1;
    for (int i = 0; i < n; i++)
        for (int o = 0; o < cout; o++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    float g = dy[(((size_t)i * cout + o) * ho + oy) * wo + ox];
                    if (db) db[o] += g;
                    for (int c = 0; c < cin; c++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * s - p + ky, ix = ox * s - p + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                size_t xi = (((size_t)i * cin + c) * h + iy) * w + ix;
                                size_t wi = (((size_t)o * cin + c) * k + ky) * k + kx;
                                if (dw) dw[wi] += g * x[xi];
                                if (dx) dx[xi] += g * wt[wi];
                            }
                }
}
