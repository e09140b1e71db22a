/* The NN engine against PyTorch: golden files made by
 * tests/golden/make_golden.py (float64 PyTorch, stored as float32): every
 * layer's forward and backward, a torchvision BasicBlock in training mode,
 * the whole resnet18 (eval and train: logits, loss, gradients, running
 * statistics), three AdamW steps, and fast.ai's head. Tolerances: 1e-4
 * relative for single layers, 2e-3 for whole networks (float32 sums over
 * long chains). */
#include <math.h>

#include "blas.h"
#include "nn.h"
#include "test.h"
#include "test_isa.h"

typedef struct {
    char name[96];
    int ndim, dims[4];
    size_t n;
    float *d;
} rec;

typedef struct {
    rec r[96];
    int n;
} golden;

static void gload(golden *g, const char *file) {
    char path[4096];
    const char *dir = getenv("URSA_GOLDEN_DIR");
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/golden", file);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s (set URSA_GOLDEN_DIR)", path);
    g->n = 0;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        rec *r = &g->r[g->n++];
        assert_true(g->n <= 96);
        char *save, *tok = strtok_r(line, " \n", &save);
        snprintf(r->name, sizeof r->name, "%s", tok);
        r->ndim = atoi(strtok_r(NULL, " \n", &save));
        r->n = 1;
        for (int i = 0; i < r->ndim; i++) {
            r->dims[i] = atoi(strtok_r(NULL, " \n", &save));
            r->n *= (size_t)r->dims[i];
        }
        r->d = malloc(r->n * sizeof(float));
        assert_int_equal(fread(r->d, sizeof(float), r->n, f), r->n);
    }
    fclose(f);
}

static void gfree(golden *g) {
    for (int i = 0; i < g->n; i++) free(g->r[i].d);
}

static const rec *get(const golden *g, const char *name) {
    for (int i = 0; i < g->n; i++)
        if (!strcmp(g->r[i].name, name)) return &g->r[i];
    fail_msg("golden record %s missing", name);
    return NULL;
}

/* max |a-b| / (max |b| + 1e-6): error relative to the tensor's scale */
static void close_to(const float *a, const rec *b, double tol, const char *what) {
    double worst = 0, scale = 1e-6;
    for (size_t i = 0; i < b->n; i++) scale = fmax(scale, fabs(b->d[i]));
    for (size_t i = 0; i < b->n; i++) {
        double e = fabs((double)a[i] - b->d[i]) / scale;
        if (e > worst || isnan(e)) worst = isnan(e) ? INFINITY : e;
    }
    if (!(worst <= tol)) fail_msg("%s: relative error %g > %g", what, worst, tol);
}

static void setp(nn_model *m, const char *pname, const rec *r) {
    int p = nn_param_find(m, pname);
    if (p < 0) fail_msg("model has no parameter %s", pname);
    assert_int_equal(m->param[p].n, r->n);
    memcpy(m->param[p].w, r->d, r->n * sizeof(float));
}

static const float *pgrad(nn_model *m, const char *pname) {
    int p = nn_param_find(m, pname);
    if (p < 0) fail_msg("model has no parameter %s", pname);
    return m->param[p].g;
}

static const float *pval(nn_model *m, const char *pname) {
    int p = nn_param_find(m, pname);
    if (p < 0) fail_msg("model has no parameter %s", pname);
    return m->param[p].w;
}

/* forward in training mode then backward from dy; input gradient kept */
static nn_exec *run(nn_model *m, const rec *x, const rec *dy, int train) {
    int n = x->dims[0], h = x->ndim == 4 ? x->dims[2] : 1, w = x->ndim == 4 ? x->dims[3] : 1;
    nn_exec *e;
    assert_int_equal(nn_exec_new(m, n, h, w, train, &e), URSA_OK);
    nn_exec_want_input_grad(e, 1);
    nn_zero_grad(m);
    nn_forward(e, x->d, n);
    if (dy) nn_backward(e, dy->d);
    return e;
}

