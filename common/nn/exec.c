/* exec.c: running a model forward and backward on a batch; see nn.h.
 *
 * Convolutions are products: out[Cout, HW] = W[Cout, Cin*k*k] x
 * col[Cin*k*k, HW]. Forward, on CPUs with AVX-512, they run on gemm.h
 * (weights packed once, col written straight into packed panels, bias and
 * ReLU on the way out); 3x3 stride-1 ones, and their input gradients, as
 * Winograd (winograd.h) on the same kernel; the weight gradients on it too
 * (dY and im2col packed across). Otherwise, and for the other input
 * gradients, im2col + OpenBLAS. When
 * the output is small (deep layers) several images share one product so it
 * stays wide enough to run at speed.
 * Training keeps every value for backward; gradients of values come from a
 * pool and go back to it as soon as the node that made the value is done,
 * so only a few are alive at once. Inference reuses value buffers once
 * their last reader has run. Element-wise layers run on OpenMP threads. */
#include <cblas.h>
#include <float.h>
#include <omp.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gemm.h"
#include "vec.h"
#include "nn.h"
#include "winograd.h"

typedef struct {
    int c, h, w;
    size_t per;   /* floats per image */
    float *d;     /* data (may be shared with other values in inference) */
    float *g;     /* gradient while alive */
    int ng;       /* gradient needed */
    int buf;      /* index of the buffer holding d */
} val_t;

typedef struct {
    float *p;
    size_t n; /* floats */
    int busy;
} buf_t;

