/* ops.c: the layers other than convolution, and the loss; see ops.h and
 * nn.h. Element-wise loops run on OpenMP threads when they are long enough
 * to pay for them, their inner passes on the kernel table's vector code. */
#include "ops.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "nn.h"

/* ---- batch norm ----------------------------------------------------------- */

void nn_bn_forward(const nn_kern *kt, float *y, float *mean, float *istd, const float *x,
                   float *gamma, float *beta, float *rmean, float *rvar, int N, int C, size_t HW,
                   float eps, float momentum, int train, int calib, int relu, int nth) {
    size_t per = (size_t)C * HW;
#pragma omp parallel for schedule(static) num_threads(nth) if ((size_t)N * per > 32768)
    for (int c = 0; c < C; c++) {
        float mu, is;
        if (train) {
            double s = 0, ss = 0, cnt = (double)N * HW;
            for (int i = 0; i < N; i++) s += kt->vsum(x + per * i + c * HW, HW);
            double m = s / cnt;
            for (int i = 0; i < N; i++) ss += kt->vsqdev(x + per * i + c * HW, HW, (float)m);
            double var = ss / cnt;
            mu = (float)m;
            is = (float)(1.0 / sqrt(var + eps));
            mean[c] = mu;
            istd[c] = is;
            if (calib) { /* start as the identity on this batch */
                gamma[c] = (float)sqrt(var + eps);
                beta[c] += mu;
                rmean[c] = mu;
                rvar[c] = (float)var;
            } else if (cnt > 1) { /* one value has no variance: PyTorch refuses it */
                rmean[c] = (1 - momentum) * rmean[c] + momentum * mu;
                rvar[c] = (1 - momentum) * rvar[c] + momentum * (float)(ss / (cnt - 1));
            }
        } else {
            mu = rmean[c];
            is = 1.0f / sqrtf(rvar[c] + eps);
        }
        float sc = gamma[c] * is, sh = beta[c] - mu * sc;
        for (int i = 0; i < N; i++)
            kt->affine(x + per * i + c * HW, y + per * i + c * HW, HW, sc, sh, relu);
    }
}

void nn_bn_backward(const nn_kern *kt, float *dx, float *dgamma, float *dbeta, const float *dy,
                    const float *x, const float *gamma, const float *mean, const float *istd,
                    int N, int C, size_t HW, int fresh, int nth) {
    size_t per = (size_t)C * HW;
#pragma omp parallel for schedule(static) num_threads(nth) if ((size_t)N * per > 32768)
    for (int c = 0; c < C; c++) {
        float mu = mean[c], is = istd[c];
        double sdy = 0, sdyx = 0;
        for (int i = 0; i < N; i++) {
            float a = 0, b = 0;
            kt->vsum2(dy + per * i + c * HW, x + per * i + c * HW, HW, mu, &a, &b);
            sdy += a;
            sdyx += b;
        }
        sdyx *= is; /* sum of dy * xhat */
        if (dgamma) dgamma[c] += (float)sdyx;
        if (dbeta) dbeta[c] += (float)sdy;
        if (!dx) continue;
        double cnt = (double)N * HW;
        float k1 = gamma[c] * is, mdy = (float)(sdy / cnt), k2 = is * (float)(sdyx / cnt);
        for (int i = 0; i < N; i++)
            kt->bn_dx(dy + per * i + c * HW, x + per * i + c * HW, dx + per * i + c * HW, HW, k1,
                      mdy, mu, k2, !fresh);
    }
}

/* ---- ReLU, add ------------------------------------------------------------ */

void nn_relu_forward(float *y, const float *x, size_t n) {
    for (size_t j = 0; j < n; j++) y[j] = x[j] > 0 ? x[j] : 0;
}

void nn_relu_backward(float *dx, const float *dy, const float *y, size_t n, int nth) {
#pragma omp parallel for schedule(static) num_threads(nth) if (n > 65536)
    for (size_t j = 0; j < n; j++) dx[j] += y[j] > 0 ? dy[j] : 0;
}