static void conv_layers(void **state) {
    (void)state;
    golden g;
    gload(&g, "conv.bin");
    const struct { const char *p; int cout, k, s, pad, bias; } cs[] = {
        {"a.", 4, 3, 2, 1, 1}, {"b.", 6, 1, 1, 0, 0}, {"c.", 5, 7, 2, 3, 0}};
    for (int i = 0; i < 3; i++) {
        char k[64];
#define G(s) (snprintf(k, sizeof k, "%s%s", cs[i].p, s), get(&g, k))
        const rec *x = G("x");
        nn_model m;
        nn_model_init(&m, x->dims[1]);
        nn_conv(&m, "c", 0, cs[i].cout, cs[i].k, cs[i].s, cs[i].pad, cs[i].bias);
        setp(&m, "c.weight", G("weight"));
        if (cs[i].bias) setp(&m, "c.bias", G("bias"));
        nn_exec *e = run(&m, x, G("dy"), 1);
        close_to(nn_value(e, m.out, NULL, NULL, NULL), G("y"), 1e-5, k);
        close_to(nn_input_grad(e), G("dx"), 1e-5, k);
        close_to(pgrad(&m, "c.weight"), G("dweight"), 1e-5, k);
        if (cs[i].bias) close_to(pgrad(&m, "c.bias"), G("dbias"), 1e-5, k);
#undef G
        nn_exec_free(e);
        nn_model_free(&m);
    }
    gfree(&g);
}

static void batch_norm(void **state) {
    (void)state;
    golden g;
    gload(&g, "bn.bin");
    const char *pre[2] = {"", "bn1d."};
    for (int i = 0; i < 2; i++) {
        char k[64];
#define G(s) (snprintf(k, sizeof k, "%s%s", pre[i], s), get(&g, k))
        const rec *x = G("x");
        nn_model m;
        nn_model_init(&m, x->dims[1]);
        nn_bn(&m, "bn", 0, 0);
        setp(&m, "bn.weight", G("weight"));
        setp(&m, "bn.bias", G("bias"));
        setp(&m, "bn.running_mean", G("running_mean"));
        setp(&m, "bn.running_var", G("running_var"));
        nn_exec *ev = run(&m, x, NULL, 0);
        close_to(nn_value(ev, m.out, NULL, NULL, NULL), G("y_eval"), 1e-5, k);
        nn_exec_free(ev);
        nn_exec *e = run(&m, x, G("dy"), 1);
        close_to(nn_value(e, m.out, NULL, NULL, NULL), G("y_train"), 1e-5, k);
        close_to(pval(&m, "bn.running_mean"), G("running_mean_after"), 1e-5, k);
        close_to(pval(&m, "bn.running_var"), G("running_var_after"), 1e-5, k);
        close_to(nn_input_grad(e), G("dx"), 1e-4, k);
        close_to(pgrad(&m, "bn.weight"), G("dweight"), 1e-5, k);
        close_to(pgrad(&m, "bn.bias"), G("dbias"), 1e-5, k);
#undef G
        nn_exec_free(e);
        nn_model_free(&m);
    }
    gfree(&g);
}

static void pools(void **state) {
    (void)state;
    golden g;
    gload(&g, "pool.bin");
    const rec *x = get(&g, "x");
    for (int i = 0; i < 3; i++) {
        nn_model m;
        nn_model_init(&m, x->dims[1]);
        const char *p = i == 0 ? "max." : i == 1 ? "avg." : "cat.";
        if (i == 0) nn_maxpool(&m, 0, 3, 2, 1);
        else if (i == 1) nn_avgpool(&m, 0, 2, 2);
        else nn_concat(&m, nn_gmp(&m, 0), nn_gap(&m, 0));
        char k[32];
        snprintf(k, sizeof k, "%sdy", p);
        nn_exec *e = run(&m, x, get(&g, k), 1);
        snprintf(k, sizeof k, "%sy", p);
        close_to(nn_value(e, m.out, NULL, NULL, NULL), get(&g, k), 1e-6, k);
        snprintf(k, sizeof k, "%sdx", p);
        close_to(nn_input_grad(e), get(&g, k), 1e-6, k);
        nn_exec_free(e);
        nn_model_free(&m);
    }
    gfree(&g);
}