struct nn_exec {
    nn_model *m;
    int n, h, w, train, nb;
    val_t *v;
    buf_t *bufs;
    int nbufs;
    float *col, *tmp, *dwt; /* per thread: col_n, tmp_n, dwt_n floats each */
    size_t col_n, tmp_n, dwt_n;
    int nth;
    float **bn_mean, **bn_istd;
    uint8_t **mask;
    buf_t *gpool;
    int ngpool, cap_gpool;
    int want_in_grad;
    uint64_t rng;
    size_t bytes;
    float *dout;
    int chunk_min; /* columns a conv product should have at least */
    int wino;      /* 3x3 stride-1 convs as Winograd F(2x2,3x3) (URSA_NN_WINOGRAD=0: off) */
    float *wv, *wm; /* per thread: wv_n and wm_n floats */
    size_t wv_n, wm_n;
    float **wU[2];  /* per node: transformed weights, forward and input-gradient */
    unsigned long *wUver[2];
    float *wUs[2];  /* training: scratch for the node at hand */
    float *scr;     /* per thread scr_n floats: max-pool rows, Winograd input rows */
    size_t scr_n;
    size_t wUs_n[2];
    int gemm;       /* convolutions forward on our packed product (gemm.h) */
    float **pA;     /* per node: packed weights (inference) */
    unsigned long *pAver;
    float *pAs;     /* training: packed weights of the node at hand */
    size_t pAs_n;
    float *wg;      /* training, per thread wga_n + wgb_n floats: a weight gradient's
                     * operands packed for gemm.h (dY's rows, im2col transposed) */
    size_t wga_n, wgb_n;
    float *wgm;     /* training, per thread wgm_n floats: a 3x3 weight gradient's
                     * transformed sum (Winograd; its operands in wv, wm and wg) */
    size_t wgm_n;
    float *ph;      /* per thread ph_n floats: stride-2 inputs split by parity (gemm.h) */
    size_t ph_n;
    int ph_val;     /* the value whose planes ph holds whole, or -1 (a downsample reuses them) */
    int prof;      /* URSA_NN_PROFILE: time spent per operator, printed at free */
    double *pnode; /* URSA_NN_PROFILE=nodes: time per node as well, forward then backward */
    double ptime[2][NN_OP_COUNT];
    long pcalls;
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static const char *const op_names[NN_OP_COUNT] = {"conv", "bn", "relu", "maxpool", "avgpool",
                                                  "gap", "gmp", "concat", "flatten", "linear",
                                                  "dropout", "add"};

/* ---- planning ------------------------------------------------------------ */

static int conv_chunk(const nn_exec *e, int hwo) {
    int c = (e->chunk_min + hwo - 1) / hwo;
    if (c < 1) c = 1;
    if (c > e->n) c = e->n;
    return c;
}

/* images per Winograd pass: about 256 tiles, so that the transformed
 * inputs and the products stay in L2 (1024 was 1.1-1.4x slower on the
 * small resnet's 14x14 layers, URSA_NN_PROFILE=nodes) */
static int wino_chunk(const nn_exec *e, int tiles) {
    int c = (256 + tiles - 1) / tiles;
    return c < 1 ? 1 : c > e->n ? e->n : c;
}

static ursa_err plan_shapes(nn_exec *e) {
    nn_model *m = e->m;
    val_t *v = e->v;
    v[0].c = m->in_c;
    v[0].h = e->h;
    v[0].w = e->w;
    v[0].per = (size_t)v[0].c * v[0].h * v[0].w;
    for (int i = 0; i < m->nnode; i++) {
        const nn_node *n = &m->node[i];
        const val_t *a = &v[n->in[0]];
        val_t *o = &v[n->out];
        o->c = a->c;
        o->h = a->h;
        o->w = a->w;
        switch (n->op) {
        case NN_CONV:
            if (m->param[n->w].shape[1] != a->c || a->h + 2 * n->pad < n->k ||
                a->w + 2 * n->pad < n->k)
                return URSA_ERR_INVALID;
            o->c = n->cout;
            o->h = (a->h + 2 * n->pad - n->k) / n->stride + 1;
            o->w = (a->w + 2 * n->pad - n->k) / n->stride + 1;
            break;
        case NN_MAXPOOL:
            if (a->h + 2 * n->pad < n->k || a->w + 2 * n->pad < n->k) return URSA_ERR_INVALID;
            o->h = (a->h + 2 * n->pad - n->k) / n->stride + 1;
            o->w = (a->w + 2 * n->pad - n->k) / n->stride + 1;
            break;
        case NN_AVGPOOL:
            if (a->h < n->k || a->w < n->k) return URSA_ERR_INVALID;
            o->h = (a->h - n->k) / n->stride + 1;
            o->w = (a->w - n->k) / n->stride + 1;
            break;
        case NN_GAP:
        case NN_GMP:
            o->h = o->w = 1;
            break;
        case NN_CONCAT:
            if (v[n->in[1]].h != a->h || v[n->in[1]].w != a->w) return URSA_ERR_INVALID;
            o->c = a->c + v[n->in[1]].c;
            break;
        case NN_FLATTEN:
            o->c = a->c * a->h * a->w;
            o->h = o->w = 1;
            break;
        case NN_LINEAR:
            if (m->param[n->w].shape[1] != a->c * a->h * a->w) return URSA_ERR_INVALID;
            o->c = n->cout;
            o->h = o->w = 1;
            break;
        case NN_ADD:
            if (v[n->in[1]].c != a->c || v[n->in[1]].h != a->h || v[n->in[1]].w != a->w)
                return URSA_ERR_INVALID;
            break;
        case NN_BN:
            if ((int)m->param[n->w].n != a->c) return URSA_ERR_INVALID;
            break;
        default:
            break;
        }
        if (o->h < 1 || o->w < 1) return URSA_ERR_INVALID;
        o->per = (size_t)o->c * o->h * o->w;
        if (n->op == NN_MAXPOOL && (size_t)a->h * o->w > e->scr_n) e->scr_n = (size_t)a->h * o->w;
        if (n->op == NN_CONV && nn_wino_rows_n(o->h, o->w) > e->scr_n)
            e->scr_n = nn_wino_rows_n(o->h, o->w);
        if (n->op == NN_CONV) {
            size_t hwo = (size_t)o->h * o->w, kk = (size_t)a->c * n->k * n->k;
            int ch = conv_chunk(e, (int)hwo);
            if (kk * hwo * ch > e->col_n) e->col_n = kk * hwo * ch;
            if (e->gemm && nn_gemm_bpack_n((int)kk, (int)hwo * ch) > e->col_n)
                e->col_n = nn_gemm_bpack_n((int)kk, (int)hwo * ch);
            if (e->gemm && nn_gemm_phases_ok(a->h, a->w, n->stride, o->h, o->w) &&
                a->per * ch > e->ph_n)
                e->ph_n = a->per * ch;
            if (ch > 1 && (size_t)n->cout * hwo * ch > e->tmp_n) e->tmp_n = (size_t)n->cout * hwo * ch;
            if (e->gemm && e->train) {
                int ld = (int)hwo * ch;
                if (nn_gemm_apack_n(n->cout, ld) > e->wga_n) e->wga_n = nn_gemm_apack_n(n->cout, ld);
                if (nn_gemm_bpack_n(ld, (int)kk) > e->wgb_n) e->wgb_n = nn_gemm_bpack_n(ld, (int)kk);
            }
            size_t wn = m->param[n->w].n + (size_t)n->cout;
            if (wn > e->dwt_n) e->dwt_n = wn;
            if (n->k == 3 && n->stride == 1 && n->pad == 1) {
                size_t T = (size_t)((o->h + 1) / 2) * ((o->w + 1) / 2);
                size_t P = T * wino_chunk(e, (int)T);
                size_t cm = (size_t)(a->c > n->cout ? a->c : n->cout);
                if (nn_wino_v_n((int)cm, (long)P) > e->wv_n) e->wv_n = nn_wino_v_n((int)cm, (long)P);
                if (16 * cm * P > e->wm_n) e->wm_n = 16 * cm * P;
                if (e->gemm && e->train) { /* the weight gradient's (winograd.h) */
                    size_t gm = 16 * (size_t)a->c * n->cout;
                    if (gm > e->wgm_n) e->wgm_n = gm;
                    if (nn_gemm_apack_n(n->cout, (int)P) > e->wga_n) e->wga_n = nn_gemm_apack_n(n->cout, (int)P);
                    if (nn_gemm_bpack_n((int)P, a->c) > e->wgb_n) e->wgb_n = nn_gemm_bpack_n((int)P, a->c);
                    if (nn_wino_wg_rows_n(o->h, o->w) > e->scr_n) e->scr_n = nn_wino_wg_rows_n(o->h, o->w);
                }
            }
        }
    }
    return URSA_OK;
}

static float *falloc(nn_exec *e, size_t n) {
    float *p = NULL;
    if (posix_memalign((void **)&p, 64, (n ? n : 1) * sizeof(float))) return NULL;
    e->bytes += n * sizeof(float);
    return p;
}

/* Values get buffers; in inference a buffer is reused once every reader of
 * its value has run. */
static ursa_err plan_buffers(nn_exec *e) {
    nn_model *m = e->m;
    int nv = m->nvalue;
    int *last = malloc(sizeof(int) * (size_t)nv);
    if (!last) return URSA_ERR_NOMEM;
    for (int i = 0; i < nv; i++) last[i] = i == m->out ? m->nnode : -1;
    for (int i = 0; i < m->nnode; i++)
        for (int j = 0; j < m->node[i].nin; j++) last[m->node[i].in[j]] = i;
    e->bufs = calloc((size_t)nv + 1, sizeof(buf_t));
    if (!e->bufs) {
        free(last);
        return URSA_ERR_NOMEM;
    }
    /* value 0 is the caller's input, copied into its own buffer */
    e->v[0].buf = 0;
    e->bufs[0].n = e->v[0].per * e->n;
    e->bufs[0].busy = 1;
    e->nbufs = 1;
    for (int i = 0; i < m->nnode; i++) {
        val_t *o = &e->v[m->node[i].out];
        size_t need = o->per * e->n;
        int pick = -1;
        if (!e->train)
            for (int b = 1; b < e->nbufs; b++)
                if (!e->bufs[b].busy && (pick < 0 || e->bufs[b].n < e->bufs[pick].n) &&
                    e->bufs[b].n >= need / 2)
                    pick = b;
        if (pick < 0) pick = e->nbufs++;
        if (e->bufs[pick].n < need) e->bufs[pick].n = need;
        e->bufs[pick].busy = 1;
        o->buf = pick;
        if (!e->train)
            for (int j = 0; j < m->node[i].nin; j++) {
                int in = m->node[i].in[j];
                if (last[in] == i && in != 0) e->bufs[e->v[in].buf].busy = 0;
            }
    }
    free(last);
    for (int b = 0; b < e->nbufs; b++)
        if (!(e->bufs[b].p = falloc(e, e->bufs[b].n))) return URSA_ERR_NOMEM;
    for (int i = 0; i < nv; i++) e->v[i].d = e->bufs[e->v[i].buf].p;
    return URSA_OK;
}

ursa_err nn_exec_new(nn_model *m, int n, int h, int w, int train, nn_exec **out) {
    *out = NULL;
    if (m->oom) return URSA_ERR_NOMEM;
    if (n < 1 || h < 1 || w < 1 || m->nnode < 1) return URSA_ERR_INVALID;
    /* the engine threads with OpenMP and gives OpenBLAS one thread a call */
    openblas_set_num_threads(1);
    nn_exec *e = calloc(1, sizeof *e);
    if (!e) return URSA_ERR_NOMEM;
    e->m = m;
    e->n = n;
    e->h = h;
    e->w = w;
    e->train = train;
    e->rng = 0x853C49E6748FEA9Bull;
    e->chunk_min = 1024; /* measured: 256 to 2048 all within noise here */
    e->nth = omp_get_max_threads() < 1 ? 1 : omp_get_max_threads();
    e->prof = getenv("URSA_NN_PROFILE") != NULL;
    if (e->prof && !strcmp(getenv("URSA_NN_PROFILE"), "nodes"))
        e->pnode = calloc((size_t)m->nnode * 2, sizeof(double));
    e->wino = !getenv("URSA_NN_WINOGRAD") || strcmp(getenv("URSA_NN_WINOGRAD"), "0");
    e->gemm = nn_gemm_avail();
    ursa_err err = URSA_ERR_NOMEM;
    e->v = calloc((size_t)m->nvalue, sizeof(val_t));
    e->bn_mean = calloc((size_t)m->nnode, sizeof(float *));
    e->bn_istd = calloc((size_t)m->nnode, sizeof(float *));
    e->mask = calloc((size_t)m->nnode, sizeof(uint8_t *));
    if (!e->v || !e->bn_mean || !e->bn_istd || !e->mask) goto fail;
    if ((err = plan_shapes(e)) != URSA_OK) goto fail;
    err = URSA_ERR_NOMEM;
    if ((err = plan_buffers(e)) != URSA_OK) goto fail;
    err = URSA_ERR_NOMEM;
    e->col_n = (e->col_n + 15) & ~(size_t)15; /* each thread's part 64-byte aligned */
    if (e->col_n && !(e->col = falloc(e, e->col_n * e->nth))) goto fail;
    if (e->ph_n && !(e->ph = falloc(e, e->ph_n * e->nth))) goto fail;
    e->wga_n = (e->wga_n + 15) & ~(size_t)15; /* B's panels 64-byte aligned */
    e->wgb_n = (e->wgb_n + 15) & ~(size_t)15;
    if (e->wga_n && !(e->wg = falloc(e, (e->wga_n + e->wgb_n) * e->nth))) goto fail;
    if (e->wino && e->wgm_n && !(e->wgm = falloc(e, e->wgm_n * e->nth))) goto fail;
    if (e->tmp_n && !(e->tmp = falloc(e, e->tmp_n * e->nth))) goto fail;
    if (train && e->dwt_n && !(e->dwt = falloc(e, e->dwt_n * e->nth))) goto fail;
    if (e->scr_n && !(e->scr = falloc(e, e->scr_n * e->nth))) goto fail;
    e->wv_n = (e->wv_n + 15) & ~(size_t)15; /* each thread's V 64-byte aligned */
    if (e->wino && e->wv_n &&
        (!(e->wv = falloc(e, e->wv_n * e->nth)) || !(e->wm = falloc(e, e->wm_n * e->nth))))
        goto fail;
    if (!(e->pA = calloc((size_t)m->nnode, sizeof(float *))) ||
        !(e->pAver = calloc((size_t)m->nnode, sizeof(unsigned long))))
        goto fail;
    for (int k = 0; k < 2; k++)
        if (!(e->wU[k] = calloc((size_t)m->nnode, sizeof(float *))) ||
            !(e->wUver[k] = calloc((size_t)m->nnode, sizeof(unsigned long))))
            goto fail;
    for (int i = 0; i < m->nnode; i++) {
        const nn_node *nd = &m->node[i];
        if (nd->op == NN_BN && train) {
            int c = e->v[nd->out].c;
            if (!(e->bn_mean[i] = falloc(e, (size_t)c)) || !(e->bn_istd[i] = falloc(e, (size_t)c)))
                goto fail;
        }
        if (nd->op == NN_DROPOUT && train) {
            if (!(e->mask[i] = malloc(e->v[nd->out].per * (size_t)n))) goto fail;
            e->bytes += e->v[nd->out].per * (size_t)n;
        }
    }
    if (!(e->dout = falloc(e, (size_t)e->v[m->out].per * n))) goto fail;
    *out = e;
    return URSA_OK;
fail:
    nn_exec_free(e);
    return err;
}

void nn_exec_free(nn_exec *e) {
    if (!e) return;
    if (e->prof && e->pcalls) {
        double tot = 0;
        for (int d = 0; d < 2; d++)
            for (int o = 0; o < NN_OP_COUNT; o++) tot += e->ptime[d][o];
        fprintf(stderr, "nn profile: %ld passes, %.1f ms a pass\n", e->pcalls, tot * 1e3 / e->pcalls);
        for (int d = 0; d < 2; d++)
            for (int o = 0; o < NN_OP_COUNT; o++)
                if (e->ptime[d][o] > 0)
                    fprintf(stderr, "  %-8s %-8s %8.2f ms %5.1f%%\n", op_names[o],
                            d ? "backward" : "forward", e->ptime[d][o] * 1e3 / e->pcalls,
                            100 * e->ptime[d][o] / tot);
        for (int i = 0; e->pnode && i < e->m->nnode; i++) {
            const nn_node *nd = &e->m->node[i];
            const val_t *y = &e->v[nd->out];
            double f = e->pnode[i], b = e->pnode[e->m->nnode + i];
            fprintf(stderr,
                    "  node %3d %-8s %-24s -> %4dx%-3dx%-3d fwd %7.3f ms bwd %7.3f ms %5.1f%%\n", i,
                    op_names[nd->op], nd->w >= 0 ? e->m->param[nd->w].name : "", y->c, y->h, y->w,
                    f * 1e3 / e->pcalls, b * 1e3 / e->pcalls, 100 * (f + b) / tot);
        }
    }
    free(e->pnode);
    for (int b = 0; b < e->nbufs; b++) free(e->bufs[b].p);
    free(e->bufs);
    for (int i = 0; e->m && i < e->m->nnode; i++) {
        if (e->bn_mean) free(e->bn_mean[i]);
        if (e->bn_istd) free(e->bn_istd[i]);
        if (e->mask) free(e->mask[i]);
    }
    for (int i = 0; i < e->ngpool; i++) free(e->gpool[i].p);
    free(e->gpool);
    free(e->bn_mean);
    free(e->bn_istd);
    free(e->mask);
    free(e->col);
    free(e->wg);
    free(e->wgm);
    free(e->ph);
    free(e->tmp);
    free(e->dwt);
    free(e->wv);
    free(e->wm);
    free(e->scr);
    for (int k = 0; k < 2; k++) {
        free(e->wUs[k]);
        for (int i = 0; e->wU[k] && i < e->m->nnode; i++) free(e->wU[k][i]);
        free(e->wU[k]);
        free(e->wUver[k]);
    }
    for (int i = 0; e->pA && i < e->m->nnode; i++) free(e->pA[i]);
    free(e->pA);
    free(e->pAver);
    free(e->pAs);
    free(e->dout);
    free(e->v);
    free(e);
}

size_t nn_exec_bytes(const nn_exec *e) { return e->bytes; }
int nn_threads(void) { return omp_get_max_threads(); }
void nn_set_threads(int n) { omp_set_num_threads(n < 1 ? 1 : n); }
void nn_exec_set_threads(nn_exec *e, int n) {
    /* the per-thread scratch was made for e->nth threads: fewer is fine */
    if (n >= 1 && n < e->nth) e->nth = n;
}
void nn_exec_seed(nn_exec *e, uint64_t seed) { e->rng = seed ? seed : 1; }
void nn_exec_want_input_grad(nn_exec *e, int on) { e->want_in_grad = on; }
const float *nn_input_grad(nn_exec *e) { return e->v[0].g; }
int nn_out_size(const nn_model *m) { return m->vc[m->out]; }

const float *nn_value(nn_exec *e, int v, int *c, int *h, int *w) {
    if (c) *c = e->v[v].c;
    if (h) *h = e->v[v].h;
    if (w) *w = e->v[v].w;
    return e->v[v].d;
}

static inline uint64_t xs(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* sgemm on all threads: OpenBLAS runs single-threaded (see nn_blas_init) and
 * each OpenMP thread multiplies its own slice of C, split along the longer
 * side so the operand every thread must pack in full is the smaller one. */
static void pgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
                  const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    int nt = omp_get_max_threads();
    if (nt < 2 || (double)M * N * K < 2e5) {
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
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
                cblas_sgemm(CblasRowMajor, ta, tb, M, hi - lo, K, alpha, A, lda, b, ldb, beta,
                            C + lo, ldc);
            } else {
                const float *a = ta == CblasNoTrans ? A + (size_t)lo * lda : A + lo;
                cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, N, K, alpha, a, lda, B, ldb, beta,
                            C + (size_t)lo * ldc, ldc);
            }
        }
    }
}

