/* onnx.c: models in and out as ONNX, with protobuf-c code generated at
 * build time from the system's onnx.proto; see nn.h.
 *
 * Export writes opset 13: Conv, BatchNormalization, Relu, MaxPool,
 * AveragePool, GlobalAveragePool, GlobalMaxPool, Concat, Flatten, Gemm, Add,
 * and a final Softmax, so the file's output is class probabilities. Dropout
 * is left out (it is the identity at inference). metadata_props carry what
 * serving needs: classes (a JSON array, in order), input_size, resize, mean
 * and std, plus any extra key=value pairs (dataset, job, metrics).
 *
 * Import reads the same operators (and Identity, Dropout, Reshape-as-flatten,
 * a trailing Softmax, which is dropped since ursa keeps logits), so
 * torchvision resnets exported by torch.onnx load, with BN folded into the
 * convs or kept. Anything else is refused with the operator's name. */
#include <errno.h>
#include <setjmp.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nn.h"
#include "onnx.pb-c.h"

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), URSA_ERR_INVALID)

/* ---- import -------------------------------------------------------------- */

/* Names to values and to initializers: an open-addressing hash table over
 * names borrowed from the unpacked model (a linear scan a lookup made an
 * 80,000-node file take 30 s). The hash is seeded per table, so names
 * chosen to collide in one run do not in another. */
typedef struct {
    const char *k;
    int v;                        /* a value (-1: none) */
    const Onnx__TensorProto *t;   /* an initializer, or what an Identity over one names */
} nent;

typedef struct {
    nent *e;
    size_t n, cap; /* cap a power of two, at most half full */
    uint64_t seed;
} nmap;

static uint64_t nhash(const nmap *m, const char *s) {
    uint64_t h = 1469598103934665603ull ^ m->seed;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h ^ (h >> 29);
}

static nent *nmap_slot(const nmap *m, const char *k) {
    size_t i = (size_t)nhash(m, k) & (m->cap - 1);
    while (m->e[i].k && strcmp(m->e[i].k, k)) i = (i + 1) & (m->cap - 1);
    return &m->e[i];
}

static const nent *nmap_get(const nmap *m, const char *k) {
    if (!m->cap || !k) return NULL;
    const nent *s = nmap_slot(m, k);
    return s->k ? s : NULL;
}

/* the entry of k, made empty (v -1, t NULL) when new; NULL when out of memory */
static nent *nmap_put(nmap *m, const char *k) {
    if (2 * (m->n + 1) > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 256;
        nent *old = m->e;
        size_t ocap = m->cap;
        if (!(m->e = calloc(cap, sizeof(nent)))) {
            m->e = old;
            return NULL;
        }
        if (!m->seed) m->seed = ((uint64_t)(uintptr_t)m->e * 0x9E3779B97F4A7C15ull) ^ (uint64_t)clock();
        m->cap = cap;
        for (size_t i = 0; i < ocap; i++)
            if (old[i].k) *nmap_slot(m, old[i].k) = old[i];
        free(old);
    }
    nent *s = nmap_slot(m, k);
    if (!s->k) {
        s->k = k;
        s->v = -1;
        s->t = NULL;
        m->n++;
    }
    return s;
}

static int vmap_get(const nmap *m, const char *name) {
    const nent *s = nmap_get(m, name);
    return s ? s->v : -1;
}

/* the tensor a name stands for: an initializer, or an Identity's output
 * over one (torch's exporter puts those over initializers it deduplicated) */
static const Onnx__TensorProto *find_init(const nmap *im, const char *name) {
    const nent *s = nmap_get(im, name);
    return s ? s->t : NULL;
}

static const Onnx__AttributeProto *attr(const Onnx__NodeProto *n, const char *name) {
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && !strcmp(n->attribute[i]->name, name)) return n->attribute[i];
    return NULL;
}

static long attr_i(const Onnx__NodeProto *n, const char *name, long def) {
    const Onnx__AttributeProto *a = attr(n, name);
    return a && a->has_i ? (long)a->i : def;
}

static float attr_f(const Onnx__NodeProto *n, const char *name, float def) {
    const Onnx__AttributeProto *a = attr(n, name);
    return a && a->has_f ? a->f : def;
}

/* every entry of an ints attribute equals v (absent counts as v) */
static int ints_all(const Onnx__NodeProto *n, const char *name, long v, long *first) {
    const Onnx__AttributeProto *a = attr(n, name);
    if (first) *first = v;
    if (!a || !a->n_ints) return 1;
    if (first) *first = (long)a->ints[0];
    for (size_t i = 0; i < a->n_ints; i++)
        if (a->ints[i] != a->ints[0] || (first == NULL && a->ints[i] != v)) return 0;
    return 1;
}

/* copies a float tensor's data into dst (n floats) */
static int tensor_floats(const Onnx__TensorProto *t, float *dst, size_t n) {
    if (t->has_data_type && t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) return -1;
    if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
        return -1;
    size_t have = 1;
    for (size_t i = 0; i < t->n_dims; i++) { /* checked at each step: no wrap to n */
        if (t->dims[i] < 0 || t->dims[i] > (1 << 30)) return -1;
        have *= (size_t)t->dims[i];
        if (have > ((size_t)1 << 30)) return -1;
    }
    if (have != n) return -1;
    if (t->has_raw_data) {
        if (t->raw_data.len != n * sizeof(float)) return -1;
        memcpy(dst, t->raw_data.data, n * sizeof(float));
    } else {
        if (t->n_float_data != n) return -1;
        memcpy(dst, t->float_data, n * sizeof(float));
    }
    return 0;
}

/* a float tensor whose dims are all positive and whose data has exactly
 * as many values: sizes taken from it cannot be zero, negative or lies */
