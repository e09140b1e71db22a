/* exec.c: running a model forward and backward on a batch, node by node:
 * convolutions in conv.c, the other layers in ops.c, the plan and its
 * memory in plan.c; here the drivers, the pool of gradient buffers and the
 * profile (URSA_NN_PROFILE). See nn.h.
 *
 * Training keeps every value for backward; gradients of values come from a
 * pool and go back to it as soon as the node that made the value is done,
 * so only a few are alive at once. Inference reuses value buffers once
 * their last reader has run. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops.h"
#include "plan.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void print_profile(const nn_exec *e) {
    double tot = 0;
    for (int d = 0; d < 2; d++)
        for (int o = 0; o < NN_OP_COUNT; o++) tot += e->ptime[d][o];
    fprintf(stderr, "nn profile: %ld passes, %.1f ms a pass, isa %s\n", e->pcalls,
            tot * 1e3 / e->pcalls, e->kt->name);
    for (int d = 0; d < 2; d++)
        for (int o = 0; o < NN_OP_COUNT; o++)
            if (e->ptime[d][o] > 0)
                fprintf(stderr, "  %-8s %-8s %8.2f ms %5.1f%%\n", nn_op_name((nn_op)o),
                        d ? "backward" : "forward", e->ptime[d][o] * 1e3 / e->pcalls,
                        100 * e->ptime[d][o] / tot);
    for (int i = 0; e->pnode && i < e->m->nnode; i++) {
        const nn_node *nd = &e->m->node[i];
        const nn_val *y = &e->v[nd->out];
        double f = e->pnode[i], b = e->pnode[e->m->nnode + i];
        fprintf(stderr, "  node %3d %-8s %-24s -> %4dx%-3dx%-3d fwd %7.3f ms bwd %7.3f ms %5.1f%%%s\n",
                i, nn_op_name(nd->op), nd->w >= 0 ? e->m->param[nd->w].name : "", y->c, y->h, y->w,
                f * 1e3 / e->pcalls, b * 1e3 / e->pcalls, 100 * (f + b) / tot,
                e->np[i].wino ? " winograd" : "");
    }
}

void nn_exec_free(nn_exec *e) {
    if (!e) return;
    if (e->prof && e->pcalls) print_profile(e);
    free(e->pnode);
    for (int i = 0; i < e->ngpool; i++) free(e->gpool[i].p);
    free(e->gpool);
    free(e->arena);
    free(e->bufs);
    free(e->np);
    free(e->ts);
    free(e->v);
    free(e);
}

size_t nn_exec_bytes(const nn_exec *e) { return e->bytes; }
int nn_threads(void) { return omp_get_max_threads(); }
void nn_set_threads(int n) { omp_set_num_threads(n < 1 ? 1 : n); }
void nn_exec_set_threads(nn_exec *e, int n) {
    /* the per-thread scratch was made for nth_max threads: fewer is fine */
    if (n >= 1 && n <= e->nth_max) e->nth = n;
}
void nn_exec_seed(nn_exec *e, uint64_t seed) { e->rng = seed ? seed : 1; }
void nn_exec_want_input_grad(nn_exec *e, int on) { e->want_in_grad = on; }
const float *nn_input_grad(nn_exec *e) { return e->v[0].g; }
int nn_out_size(const nn_model *m) { return m->vc[m->out]; }
const char *nn_exec_isa(const nn_exec *e) { return e->kt->name; }

const float *nn_value(nn_exec *e, int v, int *c, int *h, int *w) {
    if (c) *c = e->v[v].c;
    if (h) *h = e->v[v].h;
    if (w) *w = e->v[v].w;
    return e->v[v].d;
}

