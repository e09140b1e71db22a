/* kern_c.h: the plain-C kernels, written once. Each kern_<isa>.c includes
 * this file and is compiled with its own instruction set, so the compiler
 * vectorises these loops for it; a table takes the ones it does not write
 * by hand. The generic table (kern_generic.c) takes them all: they are the
 * reference the tests hold the others to. Only kern_*.c include it. */
#ifndef URSA_NN_KERN_C_H
#define URSA_NN_KERN_C_H

#include <string.h>

#include "kern.h"
#include "winograd.h"

/* ---- the packed product --------------------------------------------------- */

/* one finished tile row: bias, ReLU, store (v holds nr values), a run of
 * columns in one image at a time */
static inline void c_store_row(const nn_gemm_out *o, int r, int n0, int nr, const float *v) {
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

static inline void c_pack_a_cols(const float *a, int lda, int m, int k, int ktot, int k0, int MR,
                          float *ap) {
    for (int m0 = 0; m0 < m; m0 += MR) {
        float *d = ap + (size_t)m0 * ktot + (size_t)k0 * MR;
        int mr = m - m0 < MR ? m - m0 : MR;
        for (int i = 0; i < k; i++, d += MR) {
            for (int r = 0; r < mr; r++) d[r] = a[(size_t)(m0 + r) * lda + i];
            for (int r = mr; r < MR; r++) d[r] = 0;
        }
    }
}

static inline void c_pack_bt(const float *bt, int ldb, int k, int n, int W, float *bp) {
    int NP = (n + W - 1) / W;
    for (int pn = 0; pn < NP; pn++) {
        float *d = bp + (size_t)pn * k * W;
        for (int jj = 0; jj < W; jj++) {
            int j = pn * W + jj;
            if (j >= n) {
                for (int i = 0; i < k; i++) d[(size_t)i * W + jj] = 0;
                continue;
            }
            const float *s = bt + (size_t)j * ldb;
            for (int i = 0; i < k; i++) d[(size_t)i * W + jj] = s[i];
        }
    }
}

/* any kernel size: each panel column's image and first input pixel once,
 * then the rows (c, ky, kx) */
static inline void c_pack_conv(const float *x, const float *ph, size_t xper, int nimg, int cin, int h,
                        int w, int k, int s, int p, int ho, int wo, int W, float *bp, int p0,
                        int p1) {
    (void)ph; /* reads x directly */
    int hwo = ho * wo, n = nimg * hwo;
    int iy0[NN_KERN_NR_MAX], ix0[NN_KERN_NR_MAX];
    size_t base[NN_KERN_NR_MAX];
    for (int pn = p0; pn < p1; pn++) {
        for (int jj = 0; jj < W; jj++) {
            int j = pn * W + jj;
            if (j < n) {
                int q = j % hwo;
                base[jj] = (size_t)(j / hwo) * xper;
                iy0[jj] = q / wo * s - p;
                ix0[jj] = q % wo * s - p;
            } else { /* past the last column: no tap is inside */
                base[jj] = 0;
                iy0[jj] = ix0[jj] = -(1 << 20);
            }
        }
        float *d = bp + (size_t)pn * cin * k * k * W;
        for (int c = 0; c < cin; c++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++, d += W)
                    for (int jj = 0; jj < W; jj++) {
                        int iy = iy0[jj] + ky, ix = ix0[jj] + kx;
                        d[jj] = iy >= 0 && iy < h && ix >= 0 && ix < w
                                    ? x[base[jj] + ((size_t)c * h + iy) * w + ix]
                                    : 0.0f;
                    }
    }
}

static inline void c_phase_split(const float *x, size_t xper, int nimg, int cin, int h, int w,
                          float *ph, int c0, int c1) {
    (void)cin; /* [c0, c1) says which */
    size_t q = (size_t)(h / 2) * (w / 2); /* a plane */
    for (int i = 0; i < nimg; i++)
        for (int c = c0; c < c1; c++) {
            const float *xc = x + xper * i + (size_t)c * h * w;
            float *pc = ph + xper * i + (size_t)c * 4 * q;
            for (int r = 0; r < h; r++) {
                float *e = pc + (size_t)(r & 1) * 2 * q + (size_t)(r >> 1) * (w / 2), *o = e + q;
                const float *xr = xc + (size_t)r * w;
                for (int j = 0; j < w / 2; j++) {
                    e[j] = xr[2 * j];
                    o[j] = xr[2 * j + 1];
                }
            }
        }
}

/* ---- Winograd F(2x2, 3x3) ------------------------------------------------- */

/* The input rows the band's tiles read (2 g->nrows + 2 from row 2 ty0 -
 * 1), from the channel xc, into the zero-bordered copy at pad (rows of
 * g->pw, the image from column 1): rows outside the image are zeros, and
 * only the inside of a row is ever written, so the border the caller
 * zeroed once stays zero. */
static inline void c_wino_pad(const nn_wino_geom *g, const float *xc, float *pad) {
    for (int rr = 0; rr < 2 * g->nrows + 2; rr++) {
        int yy = 2 * g->ty0 - 1 + rr;
        float *d = pad + (size_t)rr * g->pw + 1;
        if (yy >= 0 && yy < g->h) memcpy(d, xc + (size_t)yy * g->w, sizeof(float) * g->w);
        else memset(d, 0, sizeof(float) * g->w);
    }
}

/* tile pp's column in V's row c: panels of W columns, each cin x W */
static inline float *c_vcol(float *V, int W, int cin, int c, long pp) {
    return V + (size_t)(pp / W) * cin * W + (size_t)c * W + pp % W;
}

static inline void c_wino_in(const nn_wino_geom *g, const float *x, size_t xper, int n,
                             float *pad, float *V, size_t st, int W, int cin, int c) {
    int pw = g->pw;
    for (int i = 0; i < n; i++) {
        c_wino_pad(g, x + xper * i, pad);
        for (int r = 0; r < g->nrows; r++)
            for (int tx = 0; tx < g->tw; tx++) {
                const float *r0 = pad + (size_t)2 * r * pw + 2 * tx, *r1 = r0 + pw, *r2 = r1 + pw,
                            *r3 = r2 + pw;
                float *vp = c_vcol(V, W, cin, c, (long)i * g->TB + (long)r * g->tw + tx);
                float t[4][4];
                for (int b = 0; b < 4; b++) { /* B^T d */
                    t[0][b] = r0[b] - r2[b];
                    t[1][b] = r1[b] + r2[b];
                    t[2][b] = r2[b] - r1[b];
                    t[3][b] = r1[b] - r3[b];
                }
                for (int a = 0; a < 4; a++) { /* (B^T d) B */
                    vp[(4 * a + 0) * st] = t[a][0] - t[a][2];
                    vp[(4 * a + 1) * st] = t[a][1] + t[a][2];
                    vp[(4 * a + 2) * st] = t[a][2] - t[a][1];
                    vp[(4 * a + 3) * st] = t[a][1] - t[a][3];
                }
            }
    }
}

static inline void c_wino_out(const nn_wino_geom *g, const float *M, size_t ms, long p0,
                              float *yo, int accumulate, float bias, int relu) {
    int h = g->h, w = g->w;
    for (int r = 0; r < g->nrows; r++)
        for (int tx = 0; tx < g->tw; tx++) {
            long p = p0 + (long)r * g->tw + tx;
            int ty = g->ty0 + r;
            float m[4][4], t[2][4];
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++) m[a][b] = M[(size_t)(a * 4 + b) * ms + p];
            for (int b = 0; b < 4; b++) { /* A^T m */
                t[0][b] = m[0][b] + m[1][b] + m[2][b];
                t[1][b] = m[1][b] - m[2][b] - m[3][b];
            }
            for (int a = 0; a < 2 && 2 * ty + a < h; a++) { /* (A^T m) A */
                float rr[2] = {t[a][0] + t[a][1] + t[a][2], t[a][1] - t[a][2] - t[a][3]};
                float *d = yo + (size_t)(2 * ty + a) * w + 2 * tx;
                for (int b = 0; b < 2 && 2 * tx + b < w; b++) {
                    float v = (accumulate ? d[b] + rr[b] : rr[b]) + bias;
                    d[b] = relu && !(v > 0) ? 0 : v;
                }
            }
        }
}