static int tensor_ok(const Onnx__TensorProto *t) {
    if (t->has_data_type && t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) return 0;
    size_t n = 1;
    for (size_t i = 0; i < t->n_dims; i++) {
        if (t->dims[i] < 1 || t->dims[i] > (1 << 24)) return 0;
        n *= (size_t)t->dims[i];
        if (n > ((size_t)1 << 30)) return 0;
    }
    return t->has_raw_data ? t->raw_data.len == n * sizeof(float) : t->n_float_data == n;
}

/* "conv1.weight" -> "conv1"; other names are kept whole */
static void base_name(const char *init, char *out, size_t len) {
    snprintf(out, len, "%s", init);
    size_t l = strlen(out);
    const char *sfx[] = {".weight", ".bias"};
    for (int i = 0; i < 2; i++) {
        size_t s = strlen(sfx[i]);
        if (l > s && !strcmp(out + l - s, sfx[i])) {
            out[l - s] = 0;
            return;
        }
    }
}

/* the weight and bias tensors of a conv, gemm or BN node, checked */
static ursa_err load_param(nn_model *m, int p, const nmap *g, const char *iname, char *err,
                           size_t errlen) {
    const Onnx__TensorProto *t = find_init(g, iname);
    if (!t) return ERR("initializer %s is missing (weights must be initializers)", iname);
    if (tensor_floats(t, m->param[p].w, m->param[p].n))
        return ERR("initializer %s: not float32 of %zu values", iname, m->param[p].n);
    return URSA_OK;
}

static int parse_classes(const char *s, nn_meta *mt) {
    /* a JSON array of strings with \" and \\ escapes */
    const char *p = strchr(s, '[');
    if (!p) return -1;
    p++;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\t') p++;
        if (*p == ']') return 0;
        if (*p != '"') return -1;
        p++;
        char buf[1024];
        size_t k = 0;
        while (*p && *p != '"') {
            if (*p == '\\' && p[1]) p++;
            if (k + 1 < sizeof buf) buf[k++] = *p;
            p++;
        }
        if (*p != '"') return -1;
        p++;
        buf[k] = 0;
        char **c = realloc(mt->classes, sizeof(char *) * (size_t)(mt->nclass + 1));
        if (!c) return -1;
        mt->classes = c;
        if (!(mt->classes[mt->nclass] = strdup(buf))) return -1;
        mt->nclass++;
    }
}

static void parse_floats3(const char *s, float *f) {
    float a, b, c;
    if (sscanf(s, "%f,%f,%f", &a, &b, &c) == 3) f[0] = a, f[1] = b, f[2] = c;
}

static ursa_err read_meta(const Onnx__ModelProto *mp, nn_meta *mt, char *err, size_t errlen) {
    for (size_t i = 0; i < mp->n_metadata_props; i++) {
        const char *k = mp->metadata_props[i]->key, *v = mp->metadata_props[i]->value;
        if (!k || !v) continue;
        if (!strcmp(k, "classes")) {
            if (parse_classes(v, mt)) return ERR("metadata classes is not a JSON array of strings");
        } else if (!strcmp(k, "input_size")) {
            int s = atoi(v);
            if (s < 8 || s > 4096) return ERR("metadata input_size %s is out of range", v);
            mt->size = s;
        } else if (!strcmp(k, "resize")) {
            snprintf(mt->resize, sizeof mt->resize, "%s", v);
        } else if (!strcmp(k, "mean")) {
            parse_floats3(v, mt->mean);
        } else if (!strcmp(k, "std")) {
            parse_floats3(v, mt->std);
        } else {
            size_t have = mt->extra ? strlen(mt->extra) : 0, add = strlen(k) + strlen(v) + 2;
            char *x = realloc(mt->extra, have + add + 1);
            if (!x) return URSA_ERR_NOMEM;
            snprintf(x + have, add + 1, "%s=%s\n", k, v);
            mt->extra = x;
        }
    }
    /* normalisation divides by std: 0 (or NaN, or a denormal) made every
     * prediction NaN */
    for (int c = 0; c < 3; c++)
        if (!isfinite(mt->mean[c]) || !isfinite(mt->std[c]) || !(fabsf(mt->std[c]) >= 1e-6f) ||
            fabsf(mt->mean[c]) > 1e6f || fabsf(mt->std[c]) > 1e6f)
            return ERR("metadata mean %g and std %g (channel %d): std must be a number other "
                       "than 0, both finite", mt->mean[c], mt->std[c], c);
    return URSA_OK;
}

static int group_of(const char *name) {
    if (strstr(name, "layer3") || strstr(name, "layer4")) return 1;
    if (!strncmp(name, "fc", 2) || strstr(name, "/fc/") || !strncmp(name, "head", 4)) return 2;
    return 0;
}

/* Counts floats more parameter values into *used (bytes); past
 * nn.max-model-mb the node is refused by name, before they are made. */
static ursa_err budget(size_t *used, size_t floats, const char *op, const char *nname, char *err,
                       size_t errlen) {
    size_t max = nn_limits_get().model_bytes;
    *used += floats * sizeof(float);
    if (!max || *used <= max) return URSA_OK;
    snprintf(err, errlen,
             "%s %s: its parameters take the model to %.1f MB, over nn.max-model-mb (%zu)", op,
             nname, (double)*used / (1 << 20), max >> 20);
    return URSA_ERR_TOO_LARGE;
}

/* Drops the nodes whose values the output does not need: an unread branch
 * ran in every pass and kept its buffer (180 unread convolutions in a
 * 25 KB file took 2.3 GB and 9 s a pass). */
static void prune_dead(nn_model *m) {
    char *need = calloc((size_t)m->nvalue + 1, 1);
    if (!need) return; /* kept: slower, not wrong */
    need[m->out] = 1;
    for (int i = m->nnode - 1; i >= 0; i--)
        if (need[m->node[i].out])
            for (int j = 0; j < m->node[i].nin; j++) need[m->node[i].in[j]] = 1;
    int k = 0;
    for (int i = 0; i < m->nnode; i++)
        if (need[m->node[i].out]) m->node[k++] = m->node[i];
    m->nnode = k;
    free(need);
}