static void linear_relu_loss(void **state) {
    (void)state;
    golden g;
    gload(&g, "linear.bin");
    nn_model m;
    nn_model_init(&m, 6);
    nn_linear(&m, "fc", 0, 5, 1);
    setp(&m, "fc.weight", get(&g, "weight"));
    setp(&m, "fc.bias", get(&g, "bias"));
    nn_exec *e = run(&m, get(&g, "x"), get(&g, "dy"), 1);
    close_to(nn_value(e, m.out, NULL, NULL, NULL), get(&g, "y"), 1e-5, "linear y");
    close_to(nn_input_grad(e), get(&g, "dx"), 1e-5, "linear dx");
    close_to(pgrad(&m, "fc.weight"), get(&g, "dweight"), 1e-5, "linear dweight");
    close_to(pgrad(&m, "fc.bias"), get(&g, "dbias"), 1e-5, "linear dbias");
    nn_exec_free(e);
    nn_model_free(&m);
    nn_model_init(&m, 7);
    nn_relu(&m, 0);
    e = run(&m, get(&g, "relu.x"), get(&g, "relu.dy"), 1);
    close_to(nn_value(e, m.out, NULL, NULL, NULL), get(&g, "relu.y"), 0, "relu y");
    close_to(nn_input_grad(e), get(&g, "relu.dx"), 0, "relu dx");
    nn_exec_free(e);
    nn_model_free(&m);
    gfree(&g);

    gload(&g, "loss.bin");
    const rec *lg = get(&g, "logits"), *tg = get(&g, "targets");
    int t[4];
    for (int i = 0; i < 4; i++) t[i] = (int)tg->d[i];
    float d[20];
    float loss = nn_softmax_ce(lg->d, t, 4, 5, d);
    close_to(&loss, get(&g, "loss"), 1e-6, "loss");
    close_to(d, get(&g, "dlogits"), 1e-6, "dlogits");
    gfree(&g);
}

static void basic_block_train(void **state) {
    (void)state;
    golden g;
    gload(&g, "block.bin");
    nn_model m;
    nn_model_init(&m, 4);
    int a = nn_bn(&m, "bn1", nn_conv(&m, "conv1", 0, 8, 3, 2, 1, 0), 1);
    a = nn_bn(&m, "bn2", nn_conv(&m, "conv2", a, 8, 3, 1, 1, 0), 0);
    int s = nn_bn(&m, "downsample.1", nn_conv(&m, "downsample.0", 0, 8, 1, 2, 0, 0), 0);
    nn_add(&m, a, s, 1);
    for (int i = 0; i < m.nparam; i++) setp(&m, m.param[i].name, get(&g, m.param[i].name));
    nn_exec *e = run(&m, get(&g, "x"), get(&g, "dy"), 1);
    close_to(nn_value(e, m.out, NULL, NULL, NULL), get(&g, "y"), 1e-5, "block y");
    close_to(nn_input_grad(e), get(&g, "dx"), 1e-4, "block dx");
    char k[128];
    for (int i = 0; i < m.nparam; i++) {
        nn_param *p = &m.param[i];
        snprintf(k, sizeof k, p->g ? "d.%s" : "after.%s", p->name);
        close_to(p->g ? p->g : p->w, get(&g, k), 1e-4, k);
    }
    nn_exec_free(e);
    nn_model_free(&m);
    gfree(&g);
}

/* the fixture's hash (tests/golden/README.md) */
static double hash_u(uint32_t i, uint32_t p) {
    uint32_t x = i * 0x9E3779B1u + p * 0x85EBCA77u + 1u;
    x ^= x >> 15;
    x *= 0x2C1B3C6Du;
    x ^= x >> 12;
    x *= 0x297A2D39u;
    x ^= x >> 15;
    return x / 4294967296.0;
}

