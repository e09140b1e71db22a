/* plan.c: making an executor: every value's shape, what each node will
 * run (Winograd or im2col), how much scratch each thread needs, and one
 * arena that holds all of it: the values, the threads' scratch, packed
 * weights, batch norm's statistics and dropout's masks. Only the gradients
 * of values (exec.c's pool, made as backward needs them) live outside it.
 * See nn.h. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "plan.h"
#include "winograd.h"

static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

/* floats an arena can have at most (1 TB): more is refused, and sums of
 * sizes saturate here rather than wrap */
#define NN_ARENA_MAX ((size_t)1 << 38)

/* a knob set to "0" in the environment (URSA_NN_WINOGRAD=0: im2col only) */
static int env_off(const char *name) {
    const char *v = getenv(name);
    return v && !strcmp(v, "0");
}

/* the scratch a conv node needs, into e->sn; its plan into e->np */
static void plan_conv(nn_exec *e, int idx, const nn_val *a, const nn_val *o) {
    const nn_kern *kt = e->kt;
    const nn_node *nd = &e->m->node[idx];
    nn_scratch_n *sn = &e->sn;
    int hwo = o->h * o->w, kk = a->c * nd->k * nd->k, ch = nn_conv_chunk(e, hwo), ld = hwo * ch;
    int wino = e->np[idx].wino = nn_conv_wino_ok(e, nd, o) && !env_off("URSA_NN_WINOGRAD");
    if (!wino) { /* forward: im2col straight into panels */
        sn->col = zmax(sn->col, nn_gemm_bpack_n(kt, kk, ld));
        if (nn_gemm_phases_ok(a->h, a->w, nd->stride, o->h, o->w))
            sn->ph = zmax(sn->ph, a->per * ch);
    }
    if (e->train) {
        /* the weight gradient through im2col (Winograd nodes too, for a
         * lone image on several threads) and the input gradient's columns */
        sn->col = zmax(sn->col, (size_t)kk * ld);
        sn->apk = zmax(sn->apk, nn_gemm_apack_n(kt, nd->cout, ld));
        sn->bpk = zmax(sn->bpk, nn_gemm_bpack_n(kt, ld, kk));
        if (!wino) sn->bpk = zmax(sn->bpk, nn_gemm_bpack_n(kt, nd->cout, ld));
        sn->dwt = zmax(sn->dwt, e->m->param[nd->w].n + (size_t)nd->cout);
        e->pk_n = zmax(e->pk_n, zmax(nn_conv_pack_n(e, nd, 0), nn_conv_pack_n(e, nd, 1)));
    }
    if (!wino) return;
    size_t T = (size_t)((o->h + 1) / 2) * ((o->w + 1) / 2);
    long P = (long)(T * nn_wino_chunk(e, (int)T));
    int cm = a->c > nd->cout ? a->c : nd->cout; /* forward: cin x P; input gradient: cout x P */
    sn->wv = zmax(sn->wv, nn_wino_v_n(kt, cm, P));
    sn->wm = zmax(sn->wm, nn_wino_m_n(cm, P));
    sn->scr = zmax(sn->scr, e->train ? nn_wino_wg_rows_n(o->h, o->w, P)
                                     : nn_wino_rows_n(o->h, o->w, P));
    if (e->train) {
        sn->wv = zmax(sn->wv, nn_wino_wv_n(a->c, P));
        sn->wgm = zmax(sn->wgm, 16 * (size_t)a->c * nd->cout);
        sn->apk = zmax(sn->apk, nn_gemm_apack_n(kt, nd->cout, (int)P));
        sn->bpk = zmax(sn->bpk, nn_gemm_bpack_n(kt, (int)P, a->c));
    }
}

/* "concat31 (concat)", or "#12 (concat)" for a node without a name */
static const char *node_desc(const nn_model *m, int i, char *buf, size_t len) {
    const nn_node *n = &m->node[i];
    if (n->name[0]) snprintf(buf, len, "%s (%s)", n->name, nn_op_name(n->op));
    else snprintf(buf, len, "#%d (%s)", i, nn_op_name(n->op));
    return buf;
}

