/* onnx_gen.c: hostile ONNX files as raw protobuf bytes; see onnx_gen.h.
 * Field numbers are onnx.proto's (ModelProto.graph = 7, GraphProto.node =
 * 1, ...). Messages are built inside out, each into its own buffer. */
#include "onnx_gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
} pb;

static void put(pb *b, const void *d, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n) c *= 2;
        uint8_t *q = realloc(b->p, c);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void varint(pb *b, uint64_t v) {
    uint8_t t[10];
    int k = 0;
    do {
        t[k] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) t[k] |= 0x80;
        k++;
    } while (v);
    put(b, t, (size_t)k);
}

static void f_int(pb *b, int field, int64_t v) {
    varint(b, (uint64_t)field << 3);
    varint(b, (uint64_t)v);
}

static void f_bytes(pb *b, int field, const void *d, size_t n) {
    varint(b, (uint64_t)field << 3 | 2);
    varint(b, n);
    put(b, d, n);
}

static void f_str(pb *b, int field, const char *s) { f_bytes(b, field, s, strlen(s)); }

/* appends sub as a message field and frees it */
static void f_msg(pb *b, int field, pb *sub) {
    if (sub->oom) b->oom = 1;
    f_bytes(b, field, sub->p, sub->n);
    free(sub->p);
    memset(sub, 0, sizeof *sub);
}

static uint8_t *done(pb *b, size_t *len) {
    if (b->oom) {
        free(b->p);
        return NULL;
    }
    *len = b->n;
    return b->p;
}

/* ValueInfoProto: a float tensor of rank dims */
static void value_info(pb *g, int field, const char *name, int rank, const int64_t *dims) {
    pb shape = {0}, tensor = {0}, type = {0}, vi = {0};
    for (int i = 0; i < rank; i++) {
        pb d = {0};
        f_int(&d, 1, dims[i]); /* dim_value */
        f_msg(&shape, 1, &d);
    }
    f_int(&tensor, 1, 1); /* elem_type FLOAT */
    f_msg(&tensor, 2, &shape);
    f_msg(&type, 1, &tensor); /* tensor_type */
    f_str(&vi, 1, name);
    f_msg(&vi, 2, &type);
    f_msg(g, field, &vi);
}

static void attr_int(pb *node, const char *name, int64_t v) {
    pb a = {0};
    f_str(&a, 1, name);
    f_int(&a, 3, v);
    f_int(&a, 20, 2); /* INT */
    f_msg(node, 5, &a);
}

static void attr_ints(pb *node, const char *name, int count, int64_t v) {
    pb a = {0};
    f_str(&a, 1, name);
    for (int i = 0; i < count; i++) f_int(&a, 8, v);
    f_int(&a, 20, 7); /* INTS */
    f_msg(node, 5, &a);
}

/* NodeProto with its attributes already in *attrs (may be empty) */
static void node(pb *g, const char *op, const char *name, int nin, const char *const *in,
                 const char *out, pb *attrs) {
    pb n = {0};
    for (int i = 0; i < nin; i++) f_str(&n, 1, in[i]);
    f_str(&n, 2, out);
    f_str(&n, 3, name);
    f_str(&n, 4, op);
    if (attrs && attrs->n) put(&n, attrs->p, attrs->n);
    if (attrs) {
        if (attrs->oom) n.oom = 1;
        free(attrs->p);
        memset(attrs, 0, sizeof *attrs);
    }
    f_msg(g, 1, &n);
}

/* TensorProto: float32 with the given dims and nfloats values 0.01, 0.02, ... */
static void weight(pb *g, const char *name, int ndims, const int64_t *dims, size_t nfloats) {
    pb t = {0};
    for (int i = 0; i < ndims; i++) f_int(&t, 1, dims[i]);
    f_int(&t, 2, 1); /* FLOAT */
    f_str(&t, 8, name);
    float *d = malloc(nfloats * sizeof(float) + 1);
    if (!d) {
        g->oom = 1;
        return;
    }
    for (size_t i = 0; i < nfloats; i++) d[i] = (float)((i % 7) + 1) * 0.01f;
    f_bytes(&t, 9, d, nfloats * sizeof(float));
    free(d);
    f_msg(g, 5, &t);
}

/* ModelProto around a graph, with the input size in its metadata */
static uint8_t *model(pb *graph, int size, size_t *len) {
    pb m = {0}, ops = {0}, kv = {0};
    char s[16];
    f_int(&m, 1, 8); /* ir_version */
    f_str(&ops, 1, "");
    f_int(&ops, 2, 13);
    f_msg(&m, 8, &ops);
    f_str(&m, 2, "onnx_gen");
    f_msg(&m, 7, graph);
    if (size > 0) {
        snprintf(s, sizeof s, "%d", size);
        f_str(&kv, 1, "input_size");
        f_str(&kv, 2, s);
        f_msg(&m, 14, &kv);
    }
    return done(&m, len);
}

static void gap_output(pb *g, const char *x) {
    node(g, "GlobalAveragePool", "pool", 1, &x, "output", NULL);
    int64_t od[4] = {1, 1, 1, 1};
    value_info(g, 12, "output", 4, od);
}