/* ---- forward kernels ----------------------------------------------------- */

static void epilogue(float *y, int n, int c, size_t hw, const float *bias, int relu) {
    if (!bias && !relu) return;
#pragma omp parallel for schedule(static) if ((size_t)n * c * hw > 32768)
    for (long q = 0; q < (long)n * c; q++) {
        float *r = y + (size_t)q * hw;
        float b = bias ? bias[q % c] : 0.0f;
        if (relu)
            for (size_t j = 0; j < hw; j++) {
                float t = r[j] + b;
                r[j] = t > 0 ? t : 0;
            }
        else
            for (size_t j = 0; j < hw; j++) r[j] += b;
    }
}

typedef void (*gemm_fn)(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
                        const float *A, int lda, const float *B, int ldb, float beta, float *C,
                        int ldc);

static void sgemm1(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
                   const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* Images [lo, hi) of a conv: im2col into col (several images side by side
 * when the output is small), one product, scattered back to NCHW via tmp. */
static void conv_fwd_range(nn_exec *e, const nn_node *nd, const val_t *x, val_t *y, int lo, int hi,
                           float *col, float *tmp, gemm_fn gemm) {
    const nn_param *W = &e->m->param[nd->w];
    int k = nd->k, s = nd->stride, p = nd->pad, cout = nd->cout;
    int hwo = y->h * y->w, kk = x->c * k * k;
    int direct = k == 1 && s == 1 && p == 0;
    int ch = conv_chunk(e, hwo);
    for (int i0 = lo; i0 < hi; i0 += ch) {
        int cn = hi - i0 < ch ? hi - i0 : ch;
        if (cn == 1) {
            const float *b = x->d + x->per * i0;
            if (!direct) {
                nn_im2col(b, x->c, x->h, x->w, k, s, p, y->h, y->w, col, hwo);
                b = col;
            }
            gemm(CblasNoTrans, CblasNoTrans, cout, hwo, kk, 1.0f, W->w, kk, b, hwo, 0.0f,
                 y->d + y->per * i0, hwo);
        } else {
            int ld = cn * hwo;
            for (int j = 0; j < cn; j++)
                nn_im2col(x->d + x->per * (i0 + j), x->c, x->h, x->w, k, s, p, y->h, y->w,
                          col + (size_t)j * hwo, ld);
            gemm(CblasNoTrans, CblasNoTrans, cout, ld, kk, 1.0f, W->w, kk, col, ld, 0.0f, tmp, ld);
            for (int j = 0; j < cn; j++)
                for (int o = 0; o < cout; o++)
                    memcpy(y->d + y->per * (i0 + j) + (size_t)o * hwo,
                           tmp + (size_t)o * ld + (size_t)j * hwo, sizeof(float) * hwo);
        }
    }
}

/* One image: every thread shares each product. Several: each thread takes
 * its own images, with its own buffers and single-threaded products. */
/* Winograd pays when the channel products are deep enough for sgemm */
#define WINO_MIN_CH 16
static int use_wino(const nn_exec *e, const nn_node *nd, const val_t *y) {
    return e->wino && e->wv && nd->k == 3 && nd->stride == 1 && nd->pad == 1 &&
           nd->cout >= WINO_MIN_CH && e->m->param[nd->w].shape[1] >= WINO_MIN_CH &&
           (long)e->nb * ((y->h + 1) / 2) * ((y->w + 1) / 2) >= (e->gemm ? 16 : 64);
}

/* the node's transformed weights: cached for inference (made again when the
 * weights changed), made at each use in training; NULL when there is no
 * memory for them, and the convolution then goes through im2col */
static const float *wino_U(nn_exec *e, const nn_node *nd, int for_dx) {
    int idx = (int)(nd - e->m->node);
    const nn_param *W = &e->m->param[nd->w];
    int co = W->shape[for_dx ? 1 : 0], ci = W->shape[for_dx ? 0 : 1]; /* of the product */
    size_t need = nn_wino_u_n(co, ci, e->gemm);
    if (e->train) { /* weights change every step: one scratch buffer, made at use */
        if (need > e->wUs_n[for_dx]) {
            float *q = malloc(sizeof(float) * need);
            if (!q) return NULL; /* the caller uses im2col instead */
            free(e->wUs[for_dx]);
            e->bytes += sizeof(float) * (need - e->wUs_n[for_dx]);
            e->wUs[for_dx] = q;
            e->wUs_n[for_dx] = need;
        }
        nn_wino_weights(W->w, W->shape[0], W->shape[1], for_dx, e->gemm, e->wUs[for_dx]);
        return e->wUs[for_dx];
    }
    if (!e->wU[for_dx][idx]) {
        e->wU[for_dx][idx] = malloc(sizeof(float) * need);
        if (!e->wU[for_dx][idx]) return NULL;
        e->bytes += sizeof(float) * need;
        e->wUver[for_dx][idx] = 0;
    }
    if (e->wUver[for_dx][idx] != e->m->wver + 1) {
        nn_wino_weights(W->w, W->shape[0], W->shape[1], for_dx, e->gemm, e->wU[for_dx][idx]);
        e->wUver[for_dx][idx] = e->m->wver + 1;
    }
    return e->wU[for_dx][idx];
}

/* images [lo, hi) through Winograd: forward (x -> y) or, with dy, the
 * input gradient (dy -> dx, added to it, or written when fresh) */
static void wino_range(nn_exec *e, const nn_node *nd, const float *U, const val_t *x,
                       const val_t *y, const float *dy, float *dx, int fresh, int lo, int hi,
                       int t, int par) {
    int T = ((y->h + 1) / 2) * ((y->w + 1) / 2), ch = wino_chunk(e, T);
    float *V = e->wv + e->wv_n * t, *M = e->wm + e->wm_n * t;
    /* one image: every thread takes its own rows scratch; else this thread's */
    float *rows = par ? e->scr : e->scr + e->scr_n * t;
    for (int i0 = lo; i0 < hi; i0 += ch) {
        int cn = hi - i0 < ch ? hi - i0 : ch;
        if (dx)
            nn_wino_conv(U, e->gemm, nd->cout, x->c, dy + y->per * i0, y->per, y->h, y->w, cn,
                         dx + x->per * i0, x->per, !fresh, V, M, rows, e->scr_n, par);
        else
            nn_wino_conv(U, e->gemm, x->c, nd->cout, x->d + x->per * i0, x->per, y->h, y->w, cn,
                         y->d + y->per * i0, y->per, 0, V, M, rows, e->scr_n, par);
    }
}

/* the node's weights packed for gemm.h: kept for inference (packed again
 * when the weights changed), packed at each use in training; NULL without
 * memory, and the convolution then goes through OpenBLAS */
static const float *gemm_A(nn_exec *e, const nn_node *nd) {
    int idx = (int)(nd - e->m->node);
    const nn_param *W = &e->m->param[nd->w];
    int M = nd->cout, K = (int)(W->n / (size_t)M);
    size_t need = nn_gemm_apack_n(M, K);
    if (e->train) {
        if (need > e->pAs_n) {
            float *q = malloc(sizeof(float) * need);
            if (!q) return NULL;
            free(e->pAs);
            e->bytes += sizeof(float) * (need - e->pAs_n);
            e->pAs = q;
            e->pAs_n = need;
        }
        nn_gemm_pack_a(W->w, K, M, K, e->pAs);
        return e->pAs;
    }
    if (!e->pA[idx]) {
        if (!(e->pA[idx] = malloc(sizeof(float) * need))) return NULL;
        e->bytes += sizeof(float) * need;
        e->pAver[idx] = 0;
    }
    if (e->pAver[idx] != e->m->wver + 1) {
        nn_gemm_pack_a(W->w, K, M, K, e->pA[idx]);
        e->pAver[idx] = e->m->wver + 1;
    }
    return e->pA[idx];
}

/* Images [lo, hi) of a conv through gemm.h, in chunks of images whose
 * columns share one product; worker t of T (all T call it together) packs
 * its share of each chunk's panels and multiplies its share of the tiles.
 * Bias and ReLU are applied on the way out. */
static void conv_fwd_gemm(nn_exec *e, const nn_node *nd, const float *ap, const val_t *x,
                          const val_t *y, int lo, int hi, float *bp, float *ph, int have_ph, int t,
                          int T) {
    int k = nd->k, hwo = y->h * y->w, K = x->c * k * k, ch = conv_chunk(e, hwo);
    nn_gemm_out o = {NULL, hwo, y->per, nd->b >= 0 ? e->m->param[nd->b].w : NULL, nd->relu, 0};
    if (!e->ph || !nn_gemm_phases_ok(x->h, x->w, nd->stride, y->h, y->w)) ph = NULL;
    for (int i0 = lo; i0 < hi; i0 += ch) {
        int cn = hi - i0 < ch ? hi - i0 : ch, N = cn * hwo, NP = nn_gemm_npanels(N);
        const float *xi = x->d + x->per * i0;
        if (ph && !have_ph) {
            nn_gemm_phase_split(xi, x->per, cn, x->c, x->h, x->w, ph, x->c * t / T,
                                x->c * (t + 1) / T);
            if (T > 1) {
#pragma omp barrier
            }
        }
        nn_gemm_pack_conv(xi, ph, x->per, cn, x->c, x->h, x->w, k, nd->stride, nd->pad, y->h,
                          y->w, bp, NP * t / T, NP * (t + 1) / T);
        if (T > 1) {
#pragma omp barrier
        }
        o.c = y->d + y->per * i0;
        nn_gemm_packed(nd->cout, N, K, ap, bp, &o, t, T);
        if (T > 1) { /* the next chunk's panels go where these are */
#pragma omp barrier
        }
    }
}

static void conv_fwd(nn_exec *e, const nn_node *nd, const val_t *x, val_t *y) {
    const float *ap = e->gemm && !use_wino(e, nd, y) && nd->k <= 8 ? gemm_A(e, nd) : NULL;
    if (ap) {
        int team = e->nb == 1 || e->nth == 1;
        /* a stride-2 input's planes, whole when each worker's images make
         * one chunk: the next convolution of the same input (the block's
         * downsample) reads them again */
        int split = e->ph && nn_gemm_phases_ok(x->h, x->w, nd->stride, y->h, y->w);
        int whole = (team ? e->nb : (e->nb + e->nth - 1) / e->nth) <= conv_chunk(e, y->h * y->w);
        int have = split && whole && e->ph_val == nd->in[0];
        if (team) {
#pragma omp parallel num_threads(e->nth) if (e->nth > 1)
            conv_fwd_gemm(e, nd, ap, x, y, 0, e->nb, e->col, e->ph, have, omp_get_thread_num(),
                          omp_get_num_threads());
        } else {
#pragma omp parallel num_threads(e->nth)
            {
                int t = omp_get_thread_num(), T = omp_get_num_threads();
                conv_fwd_gemm(e, nd, ap, x, y, e->nb * t / T, e->nb * (t + 1) / T,
                              e->col + e->col_n * t, e->ph ? e->ph + e->ph_n * t : NULL, have, 0,
                              1);
            }
        }
        if (split) e->ph_val = whole ? nd->in[0] : -1;
        return;
    }
    const float *U = use_wino(e, nd, y) ? wino_U(e, nd, 0) : NULL;
    if (U) {
        if (e->nb == 1 || e->nth == 1) {
            wino_range(e, nd, U, x, y, NULL, NULL, 0, 0, e->nb, 0, 1);
        } else {
#pragma omp parallel num_threads(e->nth)
            {
                int t = omp_get_thread_num(), T = omp_get_num_threads();
                wino_range(e, nd, U, x, y, NULL, NULL, 0, e->nb * t / T, e->nb * (t + 1) / T, t, 0);
            }
        }
    } else if (e->nb == 1 || e->nth == 1) {
        conv_fwd_range(e, nd, x, y, 0, e->nb, e->col, e->tmp, pgemm);
    } else {
#pragma omp parallel num_threads(e->nth)
        {
            int t = omp_get_thread_num(), T = omp_get_num_threads();
            int lo = e->nb * t / T, hi = e->nb * (t + 1) / T;
            conv_fwd_range(e, nd, x, y, lo, hi, e->col + e->col_n * t,
                           e->tmp ? e->tmp + e->tmp_n * t : NULL, sgemm1);
        }
    }
    epilogue(y->d, e->nb, nd->cout, (size_t)y->h * y->w,
             nd->b >= 0 ? e->m->param[nd->b].w : NULL, nd->relu);
}

static void bn_fwd(nn_exec *e, int idx, nn_node *nd, const val_t *x, val_t *y) {
    nn_model *m = e->m;
    float *g = m->param[nd->w].w, *b = m->param[nd->b].w;
    float *rm = m->param[nd->rm].w, *rv = m->param[nd->rv].w;
    int C = x->c, N = e->nb;
    size_t hw = (size_t)x->h * x->w;
    int train = e->train;
    float *smean = e->bn_mean[idx], *sistd = e->bn_istd[idx];
    int calib = nd->calib && train;
#pragma omp parallel for schedule(static) if ((size_t)N * C * hw > 32768)
    for (int c = 0; c < C; c++) {
        float mean, istd;
        if (train) {
            double s = 0, ss = 0;
            for (int i = 0; i < N; i++) s += nn_vsum(x->d + x->per * i + c * hw, hw);
            double cnt = (double)N * hw;
            double mu = s / cnt;
            for (int i = 0; i < N; i++) ss += nn_vsqdev(x->d + x->per * i + c * hw, hw, (float)mu);
            double var = ss / cnt;
            mean = (float)mu;
            istd = (float)(1.0 / sqrt(var + nd->eps));
            smean[c] = mean;
            sistd[c] = istd;
            if (calib) { /* start as the identity on this batch (nn_unfold_bn) */
                g[c] = (float)sqrt(var + nd->eps);
                b[c] += mean;
                rm[c] = mean;
                rv[c] = (float)var;
            } else if (cnt > 1) { /* one value has no variance: PyTorch refuses it */
                float mo = nd->momentum;
                rm[c] = (1 - mo) * rm[c] + mo * mean;
                rv[c] = (1 - mo) * rv[c] + mo * (float)(cnt > 1 ? ss / (cnt - 1) : var);
            }
        } else {
            mean = rm[c];
            istd = 1.0f / sqrtf(rv[c] + nd->eps);
        }
        float sc = g[c] * istd, sh = b[c] - mean * sc;
        for (int i = 0; i < N; i++) {
            const float *r = x->d + x->per * i + c * hw;
            float *o = y->d + y->per * i + c * hw;
            if (nd->relu)
                for (size_t j = 0; j < hw; j++) {
                    float t = r[j] * sc + sh;
                    o[j] = t > 0 ? t : 0;
                }
            else
                for (size_t j = 0; j < hw; j++) o[j] = r[j] * sc + sh;
        }
    }
    if (calib) nd->calib = 0;
}

/* max that lets NaN through (the first in a row window; rows combine with
 * a plain max so they vectorise) */
static inline float maxn(float best, float t) { return t > best || t != t ? t : best; }

/* separable: the max over each row's windows, then over the rows */
static void maxpool_fwd(nn_exec *e, const nn_node *nd, const val_t *x, val_t *y) {
    int k = nd->k, s = nd->stride, p = nd->pad, H = x->h, W = x->w, wo = y->w;
#pragma omp parallel num_threads(e->nth)
    {
        float *rm = e->scr + e->scr_n * omp_get_thread_num();
#pragma omp for schedule(static)
        for (long q = 0; q < (long)e->nb * x->c; q++) {
            const float *xi = x->d + (size_t)q * H * W;
            float *yo = y->d + (size_t)q * y->h * wo;
            for (int iy = 0; iy < H; iy++) {
                const float *r = xi + (size_t)iy * W;
                float *o = rm + (size_t)iy * wo;
                int ox0 = 0;
                if (k == 3 && s == 2 && p == 1 && wo > 2 && 2 * (wo - 2) + 1 < W) {
                    /* resnet's stem pool: the interior without bounds */
                    o[0] = maxn(r[0], r[1]);
                    for (int ox = 1; ox < wo - 1; ox++) {
                        float a = r[2 * ox - 1], b = r[2 * ox], c = r[2 * ox + 1];
                        float m1 = a > b ? a : b;
                        o[ox] = m1 > c ? m1 : c;
                    }
                    ox0 = wo - 1;
                }
                for (int ox = ox0; ox < wo; ox++) {
                    int x0 = ox * s - p, x1 = x0 + k;
                    if (x0 < 0) x0 = 0;
                    if (x1 > W) x1 = W;
                    float best = -FLT_MAX;
                    for (int ix = x0; ix < x1; ix++) best = maxn(best, r[ix]);
                    o[ox] = best;
                }
            }
            for (int oy = 0; oy < y->h; oy++) {
                int y0 = oy * s - p, y1 = y0 + k;
                if (y0 < 0) y0 = 0;
                if (y1 > H) y1 = H;
                float *o = yo + (size_t)oy * wo;
                for (int ox = 0; ox < wo; ox++) o[ox] = -FLT_MAX;
                for (int iy = y0; iy < y1; iy++) {
                    const float *r = rm + (size_t)iy * wo;
                    for (int ox = 0; ox < wo; ox++) o[ox] = o[ox] > r[ox] ? o[ox] : r[ox];
                }
            }
        }
    }
}

static void avgpool_fwd(nn_exec *e, const nn_node *nd, const val_t *x, val_t *y) {
    int k = nd->k, s = nd->stride;
    float inv = 1.0f / (float)(k * k);
    for (long q = 0; q < (long)e->nb * x->c; q++) {
        const float *xi = x->d + (size_t)q * x->h * x->w;
        float *yo = y->d + (size_t)q * y->h * y->w;
        for (int oy = 0; oy < y->h; oy++)
            for (int ox = 0; ox < y->w; ox++) {
                float acc = 0;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) acc += xi[(oy * s + ky) * x->w + ox * s + kx];
                yo[oy * y->w + ox] = acc * inv;
            }
    }
}