#define FAIL(...) (snprintf(err, errlen, __VA_ARGS__), URSA_ERR_INVALID)

/* (in + 2 pad - k) / stride + 1, or 0 when the window does not fit */
static long long window_out(long long in, int k, int stride, int pad) {
    long long span = in + 2LL * pad - k;
    return span < 0 || stride < 1 ? 0 : span / stride + 1;
}

/* Every value's shape, node by node, in 64 bits: a node whose output does
 * not fit its input, or would pass NN_MAX_*, is refused by name before
 * any size is taken from it (33 Concats doubling a channel count wrapped
 * an int once, and the arena with it). */
/* floats of the threads' scratch as planned so far */
static size_t scratch_n(const nn_exec *e) {
    const nn_scratch_n *s = &e->sn;
    size_t one = s->col + s->ph + s->apk + s->bpk + s->dwt + s->wv + s->wm + s->wgm + s->scr;
    return one * (size_t)e->nth_max + 2 * e->pk_n;
}

static ursa_err plan_shapes(nn_exec *e, size_t budget, char *err, size_t errlen) {
    nn_model *m = e->m;
    nn_val *v = e->v;
    char nb[160];
    v[0].c = m->in_c;
    v[0].h = e->h;
    v[0].w = e->w;
    if (m->in_c < 1 || m->in_c > NN_MAX_CHANNELS || e->h > NN_MAX_SIDE || e->w > NN_MAX_SIDE ||
        (long long)m->in_c * e->h * e->w > NN_MAX_VALUE)
        return FAIL("input %dx%dx%d is larger than the engine takes", m->in_c, e->h, e->w);
    v[0].per = (size_t)v[0].c * v[0].h * v[0].w;
    for (int i = 0; i < m->nnode; i++) {
        const nn_node *n = &m->node[i];
        if (n->in[0] < 0 || n->in[0] >= m->nvalue || n->out < 1 || n->out >= m->nvalue ||
            (n->nin > 1 && (n->in[1] < 0 || n->in[1] >= m->nvalue)))
            return FAIL("node %s: a value out of range", node_desc(m, i, nb, sizeof nb));
        const nn_val *a = &v[n->in[0]], *b = n->nin > 1 ? &v[n->in[1]] : NULL;
        nn_val *o = &v[n->out];
        long long c = a->c, h = a->h, w = a->w;
        const nn_param *W = n->w >= 0 && n->w < m->nparam ? &m->param[n->w] : NULL;
        if ((!W && (n->op == NN_CONV || n->op == NN_LINEAR || n->op == NN_BN)) ||
            (!b && (n->op == NN_CONCAT || n->op == NN_ADD)))
            return FAIL("node %s: an input or weight is missing", node_desc(m, i, nb, sizeof nb));
        switch (n->op) {
        case NN_CONV:
            if (W->shape[1] != a->c)
                return FAIL("node %s: weight for %d channels, input has %d",
                            node_desc(m, i, nb, sizeof nb), W->shape[1], a->c);
            c = n->cout;
            h = window_out(a->h, n->k, n->stride, n->pad);
            w = window_out(a->w, n->k, n->stride, n->pad);
            break;
        case NN_MAXPOOL:
            h = window_out(a->h, n->k, n->stride, n->pad);
            w = window_out(a->w, n->k, n->stride, n->pad);
            break;
        case NN_AVGPOOL:
            h = window_out(a->h, n->k, n->stride, 0);
            w = window_out(a->w, n->k, n->stride, 0);
            break;
        case NN_GAP:
        case NN_GMP:
            h = w = 1;
            break;
        case NN_CONCAT:
            if (b->h != a->h || b->w != a->w)
                return FAIL("node %s: inputs of %dx%d and %dx%d", node_desc(m, i, nb, sizeof nb),
                            a->h, a->w, b->h, b->w);
            c = (long long)a->c + b->c;
            break;
        case NN_FLATTEN:
            c = (long long)a->c * a->h * a->w;
            h = w = 1;
            break;
        case NN_LINEAR:
            if ((long long)W->shape[1] != (long long)a->c * a->h * a->w)
                return FAIL("node %s: weight for %d inputs, input has %lld",
                            node_desc(m, i, nb, sizeof nb), W->shape[1],
                            (long long)a->c * a->h * a->w);
            c = n->cout;
            h = w = 1;
            break;
        case NN_ADD:
            if (b->c != a->c || b->h != a->h || b->w != a->w)
                return FAIL("node %s: inputs of %dx%dx%d and %dx%dx%d",
                            node_desc(m, i, nb, sizeof nb), a->c, a->h, a->w, b->c, b->h, b->w);
            break;
        case NN_BN:
            if (W->n != (size_t)a->c)
                return FAIL("node %s: %zu channels of statistics, input has %d",
                            node_desc(m, i, nb, sizeof nb), W->n, a->c);
            break;
        default:
            break;
        }
        if (h < 1 || w < 1)
            return FAIL("node %s: its window does not fit its %dx%d input",
                        node_desc(m, i, nb, sizeof nb), a->h, a->w);
        if (c < 1 || c > NN_MAX_CHANNELS || h > NN_MAX_SIDE || w > NN_MAX_SIDE ||
            c * h * w > NN_MAX_VALUE)
            return FAIL("node %s: output %lldx%lldx%lld is beyond the engine's bounds "
                        "(%d channels, %d a side, %d values an image)",
                        node_desc(m, i, nb, sizeof nb), c, h, w, NN_MAX_CHANNELS, NN_MAX_SIDE,
                        NN_MAX_VALUE);
        if (n->op == NN_CONV && (long long)a->c * n->k * n->k > NN_MAX_VALUE)
            return FAIL("node %s: %d channels under a %dx%d kernel is beyond the engine's bounds",
                        node_desc(m, i, nb, sizeof nb), a->c, n->k, n->k);
        o->c = (int)c;
        o->h = (int)h;
        o->w = (int)w;
        o->per = (size_t)c * (size_t)h * (size_t)w;
        if (n->op == NN_MAXPOOL) e->sn.scr = zmax(e->sn.scr, (size_t)a->h * o->w);
        if (n->op == NN_CONV) plan_conv(e, i, a, o);
        if (budget && (o->per * (size_t)e->n > budget || scratch_n(e) > budget)) {
            snprintf(err, errlen,
                     "node %s: its output (%zu MB) or scratch (%zu MB) for a batch of %d is over "
                     "nn.max-exec-mb (%zu)",
                     node_desc(m, i, nb, sizeof nb), (o->per * (size_t)e->n * sizeof(float)) >> 20,
                     (scratch_n(e) * sizeof(float)) >> 20, e->n, (budget * sizeof(float)) >> 20);
            return URSA_ERR_TOO_LARGE;
        }
    }
    return URSA_OK;
}