static void hash_fill(nn_model *m) {
    for (int p = 0; p < m->nparam; p++) {
        nn_param *q = &m->param[p];
        long fan_in = (long)(q->n / (size_t)q->shape[0]);
        for (size_t i = 0; i < q->n; i++) {
            double u = hash_u((uint32_t)i, (uint32_t)p), v;
            switch (q->kind) {
            case NN_P_CONV_W:
            case NN_P_LIN_W: v = (2.0 * u - 1.0) * sqrt(6.0 / (double)fan_in); break;
            case NN_P_BIAS: v = (2.0 * u - 1.0) * 0.1; break;
            case NN_P_BN_W: v = 0.8 + 0.4 * u; break;
            case NN_P_BN_RV: v = 0.5 + u; break;
            default: v = (2.0 * u - 1.0) * 0.2; break;
            }
            q->w[i] = (float)v;
        }
    }
}

static const char *kind_name(nn_pkind k) {
    static const char *n[] = {"conv_w", "lin_w", "bias", "bn_w", "bn_b", "bn_rm", "bn_rv"};
    return n[k];
}

/* our parameters come in torchvision's state_dict order, names and shapes */
static void check_layout(nn_model *m, const char *file) {
    char path[4096], line[256];
    const char *dir = getenv("URSA_GOLDEN_DIR");
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/golden", file);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int i = 0;
    while (fgets(line, sizeof line, f)) {
        char want[256], have[256];
        line[strcspn(line, "\n")] = 0;
        snprintf(want, sizeof want, "%s", line);
        assert_true(i < m->nparam);
        nn_param *p = &m->param[i++];
        int k = snprintf(have, sizeof have, "%s %s", p->name, kind_name(p->kind));
        for (int d = 0; d < p->ndim; d++) k += snprintf(have + k, sizeof have - k, " %d", p->shape[d]);
        assert_string_equal(have, want);
    }
    assert_int_equal(i, m->nparam);
    fclose(f);
}

static void resnet18_whole(void **state) {
    (void)state;
    golden g;
    gload(&g, "resnet18.bin");
    nn_model m;
    assert_int_equal(nn_resnet(&m, 18, 10), URSA_OK);
    check_layout(&m, "resnet18_params.txt");
    hash_fill(&m);
    const rec *x = get(&g, "x");
    nn_exec *e = run(&m, x, NULL, 0);
    close_to(nn_value(e, m.out, NULL, NULL, NULL), get(&g, "y_eval"), 2e-4, "resnet18 eval");
    nn_exec_free(e);
    /* the inference-fused model too */
    nn_model f;
    assert_int_equal(nn_fuse_for_inference(&m, &f), URSA_OK);
    e = run(&f, x, NULL, 0);
    close_to(nn_value(e, f.out, NULL, NULL, NULL), get(&g, "y_eval"), 2e-4, "resnet18 fused");
    nn_exec_free(e);
    nn_model_free(&f);
    /* training mode: logits, loss, gradients, running statistics */
    assert_int_equal(nn_exec_new(&m, 2, 64, 64, 1, &e), URSA_OK);
    const rec *tg = get(&g, "targets");
    int t[2] = {(int)tg->d[0], (int)tg->d[1]};
    nn_zero_grad(&m);
    nn_forward(e, x->d, 2);
    close_to(nn_value(e, m.out, NULL, NULL, NULL), get(&g, "y_train"), 2e-4, "resnet18 train");
    float loss = nn_backward_ce(e, t);
    close_to(&loss, get(&g, "loss"), 1e-4, "resnet18 loss");
    const char *ps[] = {"conv1.weight", "bn1.weight", "layer4.1.bn2.bias", "fc.weight", "fc.bias"};
    char k[128];
    for (int i = 0; i < 5; i++) {
        snprintf(k, sizeof k, "d.%s", ps[i]);
        close_to(pgrad(&m, ps[i]), get(&g, k), 2e-3, k);
    }
    close_to(pval(&m, "bn1.running_mean"), get(&g, "after.bn1.running_mean"), 1e-4, "rm");
    close_to(pval(&m, "layer4.1.bn2.running_var"), get(&g, "after.layer4.1.bn2.running_var"), 1e-4,
             "rv");
    nn_exec_free(e);
    nn_model_free(&m);
    gfree(&g);
    assert_int_equal(nn_resnet(&m, 34, 10), URSA_OK);
    check_layout(&m, "resnet34_params.txt");
    nn_model_free(&m);
}