/* A dy A^T of a tile's four values (a b / c d) is 16 values: the rows (a b),
 * (a+c b+d), (a-c b-d), (-c -d), then each row (u v) becomes u, u+v, u-v,
 * -v */
static inline void c_wino_dy(const nn_wino_geom *g, const float *dy, int cout, float *pad,
                             float *Y, size_t ldy, size_t ys) {
    (void)pad;
    int h = g->h, w = g->w;
    for (int o = 0; o < cout; o++) {
        const float *dc = dy + (size_t)o * h * w;
        float *yo = Y + (size_t)o * ldy;
        for (int ty = 0; ty < g->th; ty++)
            for (int tx = 0; tx < g->tw; tx++) {
                int y0 = 2 * ty, x0 = 2 * tx, y1 = y0 + 1 < h, x1 = x0 + 1 < w;
                const float *r = dc + (size_t)y0 * w + x0;
                float a = r[0], b = x1 ? r[1] : 0, c = y1 ? r[w] : 0, d = x1 && y1 ? r[w + 1] : 0;
                float q[4][2] = {{a, b}, {a + c, b + d}, {a - c, b - d}, {-c, -d}};
                float *dst = yo + (long)ty * g->tw + tx;
                for (int i = 0; i < 4; i++) {
                    dst[(4 * i + 0) * ys] = q[i][0];
                    dst[(4 * i + 1) * ys] = q[i][0] + q[i][1];
                    dst[(4 * i + 2) * ys] = q[i][0] - q[i][1];
                    dst[(4 * i + 3) * ys] = -q[i][1];
                }
            }
    }
}