/* Values get buffers; in inference a buffer is reused once every reader of
 * its value has run, and a value nobody reads gives its buffer back as soon
 * as it is written (180 such convolutions of a 25 KB file kept 2.3 GB).
 * Sizes only: the arena comes later. The values' total is held to the
 * budget (floats, 0: none) as it grows, naming the node that passes it. */
static ursa_err plan_buffers(nn_exec *e, size_t budget, char *err, size_t errlen) {
    nn_model *m = e->m;
    int nv = m->nvalue;
    char nb[160];
    int *last = malloc(sizeof(int) * (size_t)nv);
    if (!last) return URSA_ERR_NOMEM;
    for (int i = 0; i < nv; i++) last[i] = i == m->out ? m->nnode : -1;
    for (int i = 0; i < m->nnode; i++)
        for (int j = 0; j < m->node[i].nin; j++) last[m->node[i].in[j]] = i;
    e->bufs = calloc((size_t)nv + 1, sizeof(nn_buf));
    if (!e->bufs) {
        free(last);
        return URSA_ERR_NOMEM;
    }
    /* value 0 is the caller's input, copied into its own buffer */
    e->v[0].buf = 0;
    e->bufs[0].n = e->v[0].per * e->n;
    e->bufs[0].busy = 1;
    e->nbufs = 1;
    size_t total = e->bufs[0].n;
    for (int i = 0; i < m->nnode; i++) {
        nn_val *o = &e->v[m->node[i].out];
        size_t need = o->per * e->n;
        int pick = -1;
        if (!e->train)
            for (int b = 1; b < e->nbufs; b++)
                if (!e->bufs[b].busy && (pick < 0 || e->bufs[b].n < e->bufs[pick].n) &&
                    e->bufs[b].n >= need / 2)
                    pick = b;
        if (pick < 0) pick = e->nbufs++;
        if (e->bufs[pick].n < need) {
            total += need - e->bufs[pick].n;
            e->bufs[pick].n = need;
        }
        if (budget && total > budget) {
            free(last);
            snprintf(err, errlen,
                     "node %s: its output (%zu MB for a batch of %d) takes the values to %zu MB, "
                     "over nn.max-exec-mb (%zu)",
                     node_desc(m, i, nb, sizeof nb), (need * sizeof(float)) >> 20, e->n,
                     (total * sizeof(float)) >> 20, (budget * sizeof(float)) >> 20);
            return URSA_ERR_TOO_LARGE;
        }
        e->bufs[pick].busy = 1;
        o->buf = pick;
        if (!e->train) {
            for (int j = 0; j < m->node[i].nin; j++) {
                int in = m->node[i].in[j];
                if (last[in] == i && in != 0) e->bufs[e->v[in].buf].busy = 0;
            }
            if (last[m->node[i].out] < 0) e->bufs[pick].busy = 0;
        }
    }
    free(last);
    return URSA_OK;
}

