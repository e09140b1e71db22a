/* plan.c: making an executor: every value's shape, what each node will
 * run (Winograd or im2col), how much scratch each thread needs, and one
 * arena that holds all of it: the values, the threads' scratch, packed
 * weights, batch norm's statistics and dropout's masks. Only the gradients
 * of values (exec.c's pool, made as backward needs them) live outside it.
 * See nn.h. */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "plan.h"
#include "winograd.h"

static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

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

static ursa_err plan_shapes(nn_exec *e) {
    nn_model *m = e->m;
    nn_val *v = e->v;
    v[0].c = m->in_c;
    v[0].h = e->h;
    v[0].w = e->w;
    v[0].per = (size_t)v[0].c * v[0].h * v[0].w;
    for (int i = 0; i < m->nnode; i++) {
        const nn_node *n = &m->node[i];
        const nn_val *a = &v[n->in[0]];
        nn_val *o = &v[n->out];
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
        if (n->op == NN_MAXPOOL) e->sn.scr = zmax(e->sn.scr, (size_t)a->h * o->w);
        if (n->op == NN_CONV) plan_conv(e, i, a, o);
    }
    return URSA_OK;
}

/* Values get buffers; in inference a buffer is reused once every reader of
 * its value has run. Sizes only: the arena comes later. */
static ursa_err plan_buffers(nn_exec *e) {
    nn_model *m = e->m;
    int nv = m->nvalue;
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
    return URSA_OK;
}

/* n floats from the arena at *at (64-byte aligned slices); with base NULL
 * only counts */
static float *carve(float *base, size_t *at, size_t n) {
    float *p = base ? base + *at : NULL;
    *at += (n + 15) & ~(size_t)15;
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
    *out = NULL;
    if (m->oom) return URSA_ERR_NOMEM;
    if (n < 1 || h < 1 || w < 1 || m->nnode < 1) return URSA_ERR_INVALID;
    /* the engine threads with OpenMP and gives OpenBLAS one thread a call */
    openblas_set_num_threads(1);
    nn_exec *e = calloc(1, sizeof *e);
    if (!e) return URSA_ERR_NOMEM;
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
    ursa_err err = URSA_ERR_NOMEM;
    if (prof && !strcmp(prof, "nodes") &&
        !(e->pnode = calloc((size_t)m->nnode * 2, sizeof(double))))
        goto fail;
    e->v = calloc((size_t)m->nvalue, sizeof(nn_val));
    e->np = calloc((size_t)m->nnode, sizeof(nn_nplan));
    e->ts = calloc((size_t)e->nth_max, sizeof(nn_scratch));
    if (!e->v || !e->np || !e->ts) goto fail;
    if ((err = plan_shapes(e)) != URSA_OK) goto fail;
    if ((err = plan_buffers(e)) != URSA_OK) goto fail;
    err = URSA_ERR_NOMEM;
    e->arena_n = layout(e, NULL);
    if (posix_memalign((void **)&e->arena, 64, sizeof(float) * (e->arena_n ? e->arena_n : 1)))
        goto fail;
    e->bytes = sizeof(float) * e->arena_n;
    layout(e, e->arena);
    for (int i = 0; i < m->nvalue; i++) e->v[i].d = e->bufs[e->v[i].buf].p;
    *out = e;
    return URSA_OK;
fail:
    nn_exec_free(e);
    return err;
}
