/* model.c: building models, their parameters and metadata; see nn.h. */
#include "nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

const char *nn_op_name(nn_op op) {
    static const char *const names[NN_OP_COUNT] = {"conv", "bn", "relu", "maxpool", "avgpool",
                                                   "gap", "gmp", "concat", "flatten", "linear",
                                                   "dropout", "add"};
    return op >= 0 && op < NN_OP_COUNT ? names[op] : "?";
}

/* Makes room for need items in *p; on failure leaves *p as it was, marks
 * the model (m->oom: building goes on as no-ops, executors and the
 * architecture functions then report URSA_ERR_NOMEM) and returns 0. */
static int grow(nn_model *m, void **p, int *cap, int need, size_t sz) {
    if (m->oom) return 0;
    if (need <= *cap) return 1;
    int c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * sz);
    if (!q) {
        m->oom = 1;
        return 0;
    }
    *p = q;
    *cap = c;
    return 1;
}

void nn_model_init(nn_model *m, int in_c) {
    memset(m, 0, sizeof *m);
    m->in_c = in_c;
    m->nvalue = 1;
    if (grow(m, (void **)&m->vc, &m->cap_value, 1, sizeof(int))) m->vc[0] = in_c;
    m->ngroups = 1;
    nn_meta_default(&m->meta);
}

void nn_model_free(nn_model *m) {
    for (int i = 0; m->param && i < m->nparam; i++) {
        free(m->param[i].w);
        free(m->param[i].g);
        free(m->param[i].m);
        free(m->param[i].v);
    }
    free(m->param);
    free(m->node);
    free(m->vc);
    nn_meta_free(&m->meta);
    memset(m, 0, sizeof *m);
}

static void *dup_floats(const float *p, size_t n) {
    if (!p) return NULL;
    float *d = malloc(n * sizeof(float));
    if (d) memcpy(d, p, n * sizeof(float));
    return d;
}

ursa_err nn_model_copy(const nn_model *s, nn_model *d) {
    memset(d, 0, sizeof *d);
    *d = *s;
    d->node = malloc(sizeof(nn_node) * (size_t)(s->nnode ? s->nnode : 1));
    d->param = calloc((size_t)(s->nparam ? s->nparam : 1), sizeof(nn_param));
    d->vc = malloc(sizeof(int) * (size_t)s->nvalue);
    d->cap_node = s->nnode;
    d->cap_param = s->nparam;
    d->cap_value = s->nvalue;
    memset(&d->meta, 0, sizeof d->meta);
    if (!d->node || !d->param || !d->vc) goto nomem;
    memcpy(d->node, s->node, sizeof(nn_node) * (size_t)s->nnode);
    memcpy(d->vc, s->vc, sizeof(int) * (size_t)s->nvalue);
    for (int i = 0; i < s->nparam; i++) {
        d->param[i] = s->param[i];
        d->param[i].m = d->param[i].v = NULL;
        d->param[i].w = dup_floats(s->param[i].w, s->param[i].n);
        d->param[i].g = s->param[i].g ? calloc(s->param[i].n, sizeof(float)) : NULL;
        if (!d->param[i].w || (s->param[i].g && !d->param[i].g)) goto nomem;
    }
    if (nn_meta_copy(&s->meta, &d->meta) != URSA_OK) goto nomem;
    return URSA_OK;
nomem:
    nn_model_free(d);
    return URSA_ERR_NOMEM;
}

int nn_param_add(nn_model *m, const char *name, nn_pkind kind, int ndim, const int *shape) {
    if (!grow(m, (void **)&m->param, &m->cap_param, m->nparam + 1, sizeof(nn_param))) return -1;
    nn_param *p = &m->param[m->nparam];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->kind = kind;
    p->ndim = ndim;
    p->n = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->n *= (size_t)shape[i];
    }
    p->w = calloc(p->n, sizeof(float));
    if (kind != NN_P_BN_RM && kind != NN_P_BN_RV) p->g = calloc(p->n, sizeof(float));
    if (!p->w || (kind != NN_P_BN_RM && kind != NN_P_BN_RV && !p->g)) {
        free(p->w);
        free(p->g);
        m->oom = 1;
        return -1;
    }
    if (kind == NN_P_BN_W || kind == NN_P_BN_RV)
        for (size_t i = 0; i < p->n; i++) p->w[i] = 1.0f;
    p->group = m->group;
    return m->nparam++;
}