/* n floats from the arena at *at (64-byte aligned slices); with base NULL
 * only counts */
static float *carve(float *base, size_t *at, size_t n) {
    float *p = base ? base + *at : NULL;
    /* saturating: a size past memory is refused, never wrapped small */
    size_t r = n > NN_ARENA_MAX ? NN_ARENA_MAX : (n + 15) & ~(size_t)15;
    *at = *at > NN_ARENA_MAX - r ? NN_ARENA_MAX : *at + r;
    return p;
}

/* Lays the arena out (base NULL: only its size, returned). */
static size_t layout(nn_exec *e, float *base) {
    nn_model *m = e->m;
    size_t at = 0;
    for (int b = 0; b < e->nbufs; b++) e->bufs[b].p = carve(base, &at, e->bufs[b].n);
    for (int i = 0; i < m->nnode; i++) {
        const nn_node *nd = &m->node[i];
        nn_nplan *np = &e->np[i];
        if (nd->op == NN_CONV && !e->train) np->pk = carve(base, &at, nn_conv_pack_n(e, nd, 0));
        if (nd->op == NN_BN && e->train) {
            np->bn_mean = carve(base, &at, (size_t)e->v[nd->out].c);
            np->bn_istd = carve(base, &at, (size_t)e->v[nd->out].c);
        }
        if (nd->op == NN_DROPOUT && e->train)
            np->mask = (uint8_t *)carve(base, &at, (e->v[nd->out].per * e->n + 3) / 4);
    }
    e->pkf = carve(base, &at, e->pk_n);
    e->pkd = carve(base, &at, e->pk_n);
    e->dout = carve(base, &at, e->v[m->out].per * e->n);
    const nn_scratch_n *sn = &e->sn;
    for (int t = 0; t < e->nth_max; t++) {
        nn_scratch *s = &e->ts[t];
        size_t t0 = at;
        s->col = carve(base, &at, sn->col);
        s->ph = carve(base, &at, sn->ph);
        s->apk = carve(base, &at, sn->apk);
        s->bpk = carve(base, &at, sn->bpk);
        s->dwt = carve(base, &at, sn->dwt);
        s->wv = carve(base, &at, sn->wv);
        s->wm = carve(base, &at, sn->wm);
        s->wgm = carve(base, &at, sn->wgm);
        s->scr = carve(base, &at, sn->scr);
        e->tstride = at - t0;
    }
    return at;
}

