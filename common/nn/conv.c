/* conv.c: convolutions forward and backward, and the naive direct
 * convolution the tests hold them to.
 *
 * Every product runs on gemm.h's packed kernel of the executor's table
 * (kern.h). 3x3 stride-1 layers with 16 channels or more go through
 * Winograd F(2x2,3x3) (winograd.h): forward, input gradient and weight
 * gradient. The others: forward, im2col written straight into packed panels
 * with bias and ReLU on the way out; weight gradient, dY's rows and
 * im2col's rows (transposed) packed across images; input gradient, W^T dY
 * into columns, then col2im. When the output is small (deep layers)
 * several images share one product so it stays wide enough to run at
 * speed.
 *
 * Threads: a batch of one image (or one thread) shares each product among
 * the threads, each packing its share of the panels; a larger batch gives
 * each thread its own images, buffers and weight-gradient sums, added up at
 * the end. */
#include <omp.h>
#include <string.h>

#include "gemm.h"
#include "plan.h"
#include "winograd.h"

/* Winograd pays when the channel products are deep enough */
#define WINO_MIN_CH 16

int nn_conv_chunk(const nn_exec *e, int hwo) {
    int c = (e->chunk_min + hwo - 1) / hwo;
    return c < 1 ? 1 : c > e->n ? e->n : c;
}

/* about 256 tiles a pass, so that the transformed inputs and the products
 * stay in L2 (1024 was 1.1-1.4x slower on the small resnet's 14x14 layers,
 * URSA_NN_PROFILE=nodes) */
int nn_wino_chunk(const nn_exec *e, int tiles) {
    int c = (256 + tiles - 1) / tiles;
    return c < 1 ? 1 : c > e->n ? e->n : c;
}

int nn_conv_wino_ok(const nn_exec *e, const nn_node *nd, const nn_val *y) {
    return nd->k == 3 && nd->stride == 1 && nd->pad == 1 && nd->cout >= WINO_MIN_CH &&
           e->m->param[nd->w].shape[1] >= WINO_MIN_CH &&
           (long)e->n * ((y->h + 1) / 2) * ((y->w + 1) / 2) >= 16;
}

static int trainable(const nn_model *m, int p) {
    return p >= 0 && m->param[p].g && !m->param[p].frozen;
}

size_t nn_conv_pack_n(const nn_exec *e, const nn_node *nd, int dx) {
    const nn_param *W = &e->m->param[nd->w];
    int cout = W->shape[0], cin = W->shape[1], kk = (int)(W->n / (size_t)cout);
    if (e->np[nd - e->m->node].wino)
        return dx ? nn_wino_u_n(e->kt, cin, cout) : nn_wino_u_n(e->kt, cout, cin);
    return dx ? nn_gemm_apack_n(e->kt, kk, cout) : nn_gemm_apack_n(e->kt, cout, kk);
}

/* node nd's weights packed for its forward product (dx = 0) or its input
 * gradient's (dx = 1: W^T, or the flipped kernel's transform): kept per
 * node in inference and packed again only when the weights changed;
 * packed at each use in training, where every step changes them */
static const float *packed(nn_exec *e, const nn_node *nd, int dx) {
    nn_model *m = e->m;
    nn_nplan *np = &e->np[nd - m->node];
    const nn_param *W = &m->param[nd->w];
    int cout = W->shape[0], cin = W->shape[1], kk = (int)(W->n / (size_t)cout);
    float *dst = e->train ? (dx ? e->pkd : e->pkf) : np->pk;
    if (!e->train && np->pkver == m->wver + 1) return dst;
    if (np->wino) nn_wino_weights(e->kt, W->w, cout, cin, dx, dst);
    else if (dx) nn_gemm_pack_at(e->kt, W->w, kk, kk, cout, dst);
    else nn_gemm_pack_a(e->kt, W->w, kk, cout, kk, dst);
    if (!e->train) np->pkver = m->wver + 1;
    return dst;
}

/* ---- Winograd ------------------------------------------------------------ */

/* images [lo, hi) through Winograd: forward (x -> y) or, with dy, the
 * input gradient (dy -> dx, added to it, or written when fresh); thread t's
 * buffers, or with par every thread sharing each pass */