static void gpool_fwd(nn_exec *e, int max, const val_t *x, val_t *y) {
    size_t hw = (size_t)x->h * x->w;
    for (long q = 0; q < (long)e->nb * x->c; q++) {
        const float *r = x->d + (size_t)q * hw;
        float acc = max ? -FLT_MAX : 0;
        for (size_t j = 0; j < hw; j++) acc = max ? (r[j] > acc ? r[j] : acc) : acc + r[j];
        y->d[q] = max ? acc : acc / (float)hw;
    }
}

static void linear_fwd(nn_exec *e, const nn_node *nd, const val_t *x, val_t *y) {
    const nn_param *W = &e->m->param[nd->w];
    int in = (int)x->per, out = nd->cout;
    pgemm(CblasNoTrans, CblasTrans, e->nb, out, in, 1.0f, x->d, in, W->w, in,
                0.0f, y->d, out);
    if (nd->b >= 0) {
        const float *b = e->m->param[nd->b].w;
        for (int i = 0; i < e->nb; i++)
            for (int o = 0; o < out; o++) y->d[(size_t)i * out + o] += b[o];
    }
}

const float *nn_forward(nn_exec *e, const float *in, int nb) {
    nn_model *m = e->m;
    if (nb < 1 || nb > e->n) return NULL;
    e->nb = nb;
    e->ph_val = -1;
    memcpy(e->v[0].d, in, sizeof(float) * e->v[0].per * nb);
    e->pcalls++;
    double t0 = e->prof ? now_s() : 0;
    for (int i = 0; i < m->nnode; i++) {
        nn_node *nd = &m->node[i];
        val_t *x = &e->v[nd->in[0]], *y = &e->v[nd->out];
        size_t tot = y->per * nb;
        if (e->prof && i) {
            double t1 = now_s();
            e->ptime[0][m->node[i - 1].op] += t1 - t0;
            if (e->pnode) e->pnode[i - 1] += t1 - t0;
            t0 = t1;
        }
        switch (nd->op) {
        case NN_CONV: conv_fwd(e, nd, x, y); break;
        case NN_BN: bn_fwd(e, i, nd, x, y); break;
        case NN_RELU:
            for (size_t j = 0; j < tot; j++) y->d[j] = x->d[j] > 0 ? x->d[j] : 0;
            break;
        case NN_MAXPOOL: maxpool_fwd(e, nd, x, y); break;
        case NN_AVGPOOL: avgpool_fwd(e, nd, x, y); break;
        case NN_GAP: gpool_fwd(e, 0, x, y); break;
        case NN_GMP: gpool_fwd(e, 1, x, y); break;
        case NN_CONCAT: {
            const val_t *b = &e->v[nd->in[1]];
            for (int n = 0; n < nb; n++) {
                memmove(y->d + y->per * n, x->d + x->per * n, sizeof(float) * x->per);
                memmove(y->d + y->per * n + x->per, b->d + b->per * n, sizeof(float) * b->per);
            }
            break;
        }
        case NN_FLATTEN:
            if (y->d != x->d) memcpy(y->d, x->d, sizeof(float) * tot);
            break;
        case NN_LINEAR: linear_fwd(e, nd, x, y); break;
        case NN_DROPOUT:
            if (e->train && nd->p > 0) {
                uint8_t *mk = e->mask[i];
                float sc = 1.0f / (1.0f - nd->p);
                uint32_t thr = (uint32_t)(nd->p * 4294967296.0);
                for (size_t j = 0; j < tot; j++) {
                    mk[j] = (uint32_t)(xs(&e->rng) >> 32) >= thr;
                    y->d[j] = mk[j] ? x->d[j] * sc : 0;
                }
            } else if (y->d != x->d) {
                memcpy(y->d, x->d, sizeof(float) * tot);
            }
            break;
        case NN_ADD: {
            const float *a = x->d, *b = e->v[nd->in[1]].d;
            float *o = y->d;
            if (nd->relu) {
#pragma omp parallel for schedule(static) if (tot > 65536)
                for (size_t j = 0; j < tot; j++) {
                    float t = a[j] + b[j];
                    o[j] = t > 0 ? t : 0;
                }
            } else {
                for (size_t j = 0; j < tot; j++) o[j] = a[j] + b[j];
            }
            break;
        }
        default: break;
        }
    }
    if (e->prof) {
        e->ptime[0][m->node[m->nnode - 1].op] += now_s() - t0;
        if (e->pnode) e->pnode[m->nnode - 1] += now_s() - t0;
    }
    return e->v[m->out].d;
}