static void adamw_three_steps(void **state) {
    (void)state;
    golden g;
    gload(&g, "adamw.bin");
    nn_model m;
    nn_model_init(&m, 3);
    int x = nn_bn(&m, "1", nn_conv(&m, "0", 0, 4, 3, 1, 1, 0), 1);
    nn_linear(&m, "5", nn_flatten(&m, nn_gap(&m, x)), 3, 1);
    char k[128];
    for (int i = 0; i < m.nparam; i++) {
        snprintf(k, sizeof k, "init.%s", m.param[i].name);
        setp(&m, m.param[i].name, get(&g, k));
    }
    const rec *xr = get(&g, "x"), *tg = get(&g, "targets");
    int t[4];
    for (int i = 0; i < 4; i++) t[i] = (int)tg->d[i];
    nn_exec *e;
    assert_int_equal(nn_exec_new(&m, 4, 6, 6, 1, &e), URSA_OK);
    nn_adamw o;
    nn_adamw_init(&o);
    float lr = 1e-2f;
    for (int s = 0; s < 3; s++) {
        nn_zero_grad(&m);
        nn_forward(e, xr->d, 4);
        float loss = nn_backward_ce(e, t);
        snprintf(k, sizeof k, "loss%d", s);
        close_to(&loss, get(&g, k), 1e-5, k);
        assert_int_equal(nn_adamw_step(&o, &m, &lr, 0.9f), URSA_OK);
    }
    for (int i = 0; i < m.nparam; i++) {
        snprintf(k, sizeof k, "final.%s", m.param[i].name);
        close_to(m.param[i].w, get(&g, k), 1e-4, k);
    }
    nn_exec_free(e);
    nn_model_free(&m);
    gfree(&g);
}

static void fastai_head(void **state) {
    (void)state;
    golden g;
    gload(&g, "head.bin");
    nn_model m;
    nn_model_init(&m, 8);
    nn_add_head(&m, 4, 512, 0.25f, 0.5f);
    for (int i = 0; i < m.nparam; i++) {
        const char *n = m.param[i].name;
        assert_true(!strncmp(n, "head.", 5));
        setp(&m, n, get(&g, n + 5));
    }
    assert_int_equal(m.param[0].group, m.ngroups - 1); /* the head is the last group */
    nn_exec *e = run(&m, get(&g, "x"), NULL, 0);
    close_to(nn_value(e, m.out, NULL, NULL, NULL), get(&g, "y"), 1e-5, "head y");
    nn_exec_free(e);
    nn_model_free(&m);
    gfree(&g);
}

/* torch.onnx's exports of a torchvision-layout resnet (BN folded into the
 * convs, and kept) load and give torch's logits; the folded one, unfolded
 * for training, starts out computing the same function in training mode */