static void wino_range(nn_exec *e, const nn_node *nd, const float *U, const nn_val *x,
                       const nn_val *y, const float *dy, float *dx, int fresh, int lo, int hi,
                       int t, int par) {
    int T = ((y->h + 1) / 2) * ((y->w + 1) / 2), ch = nn_wino_chunk(e, T);
    nn_scratch *s = &e->ts[t];
    const float *bias = nd->b >= 0 ? e->m->param[nd->b].w : NULL;
    for (int i0 = lo; i0 < hi; i0 += ch) {
        int cn = hi - i0 < ch ? hi - i0 : ch;
        if (dx)
            nn_wino_conv(e->kt, U, nd->cout, x->c, dy + y->per * i0, y->per, y->h, y->w, cn,
                         dx + x->per * i0, x->per, !fresh, NULL, 0, s->wv, s->wm, s->scr,
                         e->tstride, par);
        else /* bias and ReLU on the way out */
            nn_wino_conv(e->kt, U, x->c, nd->cout, x->d + x->per * i0, x->per, y->h, y->w, cn,
                         y->d + y->per * i0, y->per, 0, bias, nd->relu, s->wv, s->wm, s->scr,
                         e->tstride, par);
    }
}

/* images [lo, hi)'s weight gradient through Winograd, added to dw; thread
 * t's buffers */
static void wino_wgrad_range(nn_exec *e, const nn_node *nd, const nn_val *x, const nn_val *y,
                             const float *dy, float *dw, int lo, int hi, int t) {
    int T = ((y->h + 1) / 2) * ((y->w + 1) / 2), ch = nn_wino_chunk(e, T), cin = x->c;
    nn_scratch *s = &e->ts[t];
    memset(s->wgm, 0, sizeof(float) * 16 * cin * nd->cout);
    for (int i0 = lo; i0 < hi; i0 += ch) {
        int cn = hi - i0 < ch ? hi - i0 : ch;
        nn_wino_wgrad(e->kt, x->d + x->per * i0, x->per, dy + y->per * i0, y->per, cin, nd->cout,
                      y->h, y->w, cn, s->wgm, s->wv, s->wm, s->apk, s->bpk, s->scr, e->sn.scr);
    }
    nn_wino_wgrad_finish(s->wgm, nd->cout, cin, dw);
}

/* ---- forward ------------------------------------------------------------- */

#define BARRIER(T)                                                                                 \
    do {                                                                                           \
        if ((T) > 1) {                                                                             \
            _Pragma("omp barrier")                                                                 \
        }                                                                                          \
    } while (0)

/* Images [lo, hi) through gemm.h, in chunks of images whose columns share
 * one product; worker t of T (all T call it together) packs its share of
 * each chunk's panels and multiplies its share of the tiles. */
static void fwd_gemm(nn_exec *e, const nn_node *nd, const float *ap, const nn_val *x,
                     const nn_val *y, int lo, int hi, float *bp, float *ph, int have_ph, int t,
                     int T) {
    const nn_kern *kt = e->kt;
    int k = nd->k, hwo = y->h * y->w, K = x->c * k * k, ch = nn_conv_chunk(e, hwo);
    nn_gemm_out o = {NULL, hwo, y->per, nd->b >= 0 ? e->m->param[nd->b].w : NULL, nd->relu, 0};
    if (!nn_gemm_phases_ok(x->h, x->w, nd->stride, y->h, y->w)) ph = NULL;
    for (int i0 = lo; i0 < hi; i0 += ch) {
        int cn = hi - i0 < ch ? hi - i0 : ch, N = cn * hwo, NP = nn_gemm_npanels(kt, N);
        const float *xi = x->d + x->per * i0;
        if (ph && !have_ph) {
            nn_gemm_phase_split(kt, xi, x->per, cn, x->c, x->h, x->w, ph, x->c * t / T,
                                x->c * (t + 1) / T);
            BARRIER(T);
        }
        nn_gemm_pack_conv(kt, xi, ph, x->per, cn, x->c, x->h, x->w, k, nd->stride, nd->pad, y->h,
                          y->w, bp, NP * t / T, NP * (t + 1) / T);
        BARRIER(T);
        o.c = y->d + y->per * i0;
        nn_gemm_packed(kt, nd->cout, N, K, ap, bp, &o, t, T);
        BARRIER(T); /* the next chunk's panels go where these are */
    }
}