const float *nn_forward(nn_exec *e, const float *in, int nb) {
    nn_model *m = e->m;
    const nn_kern *kt = e->kt;
    if (nb < 1 || nb > e->n) return NULL;
    e->nb = nb;
    e->ph_val = -1;
    memcpy(e->v[0].d, in, sizeof(float) * e->v[0].per * nb);
    e->pcalls++;
    double t0 = e->prof ? now_s() : 0;
    for (int i = 0; i < m->nnode; i++) {
        nn_node *nd = &m->node[i];
        nn_val *x = &e->v[nd->in[0]], *y = &e->v[nd->out];
        size_t tot = y->per * nb, hw = (size_t)x->h * x->w;
        if (e->prof && i) {
            double t1 = now_s();
            e->ptime[0][m->node[i - 1].op] += t1 - t0;
            if (e->pnode) e->pnode[i - 1] += t1 - t0;
            t0 = t1;
        }
        switch (nd->op) {
        case NN_CONV: nn_conv_forward(e, nd, x, y); break;
        case NN_BN: {
            int calib = nd->calib && e->train;
            nn_bn_forward(kt, y->d, e->np[i].bn_mean, e->np[i].bn_istd, x->d, m->param[nd->w].w,
                          m->param[nd->b].w, m->param[nd->rm].w, m->param[nd->rv].w, nb, x->c, hw,
                          nd->eps, nd->momentum, e->train, calib, nd->relu, e->nth);
            if (calib) nd->calib = 0;
            break;
        }
        case NN_RELU: nn_relu_forward(y->d, x->d, tot); break;
        case NN_MAXPOOL:
            nn_maxpool_forward(y->d, x->d, nb * x->c, x->h, x->w, nd->k, nd->stride, nd->pad, y->h,
                               y->w, e->ts[0].scr, e->tstride, e->nth);
            break;
        case NN_AVGPOOL:
            nn_avgpool_forward(y->d, x->d, nb * x->c, x->h, x->w, nd->k, nd->stride, y->h, y->w);
            break;
        case NN_GAP:
        case NN_GMP: nn_gpool_forward(y->d, x->d, nb * x->c, hw, nd->op == NN_GMP); break;
        case NN_CONCAT:
            nn_concat_forward(y->d, x->d, e->v[nd->in[1]].d, nb, x->per, e->v[nd->in[1]].per);
            break;
        case NN_FLATTEN:
            if (y->d != x->d) memcpy(y->d, x->d, sizeof(float) * tot);
            break;
        case NN_LINEAR:
            nn_linear_forward(y->d, x->d, m->param[nd->w].w,
                              nd->b >= 0 ? m->param[nd->b].w : NULL, nb, (int)x->per, nd->cout,
                              e->nth);
            break;
        case NN_DROPOUT:
            nn_dropout_forward(y->d, e->train ? e->np[i].mask : NULL, x->d, tot, nd->p, &e->rng);
            break;
        case NN_ADD:
            nn_add_forward(kt, y->d, x->d, e->v[nd->in[1]].d, tot, nd->relu, e->nth);
            break;
        default: break;
        }
    }
    if (e->prof) {
        double t1 = now_s();
        e->ptime[0][m->node[m->nnode - 1].op] += t1 - t0;
        if (e->pnode) e->pnode[m->nnode - 1] += t1 - t0;
    }
    return e->v[m->out].d;
}

/* ---- backward ------------------------------------------------------------ */

/* value v's gradient buffer, made zero when it is new; with zero 0 a new
 * one is left as it is, for a caller that writes all of it first */
static float *grad_get(nn_exec *e, int v, int zero) {
    nn_val *x = &e->v[v];
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
            nn_buf *nb = realloc(e->gpool, sizeof(nn_buf) * (size_t)c);
            if (!nb) return NULL;
            e->gpool = nb;
            e->cap_gpool = c;
        }
        float *p = NULL;
        if (posix_memalign((void **)&p, 64, sizeof(float) * need)) return NULL;
        e->bytes += sizeof(float) * need;
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