void nn_add_forward(const nn_kern *kt, float *y, const float *a, const float *b, size_t n,
                    int relu, int nth) {
    if (n <= 65536 || nth < 2) {
        kt->add(a, b, y, n, relu);
        return;
    }
#pragma omp parallel num_threads(nth)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        size_t lo = n * t / T, hi = n * (t + 1) / T;
        kt->add(a + lo, b + lo, y + lo, hi - lo, relu);
    }
}

/* ---- pooling -------------------------------------------------------------- */

/* max that lets NaN through (the first in a row window; rows combine with
 * a plain max so they vectorise) */
static inline float maxn(float best, float t) { return t > best || t != t ? t : best; }

/* separable: the max over each row's windows, then over the rows */
void nn_maxpool_forward(float *y, const float *x, int NC, int H, int W, int k, int s, int p,
                        int Ho, int Wo, float *rows, size_t rows_n, int nth) {
#pragma omp parallel num_threads(nth)
    {
        float *rm = rows + rows_n * omp_get_thread_num();
#pragma omp for schedule(static)
        for (long q = 0; q < NC; q++) {
            const float *xi = x + (size_t)q * H * W;
            float *yo = y + (size_t)q * Ho * Wo;
            for (int iy = 0; iy < H; iy++) {
                const float *r = xi + (size_t)iy * W;
                float *o = rm + (size_t)iy * Wo;
                int ox0 = 0;
                if (k == 3 && s == 2 && p == 1 && Wo > 2 && 2 * (Wo - 2) + 1 < W) {
                    /* resnet's stem pool: the interior without bounds */
                    o[0] = maxn(r[0], r[1]);
                    for (int ox = 1; ox < Wo - 1; ox++) {
                        float a = r[2 * ox - 1], b = r[2 * ox], c = r[2 * ox + 1];
                        float m1 = a > b ? a : b;
                        o[ox] = m1 > c ? m1 : c;
                    }
                    ox0 = Wo - 1;
                }
                for (int ox = ox0; ox < Wo; ox++) {
                    int x0 = ox * s - p, x1 = x0 + k;
                    if (x0 < 0) x0 = 0;
                    if (x1 > W) x1 = W;
                    float best = -FLT_MAX;
                    for (int ix = x0; ix < x1; ix++) best = maxn(best, r[ix]);
                    o[ox] = best;
                }
            }
            for (int oy = 0; oy < Ho; oy++) {
                int y0 = oy * s - p, y1 = y0 + k;
                if (y0 < 0) y0 = 0;
                if (y1 > H) y1 = H;
                float *o = yo + (size_t)oy * Wo;
                for (int ox = 0; ox < Wo; ox++) o[ox] = -FLT_MAX;
                for (int iy = y0; iy < y1; iy++) {
                    const float *r = rm + (size_t)iy * Wo;
                    for (int ox = 0; ox < Wo; ox++) o[ox] = o[ox] > r[ox] ? o[ox] : r[ox];
                }
            }
        }
    }
}

void nn_maxpool_backward(float *dx, const float *dy, const float *x, int NC, int H, int W, int k,
                         int s, int p, int Ho, int Wo, int nth) {
#pragma omp parallel for schedule(static) num_threads(nth)
    for (long q = 0; q < NC; q++) {
        const float *xi = x + (size_t)q * H * W;
        const float *g = dy + (size_t)q * Ho * Wo;
        float *o = dx + (size_t)q * H * W;
        for (int oy = 0; oy < Ho; oy++) {
            int y0 = oy * s - p, y1 = y0 + k;
            if (y0 < 0) y0 = 0;
            if (y1 > H) y1 = H;
            for (int ox = 0; ox < Wo; ox++) {
                int x0 = ox * s - p, x1 = x0 + k;
                if (x0 < 0) x0 = 0;
                if (x1 > W) x1 = W;
                /* the first maximum in scan order, as PyTorch picks it */
                int bi = y0 * W + x0;
                float best = xi[bi];
                for (int iy = y0; iy < y1; iy++) {
                    const float *r = xi + (size_t)iy * W;
                    for (int ix = x0; ix < x1; ix++)
                        if (r[ix] > best) {
                            best = r[ix];
                            bi = iy * W + ix;
                        }
                }
                o[bi] += g[oy * Wo + ox];
            }
        }
    }
}