/* ---- backward ------------------------------------------------------------ */

/* value v's gradient buffer, made zero when it is new; with zero 0 a new
 * one is left as it is, for a caller that writes all of it first */
static float *grad_get(nn_exec *e, int v, int zero) {
    val_t *x = &e->v[v];
    if (x->g) return x->g;
    size_t need = x->per * e->n;
    int pick = -1;
    for (int i = 0; i < e->ngpool; i++)
        if (!e->gpool[i].busy && e->gpool[i].n >= need &&
            (pick < 0 || e->gpool[i].n < e->gpool[pick].n))
            pick = i;
    if (pick < 0) {
        if (e->ngpool == e->cap_gpool) {
            int c = e->cap_gpool ? e->cap_gpool * 2 : 16;
            buf_t *nb = realloc(e->gpool, sizeof(buf_t) * (size_t)c);
            if (!nb) return NULL;
            e->gpool = nb;
            e->cap_gpool = c;
        }
        float *p = falloc(e, need);
        if (!p) return NULL;
        pick = e->ngpool++;
        e->gpool[pick].n = need;
        e->gpool[pick].busy = 0;
        e->gpool[pick].p = p;
    }
    e->gpool[pick].busy = 1;
    x->g = e->gpool[pick].p;
    if (zero) memset(x->g, 0, sizeof(float) * x->per * e->nb);
    return x->g;
}