ursa_err nn_exec_new(nn_model *m, int n, int h, int w, int train, nn_exec **out) {
    char err[256];
    return nn_exec_new_err(m, n, h, w, train, out, err, sizeof err);
}

ursa_err nn_exec_new_err(nn_model *m, int n, int h, int w, int train, nn_exec **out, char *err,
                         size_t errlen) {
    *out = NULL;
    if (m->oom) return snprintf(err, errlen, "out of memory"), URSA_ERR_NOMEM;
    if (n < 1 || h < 1 || w < 1) return FAIL("a batch of %d images of %dx%d", n, h, w);
    if (m->nnode < 1) return FAIL("the model has no nodes");
    /* the engine threads with OpenMP and gives OpenBLAS one thread a call */
    openblas_set_num_threads(1);
    nn_exec *e = calloc(1, sizeof *e);
    if (!e) return snprintf(err, errlen, "out of memory"), URSA_ERR_NOMEM;
    e->m = m;
    e->kt = nn_kern_get();
    e->n = n;
    e->h = h;
    e->w = w;
    e->train = train;
    e->rng = 0x853C49E6748FEA9Bull;
    e->chunk_min = 1024; /* measured: 256 to 2048 all within noise here */
    e->nth = e->nth_max = omp_get_max_threads() < 1 ? 1 : omp_get_max_threads();
    e->ph_val = -1;
    const char *prof = getenv("URSA_NN_PROFILE");
    e->prof = prof != NULL;
    ursa_err rc = URSA_ERR_NOMEM;
    if (prof && !strcmp(prof, "nodes") &&
        !(e->pnode = calloc((size_t)m->nnode * 2, sizeof(double))))
        goto fail;
    e->v = calloc((size_t)m->nvalue, sizeof(nn_val));
    e->np = calloc((size_t)m->nnode, sizeof(nn_nplan));
    e->ts = calloc((size_t)e->nth_max, sizeof(nn_scratch));
    if (!e->v || !e->np || !e->ts) goto fail;
    /* the budget is checked as the plan grows, before the arena is taken */
    size_t budget = nn_limits_get().exec_bytes / sizeof(float);
    if ((rc = plan_shapes(e, budget, err, errlen)) != URSA_OK) goto fail;
    if ((rc = plan_buffers(e, budget, err, errlen)) != URSA_OK) goto fail;
    e->arena_n = layout(e, NULL);
    if (e->arena_n >= NN_ARENA_MAX || (budget && e->arena_n > budget)) {
        rc = URSA_ERR_TOO_LARGE;
        char nb[160];
        int big = 0; /* the node with the largest output, to name */
        for (int i = 1; i < m->nnode; i++)
            if (e->v[m->node[i].out].per > e->v[m->node[big].out].per) big = i;
        snprintf(err, errlen,
                 "a batch of %d needs %zu MB (values, scratch, packed weights), over "
                 "nn.max-exec-mb (%zu); the largest output is node %s's, %zu MB",
                 n, (e->arena_n * sizeof(float)) >> 20, (budget * sizeof(float)) >> 20,
                 node_desc(m, big, nb, sizeof nb),
                 (e->v[m->node[big].out].per * (size_t)n * sizeof(float)) >> 20);
        goto fail;
    }
    rc = URSA_ERR_NOMEM;
    if (posix_memalign((void **)&e->arena, 64, sizeof(float) * (e->arena_n ? e->arena_n : 1)))
        goto fail;
    e->bytes = sizeof(float) * e->arena_n;
    layout(e, e->arena);
    for (int i = 0; i < m->nvalue; i++) e->v[i].d = e->bufs[e->v[i].buf].p;
    *out = e;
    return URSA_OK;
fail:
    if (rc == URSA_ERR_NOMEM) snprintf(err, errlen, "out of memory");
    nn_exec_free(e);
    return rc;
}