int nn_param_find(const nn_model *m, const char *name) {
    for (int i = 0; i < m->nparam; i++)
        if (!strcmp(m->param[i].name, name)) return i;
    return -1;
}

size_t nn_param_count(const nn_model *m) {
    size_t n = 0;
    for (int i = 0; i < m->nparam; i++)
        if (m->param[i].g) n += m->param[i].n;
    return n;
}

/* NULL once the model is out of memory: builders then return value 0 */
static nn_node *node_new(nn_model *m, nn_op op, int a, int b, int cout) {
    if (!grow(m, (void **)&m->node, &m->cap_node, m->nnode + 1, sizeof(nn_node)) ||
        !grow(m, (void **)&m->vc, &m->cap_value, m->nvalue + 1, sizeof(int)))
        return NULL;
    nn_node *n = &m->node[m->nnode++];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->in[0] = a;
    n->in[1] = b;
    n->nin = b >= 0 ? 2 : 1;
    n->w = n->b = n->rm = n->rv = -1;
    n->out = m->nvalue;
    m->vc[m->nvalue++] = cout;
    m->out = n->out;
    return n;
}

static void pname(char *buf, size_t len, const char *base, const char *what) {
    if (base && *base) snprintf(buf, len, "%s.%s", base, what);
    else snprintf(buf, len, "%s", what);
}

int nn_conv(nn_model *m, const char *name, int x, int cout, int k, int stride, int pad, int bias) {
    int cin = m->vc[x];
    char pn[96];
    int shp[4] = {cout, cin, k, k};
    pname(pn, sizeof pn, name, "weight");
    int w = nn_param_add(m, pn, NN_P_CONV_W, 4, shp);
    int b = -1;
    if (bias) {
        pname(pn, sizeof pn, name, "bias");
        b = nn_param_add(m, pn, NN_P_BIAS, 1, shp);
    }
    nn_node *n = node_new(m, NN_CONV, x, -1, cout);
    if (!n) return 0;
    n->k = k;
    n->stride = stride;
    n->pad = pad;
    n->cout = cout;
    n->w = w;
    n->b = b;
    snprintf(n->name, sizeof n->name, "%s", name ? name : "");
    return n->out;
}

int nn_bn(nn_model *m, const char *name, int x, int relu) {
    int c = m->vc[x];
    char pn[96];
    int w, b, rm, rv;
    pname(pn, sizeof pn, name, "weight");
    w = nn_param_add(m, pn, NN_P_BN_W, 1, &c);
    pname(pn, sizeof pn, name, "bias");
    b = nn_param_add(m, pn, NN_P_BN_B, 1, &c);
    pname(pn, sizeof pn, name, "running_mean");
    rm = nn_param_add(m, pn, NN_P_BN_RM, 1, &c);
    pname(pn, sizeof pn, name, "running_var");
    rv = nn_param_add(m, pn, NN_P_BN_RV, 1, &c);
    nn_node *n = node_new(m, NN_BN, x, -1, c);
    if (!n) return 0;
    n->w = w;
    n->b = b;
    n->rm = rm;
    n->rv = rv;
    n->relu = relu;
    n->eps = 1e-5f;
    n->momentum = 0.1f;
    snprintf(n->name, sizeof n->name, "%s", name ? name : "");
    return n->out;
}

static int out_of(const nn_node *n) { return n ? n->out : 0; }

int nn_relu(nn_model *m, int x) { return out_of(node_new(m, NN_RELU, x, -1, m->vc[x])); }

int nn_maxpool(nn_model *m, int x, int k, int stride, int pad) {
    nn_node *n = node_new(m, NN_MAXPOOL, x, -1, m->vc[x]);
    if (!n) return 0;
    n->k = k;
    n->stride = stride;
    n->pad = pad;
    return n->out;
}

int nn_avgpool(nn_model *m, int x, int k, int stride) {
    nn_node *n = node_new(m, NN_AVGPOOL, x, -1, m->vc[x]);
    if (!n) return 0;
    n->k = k;
    n->stride = stride;
    return n->out;
}