static void grad_release(nn_exec *e, int v) {
    nn_val *x = &e->v[v];
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

/* d = y > 0 ? d : 0 on the threads */
static void relu_mask(nn_exec *e, float *d, const float *y, size_t n) {
    const nn_kern *kt = e->kt;
    if (n <= 65536 || e->nth < 2) {
        kt->relu_mask(d, y, n);
        return;
    }
#pragma omp parallel num_threads(e->nth)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        size_t lo = n * t / T, hi = n * (t + 1) / T;
        kt->relu_mask(d + lo, y + lo, hi - lo);
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
        nn_val *y = &e->v[nd->out], *x = &e->v[nd->in[0]];
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
        size_t tot = y->per * nb, hw = (size_t)x->h * x->w;
        if (nd->relu) relu_mask(e, dy, y->d, tot); /* a fused ReLU */
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
        case NN_CONV: nn_conv_backward(e, nd, x, y, dy, dx, fresh); break;
        case NN_BN:
            nn_bn_backward(e->kt, dx, trainable(m, nd->w) ? m->param[nd->w].g : NULL,
                           trainable(m, nd->b) ? m->param[nd->b].g : NULL, dy, x->d,
                           m->param[nd->w].w, e->np[i].bn_mean, e->np[i].bn_istd, nb, x->c, hw,
                           fresh, e->nth);
            break;
        case NN_RELU:
            if (dx) nn_relu_backward(dx, dy, y->d, tot, e->nth);
            break;
        case NN_MAXPOOL:
            if (dx)
                nn_maxpool_backward(dx, dy, x->d, nb * x->c, x->h, x->w, nd->k, nd->stride,
                                    nd->pad, y->h, y->w, e->nth);
            break;
        case NN_AVGPOOL:
            if (dx)
                nn_avgpool_backward(dx, dy, nb * x->c, x->h, x->w, nd->k, nd->stride, y->h, y->w);
            break;
        case NN_GAP:
        case NN_GMP:
            if (dx) nn_gpool_backward(dx, dy, x->d, nb * x->c, hw, nd->op == NN_GMP);
            break;
        case NN_CONCAT: {
            nn_val *b = &e->v[nd->in[1]];
            float *db = b->ng ? grad_get(e, nd->in[1], 1) : NULL;
            if (b->ng && !db) goto nomem;
            nn_concat_backward(dx, db, dy, nb, x->per, b->per);
            break;
        }
        case NN_FLATTEN:
            if (dx)
                for (size_t j = 0; j < tot; j++) dx[j] += dy[j];
            break;
        case NN_LINEAR:
            nn_linear_backward(dx, trainable(m, nd->w) ? m->param[nd->w].g : NULL,
                               trainable(m, nd->b) ? m->param[nd->b].g : NULL, dy, x->d,
                               m->param[nd->w].w, nb, (int)x->per, nd->cout, e->nth);
            break;
        case NN_DROPOUT:
            if (dx) nn_dropout_backward(dx, dy, e->train ? e->np[i].mask : NULL, tot, nd->p);
            break;
        case NN_ADD: {
            nn_val *b = &e->v[nd->in[1]];
            float *db = b->ng ? grad_get(e, nd->in[1], 1) : NULL;
            if (b->ng && !db) goto nomem;
            int moved = dx == dy; /* dx is dy's own buffer (above) */
#pragma omp parallel for schedule(static) num_threads(e->nth) if (tot > 65536)
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

float nn_backward_ce_ls(nn_exec *e, const int *targets, float eps) {
    nn_model *m = e->m;
    int c = e->v[m->out].c;
    float loss = nn_softmax_ce_ls(e->v[m->out].d, targets, e->nb, c, eps, e->dout);
    if (isnan(loss)) return loss;
    return nn_backward(e, e->dout) == URSA_OK ? loss : NAN;
}

float nn_backward_ce(nn_exec *e, const int *targets) { return nn_backward_ce_ls(e, targets, 0.0f); }