static float *grad_of(nn_exec *e, int v) { return grad_get(e, v, 1); }

static void grad_release(nn_exec *e, int v) {
    val_t *x = &e->v[v];
    if (!x->g || x->g == e->dout) {
        x->g = NULL;
        return;
    }
    for (int i = 0; i < e->ngpool; i++)
        if (e->gpool[i].p == x->g) e->gpool[i].busy = 0;
    x->g = NULL;
}

static int trainable(const nn_model *m, int p) {
    return p >= 0 && m->param[p].g && !m->param[p].frozen;
}

static void conv_bwd_range(nn_exec *e, const nn_node *nd, const val_t *x, const val_t *y,
                           const float *dy, float *dx, int lo, int hi, float *colb, float *tmp,
                           float *wg, float *dw, float *db, gemm_fn gemm) {
    const nn_param *W = &e->m->param[nd->w];
    int k = nd->k, s = nd->stride, p = nd->pad, cout = nd->cout;
    int hwo = y->h * y->w, kk = x->c * k * k;
    int direct = k == 1 && s == 1 && p == 0;
    int ch = conv_chunk(e, hwo);
    for (int i0 = lo; i0 < hi; i0 += ch) {
        int cn = hi - i0 < ch ? hi - i0 : ch;
        int ld = cn * hwo;
        const float *col, *g;
        if (cn == 1) {
            g = dy + y->per * i0;
            col = x->d + x->per * i0;
            if (!direct && dw) {
                nn_im2col(col, x->c, x->h, x->w, k, s, p, y->h, y->w, colb, hwo);
                col = colb;
            }
        } else {
            /* OpenBLAS's products take dY's images side by side; gemm.h's
             * weight gradient packs them from where they are */
            g = dx || (dw && !wg) ? tmp : NULL;
            for (int j = 0; g && j < cn; j++)
                for (int o = 0; o < cout; o++)
                    memcpy(tmp + (size_t)o * ld + (size_t)j * hwo,
                           dy + y->per * (i0 + j) + (size_t)o * hwo, sizeof(float) * hwo);
            if (dw)
                for (int j = 0; j < cn; j++)
                    nn_im2col(x->d + x->per * (i0 + j), x->c, x->h, x->w, k, s, p, y->h, y->w,
                              colb + (size_t)j * hwo, ld);
            col = colb;
        }
        if (dw && wg) { /* on gemm.h's kernel: dY's rows and im2col's, both packed across */
            float *ap = wg, *bp = wg + e->wga_n;
            for (int j = 0; j < cn; j++)
                nn_gemm_pack_a_cols(dy + y->per * (i0 + j), hwo, cout, hwo, ld, j * hwo, ap);
            nn_gemm_pack_bt(col, ld, ld, kk, bp);
            nn_gemm_out o = {dw, kk, 0, NULL, 0, 1};
            nn_gemm_packed(cout, kk, ld, ap, bp, &o, 0, 1);
        } else if (dw) {
            gemm(CblasNoTrans, CblasTrans, cout, kk, ld, 1.0f, g, ld, col, ld, 1.0f, dw, kk);
        }
        if (db)
            for (int j = 0; j < cn; j++)
                for (int o = 0; o < cout; o++)
                    db[o] += nn_vsum(dy + y->per * (i0 + j) + (size_t)o * hwo, (size_t)hwo);
        if (!dx) continue;
        if (direct && cn == 1) {
            gemm(CblasTrans, CblasNoTrans, kk, hwo, cout, 1.0f, W->w, kk, g, hwo, 1.0f,
                 dx + x->per * i0, hwo);
        } else {
            gemm(CblasTrans, CblasNoTrans, kk, ld, cout, 1.0f, W->w, kk, g, ld, 0.0f, colb, ld);
            for (int j = 0; j < cn; j++)
                nn_col2im(colb + (size_t)j * hwo, ld, x->c, x->h, x->w, k, s, p, y->h, y->w,
                          dx + x->per * (i0 + j));
        }
    }
}