static void torch_onnx_import(void **state) {
    (void)state;
    golden g;
    gload(&g, "tiny.bin");
    const rec *x = get(&g, "x");
    const char *files[2] = {"tiny_folded.onnx", "tiny_keepbn.onnx"};
    for (int i = 0; i < 2; i++) {
        char path[4096], err[256];
        const char *dir = getenv("URSA_GOLDEN_DIR");
        snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/golden", files[i]);
        nn_model m;
        if (nn_onnx_load(path, &m, err, sizeof err) != URSA_OK) fail_msg("%s", err);
        assert_int_equal(m.meta.size, 48);  /* from the graph's input shape */
        assert_int_equal(m.meta.nclass, 0); /* no metadata: labels by index */
        assert_int_equal(m.ngroups, 3);     /* stem..layer2, layer3..4, fc */
        nn_exec *e = run(&m, x, NULL, 0);
        close_to(nn_value(e, m.out, NULL, NULL, NULL), get(&g, "y"), 1e-5, files[i]);
        nn_exec_free(e);
        if (i == 0) {
            nn_unfold_bn(&m);
            int bn = 0;
            for (int j = 0; j < m.nnode; j++) bn += m.node[j].op == NN_BN;
            assert_int_equal(bn, 11);
            e = run(&m, x, NULL, 1);
            close_to(nn_value(e, m.out, NULL, NULL, NULL), get(&g, "y"), 1e-4, "unfolded, train");
            nn_exec_free(e);
            e = run(&m, x, NULL, 0); /* running statistics were set from that batch */
            close_to(nn_value(e, m.out, NULL, NULL, NULL), get(&g, "y"), 1e-4, "unfolded, eval");
            nn_exec_free(e);
        }
        nn_model_free(&m);
    }
    gfree(&g);
}

/* transfer learning from torch's folded export: body, fast.ai head,
 * frozen: a few steps move the head and BN but not the body's convs */
static void torch_body_transfer(void **state) {
    (void)state;
    golden g;
    gload(&g, "tiny.bin");
    char path[4096], err[256];
    const char *dir = getenv("URSA_GOLDEN_DIR");
    snprintf(path, sizeof path, "%s/tiny_folded.onnx", dir ? dir : "tests/golden");
    nn_model m;
    if (nn_onnx_load(path, &m, err, sizeof err) != URSA_OK) fail_msg("%s", err);
    assert_int_equal(nn_body_from(&m), URSA_OK);
    nn_add_head(&m, 3, 512, 0.25f, 0.5f);
    assert_int_equal(m.ngroups, 3);
    assert_int_equal(nn_out_size(&m), 3);
    nn_freeze(&m);
    const rec *x = get(&g, "x");
    int t[2] = {0, 2};
    nn_exec *e;
    assert_int_equal(nn_exec_new(&m, 2, 48, 48, 1, &e), URSA_OK);
    int conv = -1, bn = -1;
    for (int i = 0; i < m.nnode && (conv < 0 || bn < 0); i++) {
        if (m.node[i].op == NN_CONV && conv < 0) conv = m.node[i].w;
        if (m.node[i].op == NN_BN && bn < 0) bn = m.node[i].w;
    }
    float c0 = m.param[conv].w[5], first = 0, last = 0;
    nn_adamw o;
    nn_adamw_init(&o);
    float lrs[3] = {1e-3f, 1e-3f, 1e-3f};
    for (int s = 0; s < 8; s++) {
        nn_zero_grad(&m);
        nn_forward(e, x->d, 2);
        float loss = nn_backward_ce(e, t);
        if (s == 0) first = loss;
        last = loss;
        assert_int_equal(nn_adamw_step(&o, &m, lrs, 0.9f), URSA_OK);
    }
    float bn_after = m.param[bn].w[0];
    assert_true(m.param[conv].w[5] == c0);     /* frozen */
    assert_true(m.param[bn].t == 8 && isfinite(bn_after)); /* BN trained */
    assert_true(last < first);
    nn_exec_free(e);
    nn_model_free(&m);
    gfree(&g);
}

int main(int argc, char **argv) {
    (void)argc;
    nn_blas_init(argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(conv_layers),       cmocka_unit_test(batch_norm),
        cmocka_unit_test(pools),             cmocka_unit_test(linear_relu_loss),
        cmocka_unit_test(basic_block_train), cmocka_unit_test(resnet18_whole),
        cmocka_unit_test(adamw_three_steps), cmocka_unit_test(fastai_head),
        cmocka_unit_test(torch_onnx_import),   cmocka_unit_test(torch_body_transfer),
    };
    return test_each_isa("nn_golden", tests, sizeof tests / sizeof tests[0]);
}