int nn_gap(nn_model *m, int x) { return out_of(node_new(m, NN_GAP, x, -1, m->vc[x])); }
int nn_gmp(nn_model *m, int x) { return out_of(node_new(m, NN_GMP, x, -1, m->vc[x])); }
int nn_concat(nn_model *m, int a, int b) {
    /* saturated, not wrapped: importers refuse more than NN_MAX_CHANNELS,
     * and the plan computes the real count */
    long long c = (long long)m->vc[a] + m->vc[b];
    return out_of(node_new(m, NN_CONCAT, a, b, c > NN_MAX_CHANNELS ? NN_MAX_CHANNELS + 1 : (int)c));
}
/* channels after flatten are known only for 1x1 inputs at build time; the
 * executor computes the real count */
int nn_flatten(nn_model *m, int x) { return out_of(node_new(m, NN_FLATTEN, x, -1, m->vc[x])); }

int nn_linear(nn_model *m, const char *name, int x, int cout, int bias) {
    int cin = m->vc[x];
    char pn[96];
    int shp[2] = {cout, cin};
    pname(pn, sizeof pn, name, "weight");
    int w = nn_param_add(m, pn, NN_P_LIN_W, 2, shp);
    int b = -1;
    if (bias) {
        pname(pn, sizeof pn, name, "bias");
        b = nn_param_add(m, pn, NN_P_BIAS, 1, &cout);
    }
    nn_node *n = node_new(m, NN_LINEAR, x, -1, cout);
    if (!n) return 0;
    n->cout = cout;
    n->w = w;
    n->b = b;
    snprintf(n->name, sizeof n->name, "%s", name ? name : "");
    return n->out;
}

int nn_dropout(nn_model *m, int x, float p) {
    nn_node *n = node_new(m, NN_DROPOUT, x, -1, m->vc[x]);
    if (!n) return 0;
    n->p = p < 0 ? 0 : p > 0.99f ? 0.99f : p; /* p = 1 would divide by zero */
    return n->out;
}

int nn_add(nn_model *m, int a, int b, int relu) {
    nn_node *n = node_new(m, NN_ADD, a, b, m->vc[a]);
    if (!n) return 0;
    n->relu = relu;
    return n->out;
}

/* Drops nodes after the one making v, and parameters only they used. */
void nn_cut(nn_model *m, int v) {
    int keep = 0;
    for (int i = 0; i < m->nnode; i++)
        if (m->node[i].out == v) keep = i + 1;
    m->nnode = keep;
    m->nvalue = 1;
    for (int i = 0; i < keep; i++) /* ids need not grow along the nodes (nn_unfold_bn) */
        if (m->node[i].out + 1 > m->nvalue) m->nvalue = m->node[i].out + 1;
    m->out = v;
    /* parameters still referenced */
    char *used = calloc((size_t)m->nparam + 1, 1);
    int *map = malloc(sizeof(int) * (size_t)(m->nparam + 1));
    if (!used || !map) {
        free(used);
        free(map);
        m->oom = 1; /* the unused parameters stay: harmless, but say so */
        return;
    }
    for (int i = 0; i < m->nnode; i++) {
        const nn_node *n = &m->node[i];
        int ps[4] = {n->w, n->b, n->rm, n->rv};
        for (int j = 0; j < 4; j++)
            if (ps[j] >= 0) used[ps[j]] = 1;
    }
    int np = 0;
    for (int i = 0; i < m->nparam; i++) {
        if (used[i]) {
            map[i] = np;
            m->param[np++] = m->param[i];
        } else {
            map[i] = -1;
            free(m->param[i].w);
            free(m->param[i].g);
            free(m->param[i].m);
            free(m->param[i].v);
        }
    }
    m->nparam = np;
    for (int i = 0; i < m->nnode; i++) {
        nn_node *n = &m->node[i];
        int *ps[4] = {&n->w, &n->b, &n->rm, &n->rv};
        for (int j = 0; j < 4; j++)
            if (*ps[j] >= 0) *ps[j] = map[*ps[j]];
    }
    free(map);
    free(used);
}