static ursa_err import_graph(const Onnx__ModelProto *mp, nn_model *m, char *err, size_t errlen) {
    const Onnx__GraphProto *g = mp->graph;
    if (!g) return ERR("the model has no graph");
    if (g->n_node > NN_ONNX_MAX_NODES)
        return ERR("the graph has %zu nodes, more than %d", g->n_node, NN_ONNX_MAX_NODES);
    /* initializers by name, the first of a name winning */
    nmap im = {0}, vm = {0};
    for (size_t i = 0; i < g->n_initializer; i++) {
        if (!g->initializer[i]->name) continue;
        nent *s = nmap_put(&im, g->initializer[i]->name);
        if (!s) {
            free(im.e);
            return URSA_ERR_NOMEM;
        }
        if (!s->t) s->t = g->initializer[i];
    }
    /* the data input: the first graph input that is not an initializer */
    const Onnx__ValueInfoProto *in = NULL;
    for (size_t i = 0; i < g->n_input && !in; i++)
        if (g->input[i]->name && !find_init(&im, g->input[i]->name)) in = g->input[i];
    if (!in) {
        free(im.e);
        return ERR("the graph has no data input");
    }
    if (g->n_output < 1 || !g->output[0]->name) {
        free(im.e);
        return ERR("the graph has no output");
    }
    int in_c = 3, in_size = 0;
    if (in->type && in->type->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE &&
        in->type->tensor_type->shape) {
        const Onnx__TensorShapeProto *s = in->type->tensor_type->shape;
        if (s->n_dim != 4) {
            free(im.e);
            return ERR("input %s must be 4-D (N,C,H,W), has %zu dims", in->name, s->n_dim);
        }
        /* compared as int64: 2^32 + 3 is not 3 channels */
        int64_t dc = 3, ds = 0;
        if (s->dim[1]->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE)
            dc = s->dim[1]->dim_value;
        if (s->dim[2]->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE)
            ds = s->dim[2]->dim_value;
        in_c = dc == 1 || dc == 3 ? (int)dc : 0;
        in_size = ds >= 8 && ds <= 4096 ? (int)ds : 0;
    }
    if (in_c != 1 && in_c != 3) {
        free(im.e);
        return ERR("input has %lld channels; ursa's models take images: 1 (gray) or 3 (RGB)",
                   (long long)in->type->tensor_type->shape->dim[1]->dim_value);
    }
    nn_model_init(m, in_c);
    if (in_size >= 8 && in_size <= 4096) m->meta.size = in_size;
    ursa_err e = URSA_OK;
    size_t pbytes = 0; /* parameters made so far, against nn.max-model-mb */
    nent *v0 = nmap_put(&vm, in->name);
    if (v0) v0->v = 0;
    else e = URSA_ERR_NOMEM;
    for (size_t i = 0; i < g->n_node && e == URSA_OK; i++) {
        const Onnx__NodeProto *n = g->node[i];
        const char *op = n->op_type ? n->op_type : "";
        const char *nname = n->name && *n->name ? n->name : op;
        if (n->n_output < 1) {
            e = ERR("node %s (%s) has no output", nname, op);
            break;
        }
        if (!strcmp(op, "Identity") && n->n_input == 1 && find_init(&im, n->input[0])) {
            const Onnx__TensorProto *t = find_init(&im, n->input[0]);
            nent *a = nmap_put(&im, n->output[0]);
            if (!a) {
                e = URSA_ERR_NOMEM;
                break;
            }
            if (!a->t) a->t = t;
            continue;
        }
        int x = n->n_input > 0 ? vmap_get(&vm, n->input[0]) : -1;
        if (x < 0 && strcmp(op, "Constant")) {
            e = ERR("node %s (%s): input %s is not produced by an earlier node", nname, op,
                    n->n_input ? n->input[0] : "(none)");
            break;
        }
        int y = -1, before = m->nnode;
        char base[96];
        m->group = group_of(nname);
        if (!strcmp(op, "Conv")) {
            const Onnx__TensorProto *w = n->n_input > 1 ? find_init(&im, n->input[1]) : NULL;
            long k, s, p;
            if (!w || w->n_dims != 4 || !tensor_ok(w)) {
                e = ERR("Conv %s: weight must be a 4-D float initializer", nname);
                break;
            }
            const Onnx__AttributeProto *ap = attr(n, "auto_pad");
            if (ap && ap->has_s && !(ap->s.len == 6 && !memcmp(ap->s.data, "NOTSET", 6))) {
                e = ERR("Conv %s: auto_pad is not supported (export with explicit pads)", nname);
                break;
            }
            if (attr_i(n, "group", 1) != 1 || !ints_all(n, "dilations", 1, NULL) ||
                !ints_all(n, "kernel_shape", 0, &k) || !ints_all(n, "strides", 1, &s) ||
                !ints_all(n, "pads", 0, &p) || w->dims[2] != w->dims[3]) {
                e = ERR("Conv %s: only square kernels, equal strides and pads, group 1, "
                        "dilation 1 are supported", nname);
                break;
            }
            if (attr(n, "kernel_shape") && k != w->dims[2]) {
                e = ERR("Conv %s: kernel_shape %ld does not match the weight's %ld", nname, k,
                        (long)w->dims[2]);
                break;
            }
            k = w->dims[2];
            if (k < 1 || k > 64 || s < 1 || s > 64 || p < 0 || p > 64) {
                e = ERR("Conv %s: kernel %ld, stride %ld or pad %ld out of range", nname, k, s, p);
                break;
            }
            base_name(n->input[1], base, sizeof base);
            m->group = group_of(strstr(base, "onnx::") ? nname : base);
            int bias = n->n_input > 2 && *n->input[2];
            if (w->dims[1] != m->vc[x]) { /* before the parameters are made from vc */
                e = ERR("Conv %s: weight has %lld input channels, its input has %d", nname,
                        (long long)w->dims[1], m->vc[x]);
                break;
            }
            size_t wn = (size_t)w->dims[0] * (size_t)w->dims[1] * (size_t)(k * k);
            if ((e = budget(&pbytes, 2 * (wn + (bias ? (size_t)w->dims[0] : 0)), op, nname, err,
                            errlen)) != URSA_OK)
                break;
            y = nn_conv(m, base, x, (int)w->dims[0], (int)k, (int)s, (int)p, bias);
            if (m->oom) {
                e = URSA_ERR_NOMEM;
                break;
            }
            nn_node *nd = &m->node[m->nnode - 1];
            e = load_param(m, nd->w, &im, n->input[1], err, errlen);
            if (e == URSA_OK && bias) e = load_param(m, nd->b, &im, n->input[2], err, errlen);
        } else if (!strcmp(op, "BatchNormalization")) {
            if (n->n_input < 5) {
                e = ERR("BatchNormalization %s needs 5 inputs", nname);
                break;
            }
            base_name(n->input[1], base, sizeof base);
            m->group = group_of(strstr(base, "onnx::") ? nname : base);
            if ((e = budget(&pbytes, 6 * (size_t)m->vc[x], op, nname, err, errlen)) != URSA_OK)
                break;
            y = nn_bn(m, base, x, 0);
            if (m->oom) {
                e = URSA_ERR_NOMEM;
                break;
            }
            nn_node *nd = &m->node[m->nnode - 1];
            nd->eps = attr_f(n, "epsilon", 1e-5f);
            nd->momentum = 1.0f - attr_f(n, "momentum", 0.9f);
            if (!(nd->eps > 0 && nd->eps < 1) || !(nd->momentum >= 0 && nd->momentum <= 1)) {
                e = ERR("BatchNormalization %s: epsilon %g or momentum %g out of range", nname,
                        (double)nd->eps, 1.0 - nd->momentum);
                break;
            }
            int ps[4] = {nd->w, nd->b, nd->rm, nd->rv};
            for (int j = 0; j < 4 && e == URSA_OK; j++)
                e = load_param(m, ps[j], &im, n->input[1 + j], err, errlen);
        } else if (!strcmp(op, "Relu")) {
            y = nn_relu(m, x);
        } else if (!strcmp(op, "MaxPool") || !strcmp(op, "AveragePool")) {
            long k, s, p;
            const Onnx__AttributeProto *ap = attr(n, "auto_pad");
            if (ap && ap->has_s && !(ap->s.len == 6 && !memcmp(ap->s.data, "NOTSET", 6))) {
                e = ERR("%s %s: auto_pad is not supported (export with explicit pads)", op, nname);
                break;
            }
            if (!ints_all(n, "kernel_shape", 0, &k) || !ints_all(n, "strides", 1, &s) ||
                !ints_all(n, "pads", 0, &p) || attr_i(n, "ceil_mode", 0) ||
                !ints_all(n, "dilations", 1, NULL) || k < 1 || k > 64 || s < 1 || s > 64 ||
                p < 0 || p >= k) {
                e = ERR("%s %s: only square windows, equal strides and pads, floor mode", op, nname);
                break;
            }
            if (op[0] == 'M') y = nn_maxpool(m, x, (int)k, (int)s, (int)p);
            else if (p == 0) y = nn_avgpool(m, x, (int)k, (int)s);
            else e = ERR("AveragePool %s: padding is not supported", nname);
        } else if (!strcmp(op, "GlobalAveragePool")) {
            y = nn_gap(m, x);
        } else if (!strcmp(op, "GlobalMaxPool")) {
            y = nn_gmp(m, x);
        } else if (!strcmp(op, "Concat")) {
            int b = n->n_input == 2 ? vmap_get(&vm, n->input[1]) : -1;
            if (attr_i(n, "axis", 0) != 1 || b < 0) {
                e = ERR("Concat %s: only two inputs along channels (axis 1)", nname);
                break;
            }
            if ((long long)m->vc[x] + m->vc[b] > NN_MAX_CHANNELS) {
                e = ERR("Concat %s: %lld channels, more than %d", nname,
                        (long long)m->vc[x] + m->vc[b], NN_MAX_CHANNELS);
                break;
            }
            y = nn_concat(m, x, b);
        } else if (!strcmp(op, "Flatten")) {
            if (attr_i(n, "axis", 1) != 1) {
                e = ERR("Flatten %s: only axis 1", nname);
                break;
            }
            y = nn_flatten(m, x);
        } else if (!strcmp(op, "Reshape")) {
            const Onnx__TensorProto *s = n->n_input > 1 ? find_init(&im, n->input[1]) : NULL;
            if (!s || s->n_int64_data + (s->has_raw_data ? s->raw_data.len / 8 : 0) != 2) {
                e = ERR("Reshape %s: only a flatten to 2-D is supported", nname);
                break;
            }
            y = nn_flatten(m, x);
        } else if (!strcmp(op, "Gemm")) {
            const Onnx__TensorProto *w = n->n_input > 1 ? find_init(&im, n->input[1]) : NULL;
            if (!w || w->n_dims != 2 || !tensor_ok(w) || attr_i(n, "transA", 0) ||
                attr_f(n, "alpha", 1) != 1 ||
                attr_f(n, "beta", 1) != 1) {
                e = ERR("Gemm %s: only y = x W^T + b with W an initializer", nname);
                break;
            }
            int tb = (int)attr_i(n, "transB", 0);
            int out = (int)(tb ? w->dims[0] : w->dims[1]);
            base_name(n->input[1], base, sizeof base);
            m->group = 2;
            int bias = n->n_input > 2 && *n->input[2];
            /* after a flatten of a feature map, the width is the weight's;
             * the executor checks it against the real shape */
            m->vc[x] = (int)(tb ? w->dims[1] : w->dims[0]);
            size_t wn = (size_t)w->dims[0] * (size_t)w->dims[1]; /* and a transposing copy */
            if ((e = budget(&pbytes, 3 * wn + 2 * (bias ? (size_t)out : 0), op, nname, err,
                            errlen)) != URSA_OK)
                break;
            pbytes -= wn * sizeof(float);
            y = nn_linear(m, base, x, out, bias);
            if (m->oom) {
                e = URSA_ERR_NOMEM;
                break;
            }
            nn_node *nd = &m->node[m->nnode - 1];
            nn_param *P = &m->param[nd->w];
            if (tb) {
                e = load_param(m, nd->w, &im, n->input[1], err, errlen);
            } else { /* stored [in, out]: transpose */
                float *t = malloc(P->n * sizeof(float));
                if (!t) {
                    e = URSA_ERR_NOMEM;
                    break;
                }
                e = load_param(m, nd->w, &im, n->input[1], err, errlen);
                memcpy(t, P->w, P->n * sizeof(float));
                int rows = P->shape[1];
                for (int r = 0; r < rows; r++)
                    for (int c = 0; c < out; c++) P->w[(size_t)c * rows + r] = t[(size_t)r * out + c];
                free(t);
            }
            if (e == URSA_OK && bias) e = load_param(m, nd->b, &im, n->input[2], err, errlen);
        } else if (!strcmp(op, "Add")) {
            int b = n->n_input == 2 ? vmap_get(&vm, n->input[1]) : -1;
            if (b < 0) {
                e = ERR("Add %s: both inputs must be computed values", nname);
                break;
            }
            y = nn_add(m, x, b, 0);
        } else if (!strcmp(op, "Identity") || !strcmp(op, "Dropout")) {
            y = x;
        } else if (!strcmp(op, "Softmax") && i == g->n_node - 1) {
            y = x; /* ursa keeps logits; predict applies softmax */
        } else {
            e = ERR("unsupported ONNX operator %s (node %s)", op, nname);
            break;
        }
        if (e == URSA_OK && m->oom) e = URSA_ERR_NOMEM;
        if (e == URSA_OK && m->nnode > before) {
            nn_node *nd = &m->node[m->nnode - 1];
            if (!nd->name[0]) snprintf(nd->name, sizeof nd->name, "%s", nname);
            if (m->vc[y] < 1 || m->vc[y] > NN_MAX_CHANNELS)
                e = ERR("%s %s: %d channels, not 1 to %d", op, nname, m->vc[y], NN_MAX_CHANNELS);
        }
        if (e == URSA_OK) {
            nent *o = nmap_put(&vm, n->output[0]);
            if (o) o->v = y;
            else e = URSA_ERR_NOMEM;
        }
    }
    if (e == URSA_OK) {
        int out = vmap_get(&vm, g->output[0]->name);
        if (out < 1) {
            e = ERR("graph output %s is not computed by any node", g->output[0]->name);
        } else {
            m->out = out;
            prune_dead(m);
            nn_cut(m, out);
            nn_fuse_relu(m);
        }
    }
    free(vm.e);
    free(im.e);
    if (e == URSA_OK) {
        int maxg = 0;
        for (int i = 0; i < m->nparam; i++)
            if (m->param[i].group > maxg) maxg = m->param[i].group;
        m->ngroups = maxg + 1;
        m->group = maxg;
        e = read_meta(mp, &m->meta, err, errlen);
    }
    if (e != URSA_OK) nn_model_free(m);
    return e;
}