uint8_t *onnx_gen_concat(int c, int s, int levels, size_t *len) {
    pb g = {0};
    int64_t in[4] = {1, c, s, s}, od[4] = {1, 1, 1, 1};
    f_str(&g, 2, "concat");
    value_info(&g, 11, "input", 4, in);
    const char *x = "input";
    node(&g, "GlobalAveragePool", "pool", 1, &x, "p", NULL);
    char prev[32] = "p", out[32], name[32];
    for (int i = 0; i <= levels; i++) {
        pb a = {0};
        attr_int(&a, "axis", 1);
        /* the last one adds the pool's channels once more */
        const char *ins[2] = {prev, i == levels ? "p" : prev};
        snprintf(out, sizeof out, i == levels ? "output" : "c%d", i);
        snprintf(name, sizeof name, "concat%d", i);
        node(&g, "Concat", name, 2, ins, out, &a);
        snprintf(prev, sizeof prev, "%s", out);
    }
    value_info(&g, 12, "output", 4, od);
    return model(&g, s, len);
}

uint8_t *onnx_gen_deep(int depth, size_t *len) {
    pb g = {0};
    f_str(&g, 2, "g");
    for (int i = 0; i < depth; i++) {
        pb a = {0}, n = {0}, outer = {0};
        f_str(&a, 1, "b");
        f_int(&a, 20, 5); /* GRAPH */
        f_msg(&a, 6, &g);
        f_str(&n, 4, "If");
        f_msg(&n, 5, &a);
        f_msg(&outer, 1, &n);
        g = outer;
    }
    return model(&g, 0, len);
}

uint8_t *onnx_gen_deep_type(int depth, size_t *len) {
    pb t = {0}, tensor = {0};
    f_int(&tensor, 1, 1);
    f_msg(&t, 1, &tensor);
    for (int i = 0; i < depth; i++) {
        pb seq = {0}, outer = {0};
        f_msg(&seq, 1, &t);      /* Sequence.elem_type */
        f_msg(&outer, 4, &seq);  /* TypeProto.sequence_type */
        t = outer;
    }
    pb vi = {0}, g = {0};
    f_str(&vi, 1, "input");
    f_msg(&vi, 2, &t);
    f_msg(&g, 11, &vi);
    return model(&g, 0, len);
}

uint8_t *onnx_gen_wide(int nodes, size_t *len) {
    pb g = {0};
    int64_t in[4] = {1, 3, 8, 8};
    f_str(&g, 2, "wide");
    value_info(&g, 11, "input", 4, in);
    char out[32], name[32];
    const char *x = "input";
    for (int i = 0; i < nodes; i++) {
        snprintf(out, sizeof out, "r%d", i);
        snprintf(name, sizeof name, "relu%d", i);
        node(&g, "Relu", name, 1, &x, out, NULL);
    }
    gap_output(&g, out);
    return model(&g, 8, len);
}

static void conv3(pb *g, const char *name, const char *x, const char *w, const char *out, int k) {
    pb a = {0};
    attr_ints(&a, "kernel_shape", 2, k);
    attr_ints(&a, "strides", 2, 1);
    attr_ints(&a, "pads", 4, k / 2);
    const char *ins[2] = {x, w};
    node(g, "Conv", name, 2, ins, out, &a);
}

uint8_t *onnx_gen_fanout(int s, int convs, int cout, size_t *len) {
    pb g = {0};
    int64_t in[4] = {1, 3, s, s}, wd[4] = {cout, 3, 3, 3};
    f_str(&g, 2, "fanout");
    weight(&g, "w.weight", 4, wd, (size_t)cout * 27);
    value_info(&g, 11, "input", 4, in);
    char out[32], name[32];
    for (int i = 0; i < convs; i++) {
        snprintf(out, sizeof out, "y%d", i);
        snprintf(name, sizeof name, "conv%d", i);
        conv3(&g, name, "input", "w.weight", out, 3);
    }
    gap_output(&g, out);
    return model(&g, s, len);
}

uint8_t *onnx_gen_big_value(int s, int cout, size_t *len) {
    pb g = {0};
    int64_t in[4] = {1, 3, s, s}, wd[4] = {cout, 3, 1, 1};
    f_str(&g, 2, "big");
    weight(&g, "wide.weight", 4, wd, (size_t)cout * 3);
    value_info(&g, 11, "input", 4, in);
    conv3(&g, "wide", "input", "wide.weight", "y", 1);
    gap_output(&g, "y");
    return model(&g, s, len);
}

uint8_t *onnx_gen_conv_attr(const char *name, int64_t v, size_t *len) {
    pb g = {0}, a = {0};
    int64_t in[4] = {1, 3, 8, 8}, wd[4] = {4, 3, 3, 3};
    f_str(&g, 2, "attr");
    weight(&g, "c.weight", 4, wd, 4 * 27);
    value_info(&g, 11, "input", 4, in);
    const char *names[] = {"kernel_shape", "strides", "pads", "dilations"};
    const int64_t defs[] = {3, 1, 1, 1};
    const int counts[] = {2, 2, 4, 2};
    for (int i = 0; i < 4; i++)
        attr_ints(&a, names[i], counts[i], strcmp(names[i], name) ? defs[i] : v);
    if (!strcmp(name, "group")) attr_int(&a, "group", v);
    const char *ins[2] = {"input", "c.weight"};
    node(&g, "Conv", "c", 2, ins, "y", &a);
    gap_output(&g, "y");
    return model(&g, 8, len);
}

uint8_t *onnx_gen_short_weight(int nfloats, size_t *len) {
    pb g = {0};
    int64_t in[4] = {1, 3, 8, 8}, wd[4] = {4, 3, 3, 3};
    f_str(&g, 2, "short");
    weight(&g, "c.weight", 4, wd, (size_t)nfloats);
    value_info(&g, 11, "input", 4, in);
    conv3(&g, "c", "input", "c.weight", "y", 3);
    gap_output(&g, "y");
    return model(&g, 8, len);
}