/* ---- reductions and element-wise passes ----------------------------------
 * A loop that adds into one float cannot be vectorised without -ffast-math
 * (it would change the order of the additions): these keep 8 partial sums,
 * which the compiler holds in vector registers. */

static inline float c_vsum(const float *x, size_t n) {
    float a[8] = {0};
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) a[l] += x[j + l];
    float s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    for (; j < n; j++) s += x[j];
    return s;
}

static inline float c_vsqdev(const float *x, size_t n, float mu) {
    float a[8] = {0};
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) {
            float d = x[j + l] - mu;
            a[l] += d * d;
        }
    float s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    for (; j < n; j++) s += (x[j] - mu) * (x[j] - mu);
    return s;
}

static inline void c_vsum2(const float *d, const float *x, size_t n, float mu, float *sd, float *sdx) {
    float a[8] = {0}, b[8] = {0};
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) {
            a[l] += d[j + l];
            b[l] += d[j + l] * (x[j + l] - mu);
        }
    float s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    float t = ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7]));
    for (; j < n; j++) s += d[j], t += d[j] * (x[j] - mu);
    *sd += s;
    *sdx += t;
}

static inline void c_affine(const float *x, float *y, size_t n, float sc, float sh, int relu) {
    if (relu)
        for (size_t j = 0; j < n; j++) {
            float t = x[j] * sc + sh;
            y[j] = t > 0 ? t : 0;
        }
    else
        for (size_t j = 0; j < n; j++) y[j] = x[j] * sc + sh;
}

static inline void c_bn_dx(const float *d, const float *x, float *dx, size_t n, float k1, float mdy,
                    float mu, float k2, int add) {
    if (add)
        for (size_t j = 0; j < n; j++) dx[j] += k1 * (d[j] - mdy - (x[j] - mu) * k2);
    else
        for (size_t j = 0; j < n; j++) dx[j] = k1 * (d[j] - mdy - (x[j] - mu) * k2);
}

static inline void c_relu_mask(float *d, const float *y, size_t n) {
    for (size_t j = 0; j < n; j++) d[j] = y[j] > 0 ? d[j] : 0.0f; /* a store each: no branch */
}

static inline void c_add(const float *a, const float *b, float *o, size_t n, int relu) {
    if (relu)
        for (size_t j = 0; j < n; j++) {
            float t = a[j] + b[j];
            o[j] = t > 0 ? t : 0;
        }
    else
        for (size_t j = 0; j < n; j++) o[j] = a[j] + b[j];
}

#endif