/* a varint at *at, below end; 0 when it runs past end or 10 bytes */
static int wire_varint(const uint8_t *b, size_t end, size_t *at, uint64_t *v) {
    *v = 0;
    for (int sh = 0; sh < 70 && *at < end; sh += 7) {
        uint8_t c = b[(*at)++];
        *v |= (uint64_t)(c & 0x7f) << sh;
        if (!(c & 0x80)) return 1;
    }
    return 0;
}

/* Whether the messages in buf nest deeper than limit (the ModelProto is
 * level 1), found by walking the wire format along onnx.proto's
 * descriptors with a stack of limit entries, before anything is unpacked:
 * protobuf-c's unpack recurses once a level without a bound, so 5,000
 * graphs nested through node attributes (54 KB) overflowed the stack of
 * every program reading models. Bytes that do not parse end the walk;
 * the unpacker refuses them. */
static int wire_too_deep(const uint8_t *b, size_t len, int limit) {
    struct {
        const ProtobufCMessageDescriptor *d;
        size_t end;
    } st[NN_ONNX_MAX_DEPTH];
    if (limit > NN_ONNX_MAX_DEPTH) limit = NN_ONNX_MAX_DEPTH;
    int sp = 0;
    size_t at = 0;
    st[0].d = &onnx__model_proto__descriptor;
    st[0].end = len;
    for (;;) {
        if (at >= st[sp].end) {
            if (at > st[sp].end || sp == 0) return 0;
            sp--;
            continue;
        }
        uint64_t key, l;
        if (!wire_varint(b, st[sp].end, &at, &key)) return 0;
        switch (key & 7) {
        case 0:
            if (!wire_varint(b, st[sp].end, &at, &l)) return 0;
            break;
        case 1: at += 8; break;
        case 5: at += 4; break;
        case 2: {
            if (!wire_varint(b, st[sp].end, &at, &l) || l > st[sp].end - at) return 0;
            const ProtobufCFieldDescriptor *f =
                key >> 3 <= 0x1fffffff
                    ? protobuf_c_message_descriptor_get_field(st[sp].d, (unsigned)(key >> 3))
                    : NULL;
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
                if (sp + 1 >= limit) return 1;
                sp++;
                st[sp].d = f->descriptor;
                st[sp].end = at + l;
            } else {
                at += l;
            }
            break;
        }
        default: return 0; /* groups: protobuf-c refuses them */
        }
    }
}