/* images [lo, hi)'s weight gradient of a 3x3 stride-1 convolution through
 * Winograd (winograd.h), added to dw; the buffers of thread t */
static void wino_wgrad_range(nn_exec *e, const nn_node *nd, const val_t *x, const val_t *y,
                             const float *dy, float *dw, int lo, int hi, int t) {
    int T = ((y->h + 1) / 2) * ((y->w + 1) / 2), ch = wino_chunk(e, T), cin = x->c;
    float *M = e->wgm + e->wgm_n * t, *ap = e->wg + (e->wga_n + e->wgb_n) * t;
    memset(M, 0, sizeof(float) * 16 * cin * nd->cout);
    for (int i0 = lo; i0 < hi; i0 += ch) {
        int cn = hi - i0 < ch ? hi - i0 : ch;
        nn_wino_wgrad(x->d + x->per * i0, x->per, dy + y->per * i0, y->per, cin, nd->cout, y->h,
                      y->w, cn, M, e->wv + e->wv_n * t, e->wm + e->wm_n * t, ap, ap + e->wga_n,
                      e->scr + e->scr_n * t, e->scr_n);
    }
    nn_wino_wgrad_finish(M, nd->cout, cin, dw);
}

/* fresh: dx is new and not yet zeroed: Winograd writes it, else it is
 * zeroed here first */
static void conv_bwd(nn_exec *e, const nn_node *nd, const val_t *x, const val_t *y, float *dy,
                     float *dx, int fresh) {
    nn_model *m = e->m;
    float *dw = trainable(m, nd->w) ? m->param[nd->w].g : NULL;
    float *db = trainable(m, nd->b) ? m->param[nd->b].g : NULL;
    int wino = use_wino(e, nd, y);
    const float *Ud = dx && wino ? wino_U(e, nd, 1) : NULL;
    if (dx && fresh && !Ud) memset(dx, 0, sizeof(float) * x->per * e->nb);
    /* the weight gradient through Winograd too, on gemm.h's kernel, one
     * thread a range of images (a lone image: OpenBLAS's threads instead) */
    int wdw = dw && wino && e->gemm && e->wgm && e->wg && (e->nb > 1 || e->nth == 1);
    if (e->nb == 1 || e->nth == 1) {
        conv_bwd_range(e, nd, x, y, dy, Ud ? NULL : dx, 0, e->nb, e->col, e->tmp, NULL,
                       wdw ? NULL : dw, db, pgemm);
        if (wdw) wino_wgrad_range(e, nd, x, y, dy, dw, 0, e->nb, 0);
        if (Ud) wino_range(e, nd, Ud, x, y, dy, dx, fresh, 0, e->nb, 0, 1);
        return;
    }
    size_t wn = m->param[nd->w].n;
    int T = e->nth;
#pragma omp parallel num_threads(T)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int lo = e->nb * t / nt, hi = e->nb * (t + 1) / nt;
        float *mine = e->dwt + e->dwt_n * t;
        if (dw || db) memset(mine, 0, sizeof(float) * (wn + (size_t)nd->cout));
        conv_bwd_range(e, nd, x, y, dy, Ud ? NULL : dx, lo, hi, e->col + e->col_n * t,
                       e->tmp ? e->tmp + e->tmp_n * t : NULL,
                       e->wg ? e->wg + (e->wga_n + e->wgb_n) * t : NULL,
                       dw && !wdw ? mine : NULL, db ? mine + wn : NULL, sgemm1);
        if (wdw) wino_wgrad_range(e, nd, x, y, dy, mine, lo, hi, t);
        if (Ud) wino_range(e, nd, Ud, x, y, dy, dx, fresh, lo, hi, t, 0);
#pragma omp barrier
        /* sum the threads' weight gradients, each thread a slice */
        if (dw || db) {
            size_t tot = wn + (size_t)nd->cout, a = tot * t / nt, b = tot * (t + 1) / nt;
            for (size_t j = a; j < b; j++) {
                float acc = 0;
                for (int q = 0; q < nt; q++) acc += e->dwt[e->dwt_n * q + j];
                if (j < wn) {
                    if (dw) dw[j] += acc;
                } else if (db) {
                    db[j - wn] += acc;
                }
            }
        }
    }
}

/* fresh: dx is new, written here rather than added to */
static void bn_bwd(nn_exec *e, int idx, const nn_node *nd, const val_t *x, float *dy, float *dx,
                   int fresh) {
    nn_model *m = e->m;
    const float *g = m->param[nd->w].w;
    float *dg = trainable(m, nd->w) ? m->param[nd->w].g : NULL;
    float *dbt = trainable(m, nd->b) ? m->param[nd->b].g : NULL;
    int C = x->c, N = e->nb;
    size_t hw = (size_t)x->h * x->w;
    const float *smean = e->bn_mean[idx], *sistd = e->bn_istd[idx];
#pragma omp parallel for schedule(static) if ((size_t)N * C * hw > 32768)
    for (int c = 0; c < C; c++) {
        float mean = smean[c], istd = sistd[c];
        double sdy = 0, sdyx = 0;
        for (int i = 0; i < N; i++) {
            float a = 0, b = 0;
            nn_vsum2(dy + x->per * i + c * hw, x->d + x->per * i + c * hw, hw, mean, &a, &b);
            sdy += a;
            sdyx += b;
        }
        sdyx *= istd; /* sum dy * xhat */
        if (dg) dg[c] += (float)sdyx;
        if (dbt) dbt[c] += (float)sdy;
        if (!dx) continue;
        double cnt = (double)N * hw;
        float k1 = g[c] * istd, mdy = (float)(sdy / cnt), mdyx = (float)(sdyx / cnt);
        for (int i = 0; i < N; i++) {
            const float *r = x->d + x->per * i + c * hw, *d = dy + x->per * i + c * hw;
            float *o = dx + x->per * i + c * hw;
            if (fresh)
                for (size_t j = 0; j < hw; j++) o[j] = k1 * (d[j] - mdy - (r[j] - mean) * istd * mdyx);
            else
                for (size_t j = 0; j < hw; j++) o[j] += k1 * (d[j] - mdy - (r[j] - mean) * istd * mdyx);
        }
    }
}

static void maxpool_bwd(nn_exec *e, const nn_node *nd, const val_t *x, const val_t *y,
                        const float *dy, float *dx) {
    int k = nd->k, s = nd->stride, p = nd->pad;
#pragma omp parallel for schedule(static)
    for (long q = 0; q < (long)e->nb * x->c; q++) {
        const float *xi = x->d + (size_t)q * x->h * x->w;
        const float *g = dy + (size_t)q * y->h * y->w;
        float *o = dx + (size_t)q * x->h * x->w;
        for (int oy = 0; oy < y->h; oy++) {
            int y0 = oy * s - p, y1 = y0 + k;
            if (y0 < 0) y0 = 0;
            if (y1 > x->h) y1 = x->h;
            for (int ox = 0; ox < y->w; ox++) {
                int x0 = ox * s - p, x1 = x0 + k;
                if (x0 < 0) x0 = 0;
                if (x1 > x->w) x1 = x->w;
                /* the first maximum in scan order, as PyTorch picks it */
                int bi = y0 * x->w + x0;
                float best = xi[bi];
                for (int iy = y0; iy < y1; iy++) {
                    const float *r = xi + (size_t)iy * x->w;
                    for (int ix = x0; ix < x1; ix++)
                        if (r[ix] > best) {
                            best = r[ix];
                            bi = iy * x->w + ix;
                        }
                }
                o[bi] += g[oy * y->w + ox];
            }
        }
    }
}