void nn_conv_forward(nn_exec *e, const nn_node *nd, const nn_val *x, nn_val *y) {
    const nn_nplan *np = &e->np[nd - e->m->node];
    const float *ap = packed(e, nd, 0);
    int team = e->nb == 1 || e->nth == 1;
    if (np->wino) {
        if (team) {
            wino_range(e, nd, ap, x, y, NULL, NULL, 0, 0, e->nb, 0, 1);
        } else {
#pragma omp parallel num_threads(e->nth)
            {
                int t = omp_get_thread_num(), T = omp_get_num_threads();
                wino_range(e, nd, ap, x, y, NULL, NULL, 0, e->nb * t / T, e->nb * (t + 1) / T, t,
                           0);
            }
        }
        return;
    }
    /* a stride-2 input's planes, whole when each worker's images make one
     * chunk: the next convolution of the same input (the block's
     * downsample) reads them again */
    int split = nn_gemm_phases_ok(x->h, x->w, nd->stride, y->h, y->w);
    int whole = (team ? e->nb : (e->nb + e->nth - 1) / e->nth) <= nn_conv_chunk(e, y->h * y->w);
    int have = split && whole && e->ph_val == nd->in[0];
    if (team) {
#pragma omp parallel num_threads(e->nth) if (e->nth > 1)
        fwd_gemm(e, nd, ap, x, y, 0, e->nb, e->ts[0].col, e->ts[0].ph, have, omp_get_thread_num(),
                 omp_get_num_threads());
    } else {
#pragma omp parallel num_threads(e->nth)
        {
            int t = omp_get_thread_num(), T = omp_get_num_threads();
            fwd_gemm(e, nd, ap, x, y, e->nb * t / T, e->nb * (t + 1) / T, e->ts[t].col,
                     e->ts[t].ph, have, 0, 1);
        }
    }
    if (split) e->ph_val = whole ? nd->in[0] : -1;
}

/* ---- backward ------------------------------------------------------------ */

/* Images [lo, hi) of a conv's weight, bias and input gradients through
 * gemm.h; worker t of T, all T calling it together with the same scratch s
 * (or T = 1 with a thread's own). dw and db are added to; so is dx (the
 * caller zeroed a new one). at: the weights packed as W^T. */
static void bwd_gemm(nn_exec *e, const nn_node *nd, const nn_val *x, const nn_val *y,
                     const float *dy, const float *at, float *dx, int lo, int hi, float *dw,
                     float *db, nn_scratch *s, int t, int T) {
    const nn_kern *kt = e->kt;
    int k = nd->k, st = nd->stride, p = nd->pad, cout = nd->cout, cin = x->c, MR = kt->mr;
    int hwo = y->h * y->w, hw = x->h * x->w, kk = cin * k * k;
    int direct = k == 1 && st == 1 && p == 0;
    int ch = nn_conv_chunk(e, hwo);
    /* this worker's channels (im2col, col2im), rows of dY (in whole panels)
     * and output channels (bias) */
    int c0 = cin * t / T, c1 = cin * (t + 1) / T;
    int MP = (cout + MR - 1) / MR, a0 = MP * t / T * MR, a1 = MP * (t + 1) / T * MR;
    if (a1 > cout) a1 = cout;
    for (int i0 = lo; i0 < hi; i0 += ch) {
        int cn = hi - i0 < ch ? hi - i0 : ch, ld = cn * hwo;
        if (dw) { /* dW (cout x kk) += dY (cout x ld) col^T (ld x kk) */
            const float *col = s->col;
            int ldc = ld;
            if (direct && cn == 1) { /* x's rows are the columns */
                col = x->d + x->per * i0;
                ldc = hwo;
            } else {
                for (int j = 0; j < cn; j++)
                    nn_im2col(x->d + x->per * (i0 + j) + (size_t)c0 * hw, c1 - c0, x->h, x->w, k,
                              st, p, y->h, y->w, s->col + (size_t)c0 * k * k * ld + (size_t)j * hwo,
                              ld);
            }
            for (int j = 0; j < cn && a0 < a1; j++)
                kt->pack_a_cols(dy + y->per * (i0 + j) + (size_t)a0 * hwo, hwo, a1 - a0, hwo, ld,
                                j * hwo, s->apk + (size_t)a0 * ld);
            BARRIER(T); /* every channel's columns are in */
            int W = nn_gemm_nr(kt, kk), NP = (kk + W - 1) / W;
            int q0 = NP * t / T, q1 = NP * (t + 1) / T;
            if (q0 < q1)
                kt->pack_bt(col + (size_t)q0 * W * ldc, ldc, ld,
                            (q1 * W < kk ? q1 * W : kk) - q0 * W, W, s->bpk + (size_t)q0 * W * ld);
            BARRIER(T);
            nn_gemm_out o = {dw, kk, 0, NULL, 0, 1};
            nn_gemm_packed(kt, cout, kk, ld, s->apk, s->bpk, &o, t, T);
            BARRIER(T); /* before the packs are written again */
        }
        if (db)
            for (int j = 0; j < cn; j++)
                for (int o = cout * t / T; o < cout * (t + 1) / T; o++)
                    db[o] += kt->vsum(dy + y->per * (i0 + j) + (size_t)o * hwo, (size_t)hwo);
        if (!dx) continue;
        /* dX's columns (kk x ld) = W^T (kk x cout) dY (cout x ld); a 1x1
         * stride-1 convolution's columns are dX itself */
        int NP = nn_gemm_npanels(kt, ld);
        nn_gemm_pack_b_imgs(kt, dy + y->per * i0, y->per, hwo, cn, cout, s->bpk, NP * t / T,
                            NP * (t + 1) / T);
        BARRIER(T);
        nn_gemm_out o = {s->col, ld, 0, NULL, 0, 0};
        if (direct) o = (nn_gemm_out){dx + x->per * i0, hwo, x->per, NULL, 0, 1};
        nn_gemm_packed(kt, kk, ld, cout, at, s->bpk, &o, t, T);
        BARRIER(T);
        if (!direct) {
            for (int j = 0; j < cn; j++)
                nn_col2im(s->col + (size_t)c0 * k * k * ld + (size_t)j * hwo, ld, c1 - c0, x->h,
                          x->w, k, st, p, y->h, y->w, dx + x->per * (i0 + j) + (size_t)c0 * hw);
            BARRIER(T);
        }
    }
}