/* protobuf-c's allocations for one unpack, held to nn.max-model-mb: a
 * small file of many empty messages unpacks to many times its size */
typedef struct {
    size_t used, max;
    int over;
} pb_budget;

static void *pb_alloc(void *data, size_t size) {
    pb_budget *b = data;
    if (b->max && (size > b->max || b->used > b->max - size)) {
        b->over = 1;
        return NULL;
    }
    size_t *p = malloc(size + 16); /* the size, keeping malloc's alignment */
    if (!p) return NULL;
    p[0] = size;
    b->used += size;
    return (char *)p + 16;
}

static void pb_free(void *data, void *ptr) {
    if (!ptr) return;
    size_t *p = (size_t *)(void *)((char *)ptr - 16);
    ((pb_budget *)data)->used -= p[0];
    free(p);
}

ursa_err nn_onnx_load_mem(const uint8_t *buf, size_t len, nn_model *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    if (wire_too_deep(buf, len, NN_ONNX_MAX_DEPTH))
        return ERR("messages nested more than %d deep (graphs inside node attributes, or "
                   "types inside types): no model ursa runs needs that", NN_ONNX_MAX_DEPTH);
    pb_budget bud = {0, nn_limits_get().model_bytes, 0};
    ProtobufCAllocator al = {pb_alloc, pb_free, &bud};
    Onnx__ModelProto *mp = onnx__model_proto__unpack(&al, len, buf);
    if (!mp && bud.over)
        return snprintf(err, errlen, "unpacked, the file takes more than nn.max-model-mb (%zu)",
                        bud.max >> 20), URSA_ERR_TOO_LARGE;
    if (!mp) return ERR("not an ONNX model (protobuf does not parse)");
    ursa_err e = import_graph(mp, m, err, errlen);
    onnx__model_proto__free_unpacked(mp, &al);
    return e;
}