static void linear_bwd(nn_exec *e, const nn_node *nd, const val_t *x, const float *dy, float *dx) {
    nn_model *m = e->m;
    const nn_param *W = &m->param[nd->w];
    int in = (int)x->per, out = nd->cout, nb = e->nb;
    if (trainable(m, nd->w))
        pgemm(CblasTrans, CblasNoTrans, out, in, nb, 1.0f, dy, out, x->d, in,
                    1.0f, W->g, in);
    if (trainable(m, nd->b)) {
        float *db = m->param[nd->b].g;
        for (int i = 0; i < nb; i++)
            for (int o = 0; o < out; o++) db[o] += dy[(size_t)i * out + o];
    }
    if (dx)
        pgemm(CblasNoTrans, CblasNoTrans, nb, in, out, 1.0f, dy, out, W->w,
                    in, 1.0f, dx, in);
}

static void mark_needs(nn_exec *e) {
    nn_model *m = e->m;
    e->v[0].ng = e->want_in_grad;
    for (int i = 0; i < m->nnode; i++) {
        const nn_node *nd = &m->node[i];
        int ng = trainable(m, nd->w) || trainable(m, nd->b);
        for (int j = 0; j < nd->nin; j++) ng |= e->v[nd->in[j]].ng;
        e->v[nd->out].ng = ng;
    }
}

ursa_err nn_backward(nn_exec *e, const float *dout) {
    nn_model *m = e->m;
    int nb = e->nb;
    mark_needs(e);
    for (int i = 0; i < m->nvalue; i++) grad_release(e, i);
    if (dout != e->dout) memcpy(e->dout, dout, sizeof(float) * e->v[m->out].per * nb);
    e->v[m->out].g = e->dout;
    double t0 = e->prof ? now_s() : 0;
    for (int i = m->nnode - 1; i >= 0; i--) {
        const nn_node *nd = &m->node[i];
        val_t *y = &e->v[nd->out], *x = &e->v[nd->in[0]];
        float *dy = y->g;
        if (e->prof && i < m->nnode - 1) {
            double t1 = now_s();
            e->ptime[1][m->node[i + 1].op] += t1 - t0;
            if (e->pnode) e->pnode[m->nnode + i + 1] += t1 - t0;
            t0 = t1;
        }
        if (!dy || !y->ng) {
            grad_release(e, nd->out);
            continue;
        }
        size_t tot = y->per * nb;
        if (nd->relu) { /* fused ReLU: gradient only where the output is positive */
            const float *yd = y->d;
#pragma omp parallel for schedule(static) if (tot > 65536)
            for (size_t j = 0; j < tot; j++) /* a store every time: no branch, vectorised */
                dy[j] = yd[j] > 0 ? dy[j] : 0.0f;
        }
        if (nd->op == NN_ADD && x->ng && !x->g && dy != e->dout) {
            /* the first input of an add takes the sum's gradient buffer as
             * its own: no zeroing, no pass adding dy into it */
            x->g = dy;
            y->g = NULL;
        }
        /* batch norm and Winograd write all of a new input gradient: no
         * zeroing first */
        int fresh = (nd->op == NN_BN || nd->op == NN_CONV) && x->ng && !x->g;
        float *dx = x->ng ? grad_get(e, nd->in[0], !fresh) : NULL;
        if (x->ng && !dx) goto nomem;
        switch (nd->op) {
        case NN_CONV: conv_bwd(e, nd, x, y, dy, dx, fresh); break;
        case NN_BN: bn_bwd(e, i, nd, x, dy, dx, fresh); break;
        case NN_RELU:
            if (dx) {
                const float *yd = y->d;
#pragma omp parallel for schedule(static) if (tot > 65536)
                for (size_t j = 0; j < tot; j++) dx[j] += yd[j] > 0 ? dy[j] : 0;
            }
            break;
        case NN_MAXPOOL:
            if (dx) maxpool_bwd(e, nd, x, y, dy, dx);
            break;
        case NN_AVGPOOL:
            if (dx) {
                int k = nd->k, s = nd->stride;
                float inv = 1.0f / (float)(k * k);
                for (long q = 0; q < (long)nb * x->c; q++) {
                    const float *g = dy + (size_t)q * y->h * y->w;
                    float *o = dx + (size_t)q * x->h * x->w;
                    for (int oy = 0; oy < y->h; oy++)
                        for (int ox = 0; ox < y->w; ox++)
                            for (int ky = 0; ky < k; ky++)
                                for (int kx = 0; kx < k; kx++)
                                    o[(oy * s + ky) * x->w + ox * s + kx] += g[oy * y->w + ox] * inv;
                }
            }
            break;
        case NN_GAP:
        case NN_GMP:
            if (dx) {
                size_t hw = (size_t)x->h * x->w;
                for (long q = 0; q < (long)nb * x->c; q++) {
                    const float *r = x->d + (size_t)q * hw;
                    float *o = dx + (size_t)q * hw;
                    if (nd->op == NN_GAP) {
                        float g = dy[q] / (float)hw;
                        for (size_t j = 0; j < hw; j++) o[j] += g;
                    } else {
                        size_t bj = 0;
                        for (size_t j = 1; j < hw; j++)
                            if (r[j] > r[bj]) bj = j;
                        o[bj] += dy[q];
                    }
                }
            }
            break;
        case NN_CONCAT: {
            val_t *b = &e->v[nd->in[1]];
            float *db = b->ng ? grad_of(e, nd->in[1]) : NULL;
            if (b->ng && !db) goto nomem;
            for (int n = 0; n < nb; n++) {
                if (dx)
                    for (size_t j = 0; j < x->per; j++) dx[x->per * n + j] += dy[y->per * n + j];
                if (db)
                    for (size_t j = 0; j < b->per; j++)
                        db[b->per * n + j] += dy[y->per * n + x->per + j];
            }
            break;
        }
        case NN_FLATTEN:
            if (dx)
                for (size_t j = 0; j < tot; j++) dx[j] += dy[j];
            break;
        case NN_LINEAR: linear_bwd(e, nd, x, dy, dx); break;
        case NN_DROPOUT:
            if (dx) {
                if (e->train && nd->p > 0) {
                    float sc = 1.0f / (1.0f - nd->p);
                    for (size_t j = 0; j < tot; j++) dx[j] += e->mask[i][j] ? dy[j] * sc : 0;
                } else {
                    for (size_t j = 0; j < tot; j++) dx[j] += dy[j];
                }
            }
            break;
        case NN_ADD: {
            val_t *b = &e->v[nd->in[1]];
            float *db = b->ng ? grad_of(e, nd->in[1]) : NULL;
            if (b->ng && !db) goto nomem;
            int moved = dx == dy; /* dx is dy's own buffer (above) */
#pragma omp parallel for schedule(static) if (tot > 65536)
            for (size_t j = 0; j < tot; j++) {
                if (dx && !moved) dx[j] += dy[j];
                if (db) db[j] += dy[j];
            }
            break;
        }
        default: break;
        }
        grad_release(e, nd->out);
    }
    if (e->prof) {
        double t1 = now_s();
        e->ptime[1][m->node[0].op] += t1 - t0;
        if (e->pnode) e->pnode[m->nnode] += t1 - t0;
    }
    return URSA_OK;
nomem: /* a gradient buffer could not be made: the step is lost, not half done */
    for (int i = 0; i < m->nvalue; i++) grad_release(e, i);
    return URSA_ERR_NOMEM;
}

void nn_zero_grad(nn_model *m) {
    for (int i = 0; i < m->nparam; i++)
        if (m->param[i].g) memset(m->param[i].g, 0, sizeof(float) * m->param[i].n);
}

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

float nn_backward_ce_ls(nn_exec *e, const int *targets, float eps) {
    nn_model *m = e->m;
    int c = e->v[m->out].c;
    float loss = nn_softmax_ce_ls(e->v[m->out].d, targets, e->nb, c, eps, e->dout);
    if (isnan(loss)) return loss;
    return nn_backward(e, e->dout) == URSA_OK ? loss : NAN;
}

float nn_backward_ce(nn_exec *e, const int *targets) { return nn_backward_ce_ls(e, targets, 0.0f); }