void nn_conv_backward(nn_exec *e, const nn_node *nd, const nn_val *x, const nn_val *y, float *dy,
                      float *dx, int fresh) {
    nn_model *m = e->m;
    const nn_nplan *np = &e->np[nd - m->node];
    float *dw = trainable(m, nd->w) ? m->param[nd->w].g : NULL;
    float *db = trainable(m, nd->b) ? m->param[nd->b].g : NULL;
    int team = e->nb == 1 || e->nth == 1;
    const float *pd = dx ? packed(e, nd, 1) : NULL;
    const float *Ud = np->wino ? pd : NULL, *at = np->wino ? NULL : pd;
    /* the im2col path adds into dx; Winograd writes a fresh one */
    if (dx && fresh && !Ud) memset(dx, 0, sizeof(float) * x->per * e->nb);
    /* the weight gradient through Winograd: a thread its images (a lone
     * image on several threads: im2col, its products shared) */
    int wdw = dw && np->wino && (e->nb > 1 || e->nth == 1);
    if (team) {
#pragma omp parallel num_threads(e->nth) if (e->nth > 1)
        bwd_gemm(e, nd, x, y, dy, at, Ud ? NULL : dx, 0, e->nb, wdw ? NULL : dw, db, &e->ts[0],
                 omp_get_thread_num(), omp_get_num_threads());
        if (wdw) wino_wgrad_range(e, nd, x, y, dy, dw, 0, e->nb, 0);
        if (Ud) wino_range(e, nd, Ud, x, y, dy, dx, fresh, 0, e->nb, 0, 1);
        return;
    }
    size_t wn = m->param[nd->w].n;
#pragma omp parallel num_threads(e->nth)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int lo = e->nb * t / nt, hi = e->nb * (t + 1) / nt;
        float *mine = e->ts[t].dwt;
        if (dw || db) memset(mine, 0, sizeof(float) * (wn + (size_t)nd->cout));
        bwd_gemm(e, nd, x, y, dy, at, Ud ? NULL : dx, lo, hi, dw && !wdw ? mine : NULL,
                 db ? mine + wn : NULL, &e->ts[t], 0, 1);
        if (wdw) wino_wgrad_range(e, nd, x, y, dy, mine, lo, hi, t);
        if (Ud) wino_range(e, nd, Ud, x, y, dy, dx, fresh, lo, hi, t, 0);
#pragma omp barrier
        /* the threads' sums, each thread adding up a slice */
        if (dw || db) {
            size_t tot = wn + (size_t)nd->cout, a = tot * t / nt, b = tot * (t + 1) / nt;
            for (size_t j = a; j < b; j++) {
                float acc = 0;
                for (int q = 0; q < nt; q++) acc += e->ts[q].dwt[j];
                if (j < wn) {
                    if (dw) dw[j] += acc;
                } else if (db) {
                    db[j - wn] += acc;
                }
            }
        }
    }
}

/* ---- im2col, col2im and the naive reference --------------------------------- */

/* col has rows (c, ky, kx) and, per row, ho*wo entries for this image,
 * rows ldc apart (ldc > ho*wo when several images share one matrix). */
void nn_im2col(const float *x, int cin, int h, int w, int k, int s, int p, int ho, int wo,
               float *col, int ldc) {
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