ursa_err nn_onnx_load(const char *path, nn_model *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "rb");
    if (!f) return snprintf(err, errlen, "%s: %s", path, strerror(errno)), URSA_ERR_IO;
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 1 << 20;
            if (cap > ((size_t)2 << 30)) {
                free(buf);
                fclose(f);
                return ERR("%s: larger than 2 GiB", path);
            }
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return URSA_ERR_NOMEM;
            }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return snprintf(err, errlen, "%s: read error", path), URSA_ERR_IO;
    }
    ursa_err e = nn_onnx_load_mem(buf, len, m, err, errlen);
    if (e != URSA_OK && e != URSA_ERR_NOMEM) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s: %s", path, err);
        snprintf(err, errlen, "%s", tmp);
    }
    free(buf);
    return e;
}

/* ---- export -------------------------------------------------------------- */

/* Everything an exported ModelProto points to lives in this arena, freed
 * at once after packing. */
typedef struct {
    void **p;
    int n, cap;
    jmp_buf oom;  /* an allocation failed: back to nn_onnx_save_mem */
    void *nodes;  /* the node list while it grows */
} arena;

static void *arena_add(arena *a, void *p) {
    if (!p) longjmp(a->oom, 1);
    if (a->n == a->cap) {
        int c = a->cap ? a->cap * 2 : 256;
        void **q = realloc(a->p, sizeof(void *) * (size_t)c);
        if (!q) {
            free(p);
            longjmp(a->oom, 1);
        }
        a->p = q;
        a->cap = c;
    }
    return a->p[a->n++] = p;
}

static void *az(arena *a, size_t sz) { return arena_add(a, calloc(1, sz)); }
static char *astr(arena *a, const char *s) { return arena_add(a, strdup(s)); }

static Onnx__AttributeProto *attr_new(arena *a, const char *name,
                                      Onnx__AttributeProto__AttributeType type) {
    Onnx__AttributeProto *t = az(a, sizeof *t);
    onnx__attribute_proto__init(t);
    t->name = astr(a, name);
    t->has_type = 1;
    t->type = type;
    return t;
}