void nn_avgpool_forward(float *y, const float *x, int NC, int H, int W, int k, int s, int Ho,
                        int Wo) {
    float inv = 1.0f / (float)(k * k);
    for (long q = 0; q < NC; q++) {
        const float *xi = x + (size_t)q * H * W;
        float *yo = y + (size_t)q * Ho * Wo;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                float acc = 0;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) acc += xi[(oy * s + ky) * W + ox * s + kx];
                yo[oy * Wo + ox] = acc * inv;
            }
    }
}

void nn_avgpool_backward(float *dx, const float *dy, int NC, int H, int W, int k, int s, int Ho,
                         int Wo) {
    float inv = 1.0f / (float)(k * k);
    for (long q = 0; q < NC; q++) {
        const float *g = dy + (size_t)q * Ho * Wo;
        float *o = dx + (size_t)q * H * W;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++)
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++)
                        o[(oy * s + ky) * W + ox * s + kx] += g[oy * Wo + ox] * inv;
    }
}

void nn_gpool_forward(float *y, const float *x, int NC, size_t HW, int max) {
    for (long q = 0; q < NC; q++) {
        const float *r = x + (size_t)q * HW;
        float acc = max ? -FLT_MAX : 0;
        for (size_t j = 0; j < HW; j++) acc = max ? (r[j] > acc ? r[j] : acc) : acc + r[j];
        y[q] = max ? acc : acc / (float)HW;
    }
}

void nn_gpool_backward(float *dx, const float *dy, const float *x, int NC, size_t HW, int max) {
    for (long q = 0; q < NC; q++) {
        const float *r = x + (size_t)q * HW;
        float *o = dx + (size_t)q * HW;
        if (!max) {
            float g = dy[q] / (float)HW;
            for (size_t j = 0; j < HW; j++) o[j] += g;
        } else {
            size_t bj = 0;
            for (size_t j = 1; j < HW; j++)
                if (r[j] > r[bj]) bj = j;
            o[bj] += dy[q];
        }
    }
}

/* ---- concat, dropout ------------------------------------------------------ */

void nn_concat_forward(float *y, const float *a, const float *b, int N, size_t na, size_t nb) {
    for (int n = 0; n < N; n++) {
        memmove(y + (na + nb) * n, a + na * n, sizeof(float) * na);
        memmove(y + (na + nb) * n + na, b + nb * n, sizeof(float) * nb);
    }
}

void nn_concat_backward(float *da, float *db, const float *dy, int N, size_t na, size_t nb) {
    for (int n = 0; n < N; n++) {
        if (da)
            for (size_t j = 0; j < na; j++) da[na * n + j] += dy[(na + nb) * n + j];
        if (db)
            for (size_t j = 0; j < nb; j++) db[nb * n + j] += dy[(na + nb) * n + na + j];
    }
}