/* ---- initialisation ------------------------------------------------------ */

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_normal(uint64_t *s) {
    double u1 = ((rng_next(s) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (rng_next(s) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(2 * M_PI * u2);
}

void nn_init_weights(nn_model *m, uint64_t seed) {
    uint64_t s = seed;
    for (int i = 0; i < m->nparam; i++) {
        nn_param *p = &m->param[i];
        double sd = 0;
        switch (p->kind) {
        case NN_P_CONV_W: /* kaiming normal, fan_out, relu: torchvision resnets */
            sd = sqrt(2.0 / ((double)p->shape[0] * p->shape[2] * p->shape[3]));
            break;
        case NN_P_LIN_W: /* kaiming normal, fan_in: fast.ai's head */
            sd = sqrt(2.0 / p->shape[1]);
            break;
        case NN_P_BN_W:
        case NN_P_BN_RV:
            for (size_t j = 0; j < p->n; j++) p->w[j] = 1;
            continue;
        default:
            memset(p->w, 0, p->n * sizeof(float));
            continue;
        }
        for (size_t j = 0; j < p->n; j++) p->w[j] = (float)(sd * rng_normal(&s));
    }
}

void nn_freeze(nn_model *m) {
    for (int i = 0; i < m->nparam; i++) {
        nn_param *p = &m->param[i];
        int bn = p->kind == NN_P_BN_W || p->kind == NN_P_BN_B;
        p->frozen = p->group < m->ngroups - 1 && !bn;
    }
}

void nn_unfreeze(nn_model *m) {
    for (int i = 0; i < m->nparam; i++) m->param[i].frozen = 0;
}

/* ---- rewriting ----------------------------------------------------------- */

/* The graph passes below run in time linear in the nodes (an imported
 * graph may have tens of thousands): each value's reader count and a
 * reader are found once, and a value a pass makes redundant is renamed at
 * the end in one sweep. */
typedef struct {
    int *cnt;  /* per value: node inputs reading it */
    int *rd;   /* per value: the last node reading it (-1: none) */
    int *ren;  /* per value: what it becomes (itself unless renamed) */
    char *dead; /* per node: dropped by the pass */
} pass_tabs;

static void tabs_free(pass_tabs *t) {
    free(t->cnt);
    free(t->rd);
    free(t->ren);
    free(t->dead);
}

static int tabs_new(const nn_model *m, pass_tabs *t) {
    size_t nv = (size_t)m->nvalue + 1;
    t->cnt = calloc(nv, sizeof(int));
    t->rd = malloc(nv * sizeof(int));
    t->ren = malloc(nv * sizeof(int));
    t->dead = calloc((size_t)m->nnode + 1, 1);
    if (!t->cnt || !t->rd || !t->ren || !t->dead) {
        tabs_free(t);
        return -1;
    }
    for (size_t v = 0; v < nv; v++) t->rd[v] = -1, t->ren[v] = (int)v;
    for (int i = 0; i < m->nnode; i++)
        for (int j = 0; j < m->node[i].nin; j++) {
            int v = m->node[i].in[j];
            if (v >= 0 && v < m->nvalue) t->cnt[v]++, t->rd[v] = i;
        }
    return 0;
}

/* applies the renames, drops the dead nodes; frees the tables */
static void tabs_apply(nn_model *m, pass_tabs *t) {
    int k = 0;
    for (int i = 0; i < m->nnode; i++) {
        if (t->dead[i]) continue;
        nn_node *n = &m->node[i];
        for (int j = 0; j < n->nin; j++) /* chains end: a value is renamed to an earlier one */
            while (n->in[j] >= 0 && n->in[j] < m->nvalue && t->ren[n->in[j]] != n->in[j])
                n->in[j] = t->ren[n->in[j]];
        m->node[k++] = *n;
    }
    m->nnode = k;
    while (m->out >= 0 && m->out < m->nvalue && t->ren[m->out] != m->out) m->out = t->ren[m->out];
    tabs_free(t);
}

void nn_fuse_relu(nn_model *m) {
    pass_tabs t;
    if (tabs_new(m, &t)) return; /* the model stays as it was: correct, only slower */
    for (int i = 0; i < m->nnode; i++) {
        nn_node *n = &m->node[i];
        if (t.dead[i] || n->relu || n->out == m->out ||
            (n->op != NN_CONV && n->op != NN_BN && n->op != NN_ADD) || t.cnt[n->out] != 1)
            continue;
        int j = t.rd[n->out];
        nn_node *nx = &m->node[j];
        if (j <= i || t.dead[j] || nx->op != NN_RELU || nx->in[0] != n->out) continue;
        n->relu = 1;
        t.ren[nx->out] = n->out;
        t.dead[j] = 1;
    }
    tabs_apply(m, &t);
}

ursa_err nn_fuse_for_inference(const nn_model *src, nn_model *d) {
    ursa_err e = nn_model_copy(src, d);
    if (e != URSA_OK) return e;
    pass_tabs t;
    if (tabs_new(d, &t)) {
        nn_model_free(d);
        return URSA_ERR_NOMEM;
    }
    for (int i = 0; i < d->nnode; i++) {
        nn_node *n = &d->node[i];
        if (t.dead[i] || t.cnt[n->out] != 1 || n->out == d->out) continue;
        /* the single reader of this node's output */
        int r = t.rd[n->out];
        if (r <= i || t.dead[r] || d->node[r].in[0] != n->out || d->node[r].nin != 1) continue;
        nn_node *nx = &d->node[r];
        if (n->op == NN_CONV && nx->op == NN_BN && !n->relu) {
            /* w' = w * g / sqrt(var + eps); b' = (b - mean) * g / sqrt(var + eps) + beta */
            nn_param *w = &d->param[n->w];
            const float *g = d->param[nx->w].w, *be = d->param[nx->b].w;
            const float *mu = d->param[nx->rm].w, *var = d->param[nx->rv].w;
            if (n->b < 0) {
                char pn[96];
                snprintf(pn, sizeof pn, "%s.bias", n->name[0] ? n->name : w->name);
                int shp = n->cout;
                int bi = nn_param_add(d, pn, NN_P_BIAS, 1, &shp);
                if (bi < 0) {
                    tabs_free(&t);
                    nn_model_free(d);
                    return URSA_ERR_NOMEM;
                }
                n = &d->node[i];
                nx = &d->node[r];
                w = &d->param[n->w];
                g = d->param[nx->w].w, be = d->param[nx->b].w;
                mu = d->param[nx->rm].w, var = d->param[nx->rv].w;
                n->b = bi;
            }
            float *b = d->param[n->b].w;
            size_t per = w->n / (size_t)n->cout;
            for (int c = 0; c < n->cout; c++) {
                float s = g[c] / sqrtf(var[c] + nx->eps);
                for (size_t j = 0; j < per; j++) w->w[(size_t)c * per + j] *= s;
                b[c] = (b[c] - mu[c]) * s + be[c];
            }
            n->relu = nx->relu;
            t.ren[nx->out] = n->out;
            t.dead[r] = 1;
        }
    }
    tabs_apply(d, &t);
    nn_fuse_relu(d);
    /* drop the BN parameters no node uses any more */
    nn_cut(d, d->out);
    if (d->oom) {
        nn_model_free(d);
        return URSA_ERR_NOMEM;
    }
    return URSA_OK;
}

void nn_unfold_bn(nn_model *m) {
    int n0 = m->nnode, nv0 = m->nvalue;
    int *first = malloc(sizeof(int) * ((size_t)nv0 + 1)), *bn_of = malloc(sizeof(int) * ((size_t)n0 + 1));
    int *ren = malloc(sizeof(int) * ((size_t)nv0 + 1));
    if (!first || !bn_of || !ren) {
        free(first);
        free(bn_of);
        free(ren);
        m->oom = 1;
        return;
    }
    /* each value's first reader, on the graph as it is: an insertion below
     * changes only its own conv's readers */
    for (int v = 0; v <= nv0; v++) first[v] = -1, ren[v] = v;
    for (int i = n0 - 1; i >= 0; i--)
        for (int j = 0; j < m->node[i].nin; j++)
            if (m->node[i].in[j] >= 0 && m->node[i].in[j] < nv0) first[m->node[i].in[j]] = i;
    for (int i = 0; i < n0; i++) {
        bn_of[i] = -1;
        nn_node *n = &m->node[i];
        if (n->op != NN_CONV || n->b < 0) continue;
        int r = first[n->out];
        if (r >= 0 && m->node[r].op == NN_BN) continue;
        /* a BN after node i that takes over the bias (appended, moved below) */
        char base[96];
        snprintf(base, sizeof base, "%s_bn", n->name[0] ? n->name : m->param[n->w].name);
        int grp = m->group;
        m->group = m->param[n->w].group;
        int relu = n->relu, old_out = n->out, out = m->out;
        int v = nn_bn(m, base, old_out, relu);
        m->out = out;
        m->group = grp;
        if (m->oom) break;
        n = &m->node[i];
        n->relu = 0;
        nn_node *bn = &m->node[m->nnode - 1];
        bn->calib = 1;
        /* the bias moves into the BN's beta, applied after calibration */
        memcpy(m->param[bn->b].w, m->param[n->b].w, sizeof(float) * (size_t)n->cout);
        n->b = -1; /* the bias parameter stays unused until the cut below */
        bn_of[i] = m->nnode - 1;
        ren[old_out] = v;
    }
    nn_node *nodes = m->oom ? NULL : malloc(sizeof(nn_node) * ((size_t)m->nnode + 1));
    if (!nodes) {
        m->oom = 1;
    } else {
        /* every node in its place, each new BN right after its conv, the
         * conv's readers reading the BN */
        int k = 0;
        for (int i = 0; i < n0; i++) {
            nodes[k] = m->node[i];
            for (int j = 0; j < nodes[k].nin; j++)
                if (nodes[k].in[j] >= 0 && nodes[k].in[j] < nv0) nodes[k].in[j] = ren[nodes[k].in[j]];
            k++;
            if (bn_of[i] >= 0) nodes[k++] = m->node[bn_of[i]];
        }
        if (m->out >= 0 && m->out < nv0) m->out = ren[m->out];
        memcpy(m->node, nodes, sizeof(nn_node) * (size_t)k);
        m->nnode = k;
        free(nodes);
    }
    free(first);
    free(bn_of);
    free(ren);
    if (!m->oom) nn_cut(m, m->out);
}

/* ---- metadata ------------------------------------------------------------ */

void nn_meta_default(nn_meta *mt) {
    memset(mt, 0, sizeof *mt);
    mt->size = 224;
    snprintf(mt->resize, sizeof mt->resize, "crop");
    const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    memcpy(mt->mean, mean, sizeof mean);
    memcpy(mt->std, sd, sizeof sd);
}

void nn_meta_free(nn_meta *mt) {
    for (int i = 0; i < mt->nclass; i++) free(mt->classes[i]);
    free(mt->classes);
    free(mt->extra);
    mt->classes = NULL;
    mt->extra = NULL;
    mt->nclass = 0;
}

ursa_err nn_meta_copy(const nn_meta *s, nn_meta *d) {
    *d = *s;
    d->classes = NULL;
    d->extra = NULL;
    d->nclass = 0;
    if (s->nclass) {
        d->classes = calloc((size_t)s->nclass, sizeof(char *));
        if (!d->classes) return URSA_ERR_NOMEM;
        for (int i = 0; i < s->nclass; i++) {
            d->classes[i] = strdup(s->classes[i]);
            d->nclass = i + 1;
            if (!d->classes[i]) return URSA_ERR_NOMEM;
        }
    }
    if (s->extra && !(d->extra = strdup(s->extra))) return URSA_ERR_NOMEM;
    return URSA_OK;
}

const char *nn_class_name(const nn_meta *mt, int i, char *buf, size_t len) {
    if (i >= 0 && i < mt->nclass && mt->classes[i]) return mt->classes[i];
    snprintf(buf, len, "%d", i);
    return buf;
}

ursa_err nn_body_from(nn_model *m) {
    int gp = -1;
    for (int i = 0; i < m->nnode && gp < 0; i++)
        if (m->node[i].op == NN_GAP || m->node[i].op == NN_GMP) gp = i;
    if (gp < 0) return URSA_ERR_INVALID;
    nn_cut(m, m->node[gp].in[0]);
    nn_unfold_bn(m);
    if (m->oom) return URSA_ERR_NOMEM;
    int maxg = 0;
    for (int i = 0; i < m->nparam; i++)
        if (m->param[i].group > maxg) maxg = m->param[i].group;
    m->ngroups = maxg + 1;
    m->group = maxg;
    return URSA_OK;
}