static Onnx__AttributeProto *attr_int(arena *a, const char *name, long v) {
    Onnx__AttributeProto *t = attr_new(a, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    t->has_i = 1;
    t->i = v;
    return t;
}

static Onnx__AttributeProto *attr_float(arena *a, const char *name, float v) {
    Onnx__AttributeProto *t = attr_new(a, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    t->has_f = 1;
    t->f = v;
    return t;
}

static Onnx__AttributeProto *attr_ints(arena *a, const char *name, int count, long v) {
    Onnx__AttributeProto *t = attr_new(a, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    t->n_ints = (size_t)count;
    t->ints = az(a, sizeof(int64_t) * (size_t)count);
    for (int i = 0; i < count; i++) t->ints[i] = v;
    return t;
}

typedef struct {
    arena *a;
    Onnx__NodeProto **nodes;
    size_t n, cap;
} nodelist;

static Onnx__NodeProto *emit(nodelist *l, const char *op, const char *name, int nin,
                             const char **ins, const char *out) {
    if (l->n == l->cap) {
        size_t c = l->cap ? l->cap * 2 : 128;
        Onnx__NodeProto **q = realloc(l->nodes, sizeof(void *) * c);
        if (!q) longjmp(l->a->oom, 1);
        l->nodes = q;
        l->a->nodes = q;
        l->cap = c;
    }
    Onnx__NodeProto *n = az(l->a, sizeof *n);
    onnx__node_proto__init(n);
    n->op_type = astr(l->a, op);
    n->name = astr(l->a, name);
    n->n_input = (size_t)nin;
    n->input = az(l->a, sizeof(char *) * (size_t)(nin ? nin : 1));
    for (int i = 0; i < nin; i++) n->input[i] = astr(l->a, ins[i]);
    n->n_output = 1;
    n->output = az(l->a, sizeof(char *));
    n->output[0] = astr(l->a, out);
    l->nodes[l->n++] = n;
    return n;
}

static void set_attrs(arena *a, Onnx__NodeProto *n, int count, Onnx__AttributeProto **at) {
    n->n_attribute = (size_t)count;
    n->attribute = az(a, sizeof(void *) * (size_t)count);
    memcpy(n->attribute, at, sizeof(void *) * (size_t)count);
}

static Onnx__ValueInfoProto *value_info(arena *a, const char *name, int rank, const int *dims) {
    Onnx__ValueInfoProto *v = az(a, sizeof *v);
    onnx__value_info_proto__init(v);
    v->name = astr(a, name);
    Onnx__TypeProto *t = az(a, sizeof *t);
    onnx__type_proto__init(t);
    Onnx__TypeProto__Tensor *tt = az(a, sizeof *tt);
    onnx__type_proto__tensor__init(tt);
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    Onnx__TensorShapeProto *s = az(a, sizeof *s);
    onnx__tensor_shape_proto__init(s);
    s->n_dim = (size_t)rank;
    s->dim = az(a, sizeof(void *) * (size_t)rank);
    for (int i = 0; i < rank; i++) {
        Onnx__TensorShapeProto__Dimension *d = az(a, sizeof *d);
        onnx__tensor_shape_proto__dimension__init(d);
        if (dims[i] > 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[i];
        } else {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = astr(a, "batch");
        }
        s->dim[i] = d;
    }
    tt->shape = s;
    t->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    t->tensor_type = tt;
    v->type = t;
    return v;
}

static Onnx__StringStringEntryProto *kv(arena *a, const char *k, const char *v) {
    Onnx__StringStringEntryProto *e = az(a, sizeof *e);
    onnx__string_string_entry_proto__init(e);
    e->key = astr(a, k);
    e->value = astr(a, v);
    return e;
}

static char *classes_json(arena *a, const nn_meta *mt) {
    size_t cap = 3;
    for (int i = 0; i < mt->nclass; i++) cap += 2 * strlen(mt->classes[i]) + 4;
    char *s = az(a, cap), *p = s;
    *p++ = '[';
    for (int i = 0; i < mt->nclass; i++) {
        if (i) *p++ = ',';
        *p++ = '"';
        for (const char *c = mt->classes[i]; *c; c++) {
            if (*c == '"' || *c == '\\') *p++ = '\\';
            *p++ = *c;
        }
        *p++ = '"';
    }
    *p++ = ']';
    *p = 0;
    return s;
}

static ursa_err build_proto(const nn_model *m, arena *a, Onnx__ModelProto *mp, char *err,
                            size_t errlen) {
    onnx__model_proto__init(mp);
    mp->has_ir_version = 1;
    mp->ir_version = 8;
    mp->producer_name = astr(a, "ursa");
    mp->producer_version = astr(a, "0.1");
    Onnx__OperatorSetIdProto *ops = az(a, sizeof *ops);
    onnx__operator_set_id_proto__init(ops);
    ops->domain = astr(a, "");
    ops->has_version = 1;
    ops->version = 13;
    mp->n_opset_import = 1;
    mp->opset_import = az(a, sizeof(void *));
    mp->opset_import[0] = ops;
    Onnx__GraphProto *g = az(a, sizeof *g);
    onnx__graph_proto__init(g);
    g->name = astr(a, "ursa");
    mp->graph = g;

    /* value names: "input", then v<N>; dropout outputs alias their input */
    char (*vn)[24] = az(a, sizeof(*vn) * (size_t)m->nvalue);
    snprintf(vn[0], sizeof vn[0], "input");
    nodelist l = {a, NULL, 0, 0};
    for (int i = 0; i < m->nnode; i++) {
        const nn_node *n = &m->node[i];
        const char *x = vn[n->in[0]];
        char out[24], pre[24], nm[128];
        snprintf(out, sizeof out, "v%d", n->out);
        snprintf(pre, sizeof pre, "v%d_pre", n->out);
        snprintf(nm, sizeof nm, "%s_%d", n->name[0] ? n->name : "node", i);
        const char *o = n->relu ? pre : out;
        Onnx__AttributeProto *at[5];
        switch (n->op) {
        case NN_CONV: {
            const char *ins[3] = {x, m->param[n->w].name, n->b >= 0 ? m->param[n->b].name : ""};
            Onnx__NodeProto *p = emit(&l, "Conv", nm, n->b >= 0 ? 3 : 2, ins, o);
            at[0] = attr_ints(a, "kernel_shape", 2, n->k);
            at[1] = attr_ints(a, "strides", 2, n->stride);
            at[2] = attr_ints(a, "pads", 4, n->pad);
            at[3] = attr_ints(a, "dilations", 2, 1);
            at[4] = attr_int(a, "group", 1);
            set_attrs(a, p, 5, at);
            break;
        }
        case NN_BN: {
            const char *ins[5] = {x, m->param[n->w].name, m->param[n->b].name,
                                  m->param[n->rm].name, m->param[n->rv].name};
            Onnx__NodeProto *p = emit(&l, "BatchNormalization", nm, 5, ins, o);
            at[0] = attr_float(a, "epsilon", n->eps);
            at[1] = attr_float(a, "momentum", 1.0f - n->momentum);
            set_attrs(a, p, 2, at);
            break;
        }
        case NN_RELU: emit(&l, "Relu", nm, 1, &x, o); break;
        case NN_MAXPOOL:
        case NN_AVGPOOL: {
            Onnx__NodeProto *p = emit(&l, n->op == NN_MAXPOOL ? "MaxPool" : "AveragePool", nm, 1,
                                      &x, o);
            at[0] = attr_ints(a, "kernel_shape", 2, n->k);
            at[1] = attr_ints(a, "strides", 2, n->stride);
            at[2] = attr_ints(a, "pads", 4, n->pad);
            set_attrs(a, p, 3, at);
            break;
        }
        case NN_GAP: emit(&l, "GlobalAveragePool", nm, 1, &x, o); break;
        case NN_GMP: emit(&l, "GlobalMaxPool", nm, 1, &x, o); break;
        case NN_CONCAT: {
            const char *ins[2] = {x, vn[n->in[1]]};
            Onnx__NodeProto *p = emit(&l, "Concat", nm, 2, ins, o);
            at[0] = attr_int(a, "axis", 1);
            set_attrs(a, p, 1, at);
            break;
        }
        case NN_FLATTEN: {
            Onnx__NodeProto *p = emit(&l, "Flatten", nm, 1, &x, o);
            at[0] = attr_int(a, "axis", 1);
            set_attrs(a, p, 1, at);
            break;
        }
        case NN_LINEAR: {
            const char *ins[3] = {x, m->param[n->w].name, n->b >= 0 ? m->param[n->b].name : ""};
            Onnx__NodeProto *p = emit(&l, "Gemm", nm, n->b >= 0 ? 3 : 2, ins, o);
            at[0] = attr_int(a, "transB", 1);
            set_attrs(a, p, 1, at);
            break;
        }
        case NN_ADD: {
            const char *ins[2] = {x, vn[n->in[1]]};
            emit(&l, "Add", nm, 2, ins, o);
            break;
        }
        case NN_DROPOUT:
            memmove(vn[n->out], x, sizeof vn[0]);
            continue;
        default:
            free(l.nodes);
            a->nodes = NULL;
            return ERR("node %d: operator %d cannot be exported", i, (int)n->op);
        }
        if (n->relu) {
            char rn[140];
            snprintf(rn, sizeof rn, "%s_relu", nm);
            const char *p = pre;
            emit(&l, "Relu", rn, 1, &p, out);
        }
        snprintf(vn[n->out], sizeof vn[0], "%s", out);
    }
    const char *lg = vn[m->out];
    Onnx__NodeProto *sm = emit(&l, "Softmax", "probabilities", 1, &lg, "output");
    Onnx__AttributeProto *ax = attr_int(a, "axis", 1);
    set_attrs(a, sm, 1, &ax);
    a->nodes = NULL; /* the arena owns it from here */
    arena_add(a, l.nodes);
    g->n_node = l.n;
    g->node = l.nodes;

    /* initializers: every parameter, raw little-endian float32 */
    g->n_initializer = (size_t)m->nparam;
    g->initializer = az(a, sizeof(void *) * (size_t)(m->nparam ? m->nparam : 1));
    for (int i = 0; i < m->nparam; i++) {
        const nn_param *p = &m->param[i];
        Onnx__TensorProto *t = az(a, sizeof *t);
        onnx__tensor_proto__init(t);
        t->name = astr(a, p->name);
        t->has_data_type = 1;
        t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        t->n_dims = (size_t)p->ndim;
        t->dims = az(a, sizeof(int64_t) * (size_t)p->ndim);
        for (int d = 0; d < p->ndim; d++) t->dims[d] = p->shape[d];
        t->has_raw_data = 1;
        t->raw_data.len = p->n * sizeof(float);
        t->raw_data.data = (uint8_t *)p->w; /* borrowed while packing */
        g->initializer[i] = t;
    }
    int idims[4] = {0, m->in_c, m->meta.size, m->meta.size};
    int odims[2] = {0, nn_out_size(m)};
    g->n_input = 1;
    g->input = az(a, sizeof(void *));
    g->input[0] = value_info(a, "input", 4, idims);
    g->n_output = 1;
    g->output = az(a, sizeof(void *));
    g->output[0] = value_info(a, "output", 2, odims);

    /* metadata */
    char buf[128];
    int nkv = 0;
    Onnx__StringStringEntryProto *props[64];
    if (m->meta.nclass) props[nkv++] = kv(a, "classes", classes_json(a, &m->meta));
    snprintf(buf, sizeof buf, "%d", m->meta.size);
    props[nkv++] = kv(a, "input_size", buf);
    props[nkv++] = kv(a, "resize", m->meta.resize);
    snprintf(buf, sizeof buf, "%g,%g,%g", m->meta.mean[0], m->meta.mean[1], m->meta.mean[2]);
    props[nkv++] = kv(a, "mean", buf);
    snprintf(buf, sizeof buf, "%g,%g,%g", m->meta.std[0], m->meta.std[1], m->meta.std[2]);
    props[nkv++] = kv(a, "std", buf);
    if (m->meta.extra) {
        char *x = astr(a, m->meta.extra), *save = NULL;
        for (char *ln = strtok_r(x, "\n", &save); ln && nkv < 64; ln = strtok_r(NULL, "\n", &save)) {
            char *eq = strchr(ln, '=');
            if (!eq) continue;
            *eq = 0;
            props[nkv++] = kv(a, ln, eq + 1);
        }
    }
    mp->n_metadata_props = (size_t)nkv;
    mp->metadata_props = az(a, sizeof(void *) * (size_t)nkv);
    memcpy(mp->metadata_props, props, sizeof(void *) * (size_t)nkv);
    return URSA_OK;
}

ursa_err nn_onnx_save_mem(const nn_model *m, uint8_t **buf, size_t *len, char *err,
                          size_t errlen) {
    arena a;
    memset(&a, 0, sizeof a);
    Onnx__ModelProto mp;
    ursa_err e;
    if (setjmp(a.oom)) { /* an allocation in build_proto failed */
        free(a.nodes);
        for (int i = 0; i < a.n; i++) free(a.p[i]);
        free(a.p);
        return URSA_ERR_NOMEM;
    }
    e = build_proto(m, &a, &mp, err, errlen);
    if (e == URSA_OK) {
        *len = onnx__model_proto__get_packed_size(&mp);
        *buf = malloc(*len ? *len : 1);
        if (!*buf) e = URSA_ERR_NOMEM;
        else onnx__model_proto__pack(&mp, *buf);
    }
    for (int i = 0; i < a.n; i++) free(a.p[i]);
    free(a.p);
    return e;
}

ursa_err nn_onnx_save(const nn_model *m, const char *path, char *err, size_t errlen) {
    uint8_t *buf = NULL;
    size_t len = 0;
    ursa_err e = nn_onnx_save_mem(m, &buf, &len, err, errlen);
    if (e != URSA_OK) return e;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(buf, 1, len, f) == len;
    if (f && fclose(f)) ok = 0;
    free(buf);
    if (!ok || rename(tmp, path)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return URSA_ERR_IO;
    }
    return URSA_OK;
}