static inline uint64_t xs(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

void nn_dropout_forward(float *y, uint8_t *mask, const float *x, size_t n, float p,
                        uint64_t *rng) {
    if (!mask || p <= 0) {
        if (y != x) memcpy(y, x, sizeof(float) * n);
        return;
    }
    float sc = 1.0f / (1.0f - p);
    uint32_t thr = (uint32_t)(p * 4294967296.0);
    for (size_t j = 0; j < n; j++) {
        mask[j] = (uint32_t)(xs(rng) >> 32) >= thr;
        y[j] = mask[j] ? x[j] * sc : 0;
    }
}

void nn_dropout_backward(float *dx, const float *dy, const uint8_t *mask, size_t n, float p) {
    if (!mask || p <= 0) {
        for (size_t j = 0; j < n; j++) dx[j] += dy[j];
        return;
    }
    float sc = 1.0f / (1.0f - p);
    for (size_t j = 0; j < n; j++) dx[j] += mask[j] ? dy[j] * sc : 0;
}

/* ---- linear --------------------------------------------------------------- */

/* sgemm on nth threads: OpenBLAS runs single-threaded (the engine threads
 * with OpenMP) and each thread multiplies its own slice of C, split along
 * the longer side so the operand every thread must pack in full is the
 * smaller one. */
static void pgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, const float *A,
                  int lda, const float *B, int ldb, float beta, float *C, int ldc, int nt) {
    if (nt < 2 || (double)M * N * K < 2e5) {
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int split_n = N >= M;
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int len = split_n ? N : M;
        int step = ((len + T - 1) / T + 15) & ~15;
        int lo = t * step, hi = lo + step < len ? lo + step : len;
        if (lo < hi) {
            if (split_n) {
                const float *b = tb == CblasNoTrans ? B + lo : B + (size_t)lo * ldb;
                cblas_sgemm(CblasRowMajor, ta, tb, M, hi - lo, K, 1.0f, A, lda, b, ldb, beta,
                            C + lo, ldc);
            } else {
                const float *a = ta == CblasNoTrans ? A + (size_t)lo * lda : A + lo;
                cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, N, K, 1.0f, a, lda, B, ldb, beta,
                            C + (size_t)lo * ldc, ldc);
            }
        }
    }
}

void nn_linear_forward(float *y, const float *x, const float *w, const float *b, int N, int in,
                       int out, int nth) {
    pgemm(CblasNoTrans, CblasTrans, N, out, in, x, in, w, in, 0.0f, y, out, nth);
    if (b)
        for (int i = 0; i < N; i++)
            for (int o = 0; o < out; o++) y[(size_t)i * out + o] += b[o];
}

void nn_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, int N, int in, int out, int nth) {
    if (dw) pgemm(CblasTrans, CblasNoTrans, out, in, N, dy, out, x, in, 1.0f, dw, in, nth);
    if (db)
        for (int i = 0; i < N; i++)
            for (int o = 0; o < out; o++) db[o] += dy[(size_t)i * out + o];
    if (dx) pgemm(CblasNoTrans, CblasNoTrans, N, in, out, dy, out, w, in, 1.0f, dx, in, nth);
}

/* ---- softmax and the loss ------------------------------------------------- */

void nn_softmax(float *x, int n, int c) {
    for (int i = 0; i < n; i++) {
        float *r = x + (size_t)i * c, mx = r[0], s = 0;
        for (int j = 1; j < c; j++) mx = r[j] > mx ? r[j] : mx;
        for (int j = 0; j < c; j++) s += (r[j] = expf(r[j] - mx));
        for (int j = 0; j < c; j++) r[j] /= s;
    }
}

float nn_softmax_ce_ls(const float *logits, const int *t, int n, int c, float eps, float *d) {
    double loss = 0;
    for (int i = 0; i < n; i++)
        if (t[i] < 0 || t[i] >= c) return NAN; /* a label the model has no class for */
    for (int i = 0; i < n; i++) {
        const float *r = logits + (size_t)i * c;
        float mx = r[0];
        for (int j = 1; j < c; j++) mx = r[j] > mx ? r[j] : mx;
        double s = 0, sl = 0;
        for (int j = 0; j < c; j++) s += exp((double)r[j] - mx), sl += r[j];
        double lse = mx + log(s);
        /* -sum_j q_j log p_j, q = (1 - eps) onehot + eps / c */
        loss += (1 - eps) * (lse - r[t[i]]) + eps * (lse - sl / c);
        if (d)
            for (int j = 0; j < c; j++)
                d[(size_t)i * c + j] =
                    (float)((exp((double)r[j] - lse) - (1 - eps) * (j == t[i]) - eps / c) / n);
    }
    return (float)(loss / n);
}

float nn_softmax_ce(const float *logits, const int *t, int n, int c, float *d) {
    return nn_softmax_ce_ls(logits, t, n, c, 0.0f, d);
}
