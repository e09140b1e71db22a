/* Unit tests of the NN engine's own consistency: the im2col convolution
 * against the naive direct one (forward and backward, single images and
 * several images sharing a product), finite-difference gradient checks of a
 * small network with every layer kind, inference fusion keeping outputs,
 * freezing, and the schedules' defining values. PyTorch's goldens are in
 * test_nn_golden.c. */
#include <math.h>

#include "blas.h"
#include "data.h"
#include "gemm.h"
#include "kern.h"
#include "learner.h"
#include "nn.h"
#include "test.h"
#include "test_isa.h"

static uint64_t rs = 88172645463325252ull;
static float frand(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (float)((rs >> 11) / 9007199254740992.0) * 2 - 1;
}
static void fill(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = frand();
}

/* largest |a - b| relative to the largest |b| (float32 sums against double) */
static double max_rel(const float *a, const float *b, size_t n) {
    double w = 0, scale = 1e-6;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)b[i]));
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / scale;
        if (e > w || isnan(e)) w = isnan(e) ? INFINITY : e;
    }
    return w;
}

/* one conv node through the executor against the naive reference */
static void conv_case(int n, int cin, int h, int cout, int k, int s, int p, int bias) {
    nn_model m;
    nn_model_init(&m, cin);
    int y = nn_conv(&m, "c", 0, cout, k, s, p, bias);
    (void)y;
    nn_param *W = &m.param[0];
    fill(W->w, W->n);
    if (bias) fill(m.param[1].w, m.param[1].n);
    nn_exec *e;
    assert_int_equal(nn_exec_new(&m, n, h, h, 1, &e), URSA_OK);
    nn_exec_want_input_grad(e, 1);
    size_t xn = (size_t)n * cin * h * h;
    int ho = (h + 2 * p - k) / s + 1;
    size_t yn = (size_t)n * cout * ho * ho;
    float *x = malloc(xn * 4), *yr = malloc(yn * 4), *dy = malloc(yn * 4);
    float *dxr = calloc(xn, 4), *dwr = calloc(W->n, 4), *dbr = calloc((size_t)cout, 4);
    fill(x, xn);
    fill(dy, yn);
    const float *yf = nn_forward(e, x, n);
    nn_conv_fwd_naive(x, n, cin, h, h, W->w, bias ? m.param[1].w : NULL, cout, k, s, p, yr);
    double ef = max_rel(yf, yr, yn);
    nn_zero_grad(&m);
    nn_backward(e, dy);
    nn_conv_bwd_naive(x, n, cin, h, h, W->w, cout, k, s, p, dy, dxr, dwr, bias ? dbr : NULL);
    double ex = max_rel(nn_input_grad(e), dxr, xn), ew = max_rel(W->g, dwr, W->n);
    double eb = bias ? max_rel(m.param[1].g, dbr, (size_t)cout) : 0;
    if (ef > 1e-5 || ex > 1e-5 || ew > 1e-5 || eb > 1e-5)
        fail_msg("conv %s n=%d cin=%d h=%d cout=%d k=%d s=%d p=%d: fwd %g dx %g dw %g db %g",
                 nn_kern_get()->name, n, cin, h, cout, k, s, p, ef, ex, ew, eb);
    free(x), free(yr), free(dy), free(dxr), free(dwr), free(dbr);
    nn_exec_free(e);
    nn_model_free(&m);
}

static void conv_matches_naive(void **state) {
    (void)state;
    conv_case(1, 3, 9, 5, 3, 1, 1, 1);   /* one image a product */
    conv_case(2, 3, 11, 4, 7, 2, 3, 0);  /* stem-like */
    conv_case(2, 3, 12, 4, 7, 2, 3, 0);  /* stem-like on an even image: parity planes */
    conv_case(3, 4, 5, 6, 1, 1, 0, 0);   /* direct 1x1 */
    conv_case(5, 4, 6, 8, 1, 2, 0, 0);   /* strided 1x1 (downsample) */
    conv_case(9, 6, 4, 7, 3, 1, 1, 1);   /* several images share a product */
    conv_case(6, 2, 7, 3, 3, 2, 0, 1);   /* no padding, odd size */
    /* Winograd F(2x2,3x3): 3x3, stride 1, pad 1, 16 channels or more */
    conv_case(4, 16, 12, 17, 3, 1, 1, 1);
    conv_case(3, 17, 11, 16, 3, 1, 1, 0); /* a partial edge tile */
    conv_case(1, 16, 17, 24, 3, 1, 1, 0); /* one image over all threads */
    conv_case(1, 16, 35, 16, 3, 1, 1, 0); /* rows of more than 16 tiles, odd width */
    conv_case(1, 16, 7, 24, 3, 1, 1, 1);  /* 16 tiles: panels 16 wide (gemm.h) */
    conv_case(3, 16, 8, 16, 3, 1, 1, 0);  /* 48 tiles: three 16-wide panels */
    /* its weight gradient (several images: each thread its own) */
    conv_case(2, 16, 35, 16, 3, 1, 1, 0); /* tile rows of more than 16 tiles, odd size */
    conv_case(40, 24, 7, 40, 3, 1, 1, 1); /* several passes a thread, channels off the panels */
    /* gemm.h's packed product: channel counts off its 8 x 32 tiles */
    conv_case(7, 5, 9, 13, 3, 2, 1, 1);   /* strided: the gathered panels */
    conv_case(3, 9, 10, 9, 5, 1, 2, 1);   /* 5x5 "same": the shifted loads */
    conv_case(2, 7, 6, 11, 1, 1, 0, 1);   /* panels that span two images */
    conv_case(4, 6, 2, 6, 3, 1, 1, 0);    /* a panel holds all four images */
}

/* one convolution through gemm.h alone (packed weights, panels straight from
 * the images, bias and ReLU on the way out) against the naive one */
static void packed_case(int n, int cin, int h, int cout, int k, int s, int p, int relu) {
    const nn_kern *kt = nn_kern_get();
    int ho = (h + 2 * p - k) / s + 1, hwo = ho * ho, K = cin * k * k, N = n * hwo;
    size_t xn = (size_t)n * cin * h * h, yn = (size_t)n * cout * hwo;
    float *x = malloc(xn * 4), *w = malloc((size_t)cout * K * 4), *b = malloc((size_t)cout * 4);
    float *y = malloc(yn * 4), *yr = malloc(yn * 4);
    float *ap = malloc(nn_gemm_apack_n(kt, cout, K) * 4), *bp = NULL;
    assert_int_equal(posix_memalign((void **)&bp, 64, nn_gemm_bpack_n(kt, K, N) * 4), 0);
    fill(x, xn);
    fill(w, (size_t)cout * K);
    fill(b, (size_t)cout);
    nn_gemm_pack_a(kt, w, K, cout, K, ap);
    int NP = nn_gemm_npanels(kt, N);
    /* stride 2 on an even grid: through the parity planes */
    float *ph = nn_gemm_phases_ok(h, h, s, ho, ho) ? malloc(xn * 4) : NULL;
    size_t xper = (size_t)cin * h * h;
    if (ph) { /* in two calls, as two workers would */
        nn_gemm_phase_split(kt, x, xper, n, cin, h, h, ph, 0, cin / 2);
        nn_gemm_phase_split(kt, x, xper, n, cin, h, h, ph, cin / 2, cin);
    }
    nn_gemm_pack_conv(kt, x, ph, xper, n, cin, h, h, k, s, p, ho, ho, bp, 0, NP / 2);
    nn_gemm_pack_conv(kt, x, ph, xper, n, cin, h, h, k, s, p, ho, ho, bp, NP / 2, NP);
    free(ph);
    nn_gemm_out o = {y, hwo, (size_t)cout * hwo, b, relu, 0};
    nn_gemm_packed(kt, cout, N, K, ap, bp, &o, 1, 3);
    nn_gemm_packed(kt, cout, N, K, ap, bp, &o, 0, 3);
    nn_gemm_packed(kt, cout, N, K, ap, bp, &o, 2, 3);
    nn_conv_fwd_naive(x, n, cin, h, h, w, b, cout, k, s, p, yr);
    if (relu)
        for (size_t i = 0; i < yn; i++) yr[i] = yr[i] > 0 ? yr[i] : 0;
    double e = max_rel(y, yr, yn);
    if (e > 1e-5)
        fail_msg("packed %s n=%d cin=%d h=%d cout=%d k=%d s=%d p=%d: %g", kt->name, n, cin, h, cout,
                 k, s, p, e);
    free(x), free(w), free(b), free(y), free(yr), free(ap), free(bp);
}

/* a weight gradient's product through gemm.h: C (m x n) += A (m x k) B^T
 * with B given as n x k rows (im2col's), packed by transposing, added to
 * what C holds; against the double-precision sum */
static void packed_wgrad_case(int m, int n, int k) {
    const nn_kern *kt = nn_kern_get();
    int ld = k + 3; /* rows longer than the product reads */
    float *a = malloc((size_t)m * ld * 4), *bt = malloc((size_t)n * ld * 4);
    float *c = malloc((size_t)m * n * 4), *ap = malloc(nn_gemm_apack_n(kt, m, k) * 4), *bp = NULL;
    double *cr = malloc((size_t)m * n * sizeof(double)), *cabs = malloc((size_t)m * n * sizeof(double));
    assert_int_equal(posix_memalign((void **)&bp, 64, nn_gemm_bpack_n(kt, k, n) * 4), 0);
    fill(a, (size_t)m * ld);
    fill(bt, (size_t)n * ld);
    fill(c, (size_t)m * n);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = c[(size_t)i * n + j], sa = fabs(acc);
            for (int q = 0; q < k; q++) {
                double t = (double)a[(size_t)i * ld + q] * bt[(size_t)j * ld + q];
                acc += t;
                sa += fabs(t);
            }
            cr[(size_t)i * n + j] = acc;
            cabs[(size_t)i * n + j] = sa;
        }
    nn_gemm_pack_a(kt, a, ld, m, k, ap);
    nn_gemm_pack_bt(kt, bt, ld, k, n, bp);
    nn_gemm_out o = {c, n, 0, NULL, 0, 1};
    nn_gemm_packed(kt, m, n, k, ap, bp, &o, 0, 2);
    nn_gemm_packed(kt, m, n, k, ap, bp, &o, 1, 2);
    /* float sums of k terms: within 1e-5 of the sum of their sizes (a term
     * missed or misplaced would be about 1/k of it) */
    double worst = 0;
    for (size_t i = 0; i < (size_t)m * n; i++) {
        double d = fabs(c[i] - cr[i]) / cabs[i];
        worst = d > worst ? d : worst;
    }
    if (worst > 1e-5)
        fail_msg("weight-gradient product %s m=%d n=%d k=%d: %g", kt->name, m, n, k, worst);
    free(a), free(bt), free(c), free(ap), free(bp), free(cr), free(cabs);
}

/* label smoothing: the loss is -sum_j q_j log p_j with q = (1 - eps) on
 * the label + eps / c everywhere (PyTorch's label_smoothing), computed here
 * from the probabilities; the gradient against finite differences */
static void label_smoothing_loss_and_gradient(void **state) {
    (void)state;
    const int n = 3, c = 5;
    float lg[15], d[15];
    int t[3] = {4, 0, 2};
    for (int i = 0; i < n * c; i++) lg[i] = 3 * frand();
    for (int k = 0; k < 3; k++) {
        float eps = k == 0 ? 0.0f : k == 1 ? 0.1f : 0.3f;
        double want = 0;
        for (int i = 0; i < n; i++) {
            double z = 0;
            for (int j = 0; j < c; j++) z += exp(lg[i * c + j]);
            for (int j = 0; j < c; j++) {
                double q = (1 - eps) * (j == t[i]) + eps / c;
                want -= q * log(exp(lg[i * c + j]) / z);
            }
        }
        want /= n;
        float got = nn_softmax_ce_ls(lg, t, n, c, eps, d);
        assert_true(fabs(got - want) < 1e-5 * (1 + fabs(want)));
        if (eps == 0) assert_true(got == nn_softmax_ce(lg, t, n, c, NULL));
        for (int i = 0; i < n * c; i++) {
            float keep = lg[i], h = 1e-2f;
            lg[i] = keep + h;
            double up = nn_softmax_ce_ls(lg, t, n, c, eps, NULL);
            lg[i] = keep - h;
            double dn = nn_softmax_ce_ls(lg, t, n, c, eps, NULL);
            lg[i] = keep;
            double fd = (up - dn) / (2 * h);
            if (fabs(fd - d[i]) > 2e-3)
                fail_msg("eps %g logit %d: gradient %g, finite difference %g", eps, i, d[i], fd);
        }
    }
}

static void packed_gemm_matches_naive(void **state) {
    (void)state;
    packed_case(1, 3, 28, 32, 3, 1, 1, 1);  /* stem: 3 channels, K = 27 */
    packed_case(3, 16, 14, 64, 3, 1, 1, 0); /* same-size 3x3 over several images */
    packed_case(2, 8, 7, 20, 3, 1, 1, 1);   /* 49 pixels: tiles across images, 20 rows */
    packed_case(4, 6, 14, 12, 3, 2, 1, 0);  /* strided, even size: parity planes */
    packed_case(3, 5, 13, 12, 3, 2, 1, 1);  /* strided, odd size: gathered */
    packed_case(2, 5, 10, 9, 1, 2, 0, 1);   /* strided 1x1, even: one plane */
    packed_case(2, 5, 9, 9, 1, 2, 0, 1);    /* strided 1x1, odd */
    packed_case(1, 3, 40, 8, 7, 2, 3, 1);   /* resnet's stem on an even image: planes, 7x7 */
    packed_case(2, 4, 4, 8, 3, 2, 1, 0);    /* 2x2 outputs: a panel across both images */
    packed_case(12, 3, 2, 4, 3, 2, 1, 0);   /* 1x1 outputs: twelve images to a panel, gathered */
    packed_case(1, 4, 13, 7, 1, 1, 0, 0);   /* 1x1: a plain copy of the image */
    packed_case(1, 3, 23, 10, 7, 2, 3, 1);  /* resnet's 7x7 stem */
    packed_case(2, 2, 5, 3, 3, 1, 0, 0);    /* valid (unpadded) 3x3: not the same grid */
    packed_case(5, 3, 2, 4, 3, 1, 1, 0);    /* 2x2 images: one panel holds all five */
    packed_case(1, 8, 4, 9, 3, 1, 1, 1);    /* 16 columns: one 16-wide panel */
    packed_case(1, 5, 6, 10, 3, 1, 1, 0);   /* 36 columns: three 16-wide panels */
    packed_case(3, 4, 4, 8, 3, 1, 1, 1);    /* 48 columns, 16-wide panels across images */
    packed_wgrad_case(64, 576, 1176);       /* the small resnet's: 16 x 16 blocks exactly */
    packed_wgrad_case(13, 27, 50);          /* a stem's: rows and columns off every block */
    packed_wgrad_case(8, 9, 7);             /* one 16-wide panel, k under one block */
    packed_wgrad_case(20, 40, 33);          /* 16-wide panels, a partial last one */
    packed_wgrad_case(7, 9, 1);             /* one step of the inner dimension */
}

/* The level follows the CPU and URSA_NN_ISA; a level the CPU lacks, or a
 * name that is none, is refused with the reason, and the best one stays. */
static void isa_choice(void **state) {
    (void)state;
    const nn_kern *was = nn_kern_get();
    nn_isa best = nn_isa_best();
    char err[200] = "";
    nn_isa want = NN_ISA_GENERIC; /* off x86: plain C */
#if defined(__x86_64__)
    __builtin_cpu_init();
    want = __builtin_cpu_supports("avx512f")                                       ? NN_ISA_AVX512
           : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? NN_ISA_AVX2
                                                                               : NN_ISA_GENERIC;
#endif
    assert_int_equal(best, want);
    setenv("URSA_NN_ISA", "generic", 1);
    assert_int_equal(nn_isa_init(err, sizeof err), URSA_OK);
    assert_int_equal(nn_kern_get()->isa, NN_ISA_GENERIC);
    setenv("URSA_NN_ISA", "sse9", 1);
    assert_int_equal(nn_isa_init(err, sizeof err), URSA_ERR_INVALID);
    assert_non_null(strstr(err, "not a level"));
    assert_int_equal(nn_kern_get()->isa, best);
    if (best < NN_ISA_AVX512) {
        setenv("URSA_NN_ISA", "avx512", 1);
        assert_int_equal(nn_isa_init(err, sizeof err), URSA_ERR_INVALID);
        assert_non_null(strstr(err, "at most"));
        assert_int_equal(nn_isa_set(NN_ISA_AVX512), URSA_ERR_INVALID);
    }
    unsetenv("URSA_NN_ISA");
    assert_int_equal(nn_isa_set(was->isa), URSA_OK);
}

/* in_c 3, 8x8: conv-bn-maxpool-relu, a downsampling basic block, fast.ai's
 * head (concat pool, BN, dropout, linear, relu, BN, linear) */
static void small_net(nn_model *m, float drop) {
    nn_model_init(m, 3);
    int x = nn_conv(m, "c1", 0, 4, 3, 1, 1, 1);
    x = nn_bn(m, "b1", x, 0);
    x = nn_relu(m, nn_maxpool(m, x, 3, 2, 1)); /* no ties for the pool to break */
    int a = nn_conv(m, "l.conv1", x, 6, 3, 2, 1, 0);
    a = nn_bn(m, "l.bn1", a, 1);
    a = nn_conv(m, "l.conv2", a, 6, 3, 1, 1, 0);
    a = nn_bn(m, "l.bn2", a, 0);
    int sc = nn_bn(m, "l.ds.1", nn_conv(m, "l.ds.0", x, 6, 1, 2, 0, 0), 0);
    x = nn_add(m, a, sc, 1);
    m->out = x;
    nn_add_head(m, 3, 5, drop, drop);
    nn_init_weights(m, 7);
    for (int i = 0; i < m->nparam; i++) /* non-trivial BN parameters */
        if (m->param[i].kind == NN_P_BN_W || m->param[i].kind == NN_P_BN_B)
            for (size_t j = 0; j < m->param[i].n; j++) m->param[i].w[j] += 0.3f * frand();
}

static double loss_of(nn_model *m, const float *x, const int *t, int n) {
    /* eval-free: a fresh training executor, BN stats restored after */
    float *saved[64];
    int ns = 0;
    for (int i = 0; i < m->nparam && ns < 64; i++)
        if (m->param[i].kind == NN_P_BN_RM || m->param[i].kind == NN_P_BN_RV) {
            saved[ns] = malloc(m->param[i].n * 4);
            memcpy(saved[ns++], m->param[i].w, m->param[i].n * 4);
        }
    nn_exec *e;
    assert_int_equal(nn_exec_new(m, n, 8, 8, 1, &e), URSA_OK);
    const float *y = nn_forward(e, x, n);
    double l = nn_softmax_ce(y, t, n, 3, NULL);
    nn_exec_free(e);
    ns = 0;
    for (int i = 0; i < m->nparam && ns < 64; i++)
        if (m->param[i].kind == NN_P_BN_RM || m->param[i].kind == NN_P_BN_RV) {
            memcpy(m->param[i].w, saved[ns], m->param[i].n * 4);
            free(saved[ns++]);
        }
    return l;
}

/* Does the analytic gradient match the central difference, or, at a kink
 * (a ReLU or a max crossing inside +-h), one of the one-sided ones? */
static int grad_ok(double an, double lp, double l0, double lm, double h) {
    double c = (lp - lm) / (2 * h), r = (lp - l0) / h, l = (l0 - lm) / h;
#define CLOSE(a, b) (fabs((a) - (b)) <= 2e-2 * fmax(fabs(a), fabs(b)) + 2e-3)
    return CLOSE(an, c) || CLOSE(an, r) || CLOSE(an, l);
#undef CLOSE
}

static void gradients_match_finite_differences(void **state) {
    (void)state;
    rs = 0x2545F4914F6CDD1Dull; /* independent of the tests before */
    nn_model m;
    small_net(&m, 0.0f);
    int n = 4, t[4] = {0, 2, 1, 2};
    float x[4 * 3 * 8 * 8];
    fill(x, sizeof x / 4);
    nn_exec *e;
    assert_int_equal(nn_exec_new(&m, n, 8, 8, 1, &e), URSA_OK);
    nn_exec_want_input_grad(e, 1);
    nn_zero_grad(&m);
    nn_forward(e, x, n);
    nn_backward_ce(e, t);
    float dx[sizeof x / 4];
    memcpy(dx, nn_input_grad(e), sizeof dx);
    nn_exec_free(e);
    int checked = 0, bad = 0, central = 0;
    const float h = 2e-3f;
    double l0 = loss_of(&m, x, t, n);
    for (int i = 0; i < m.nparam; i++) {
        nn_param *p = &m.param[i];
        if (!p->g) continue;
        for (size_t j = 0; j < p->n; j += 1 + p->n / 6) {
            float w0 = p->w[j];
            p->w[j] = w0 + h;
            double lp = loss_of(&m, x, t, n);
            p->w[j] = w0 - h;
            double lm = loss_of(&m, x, t, n);
            p->w[j] = w0 + h / 4; /* a smaller step, for kinks close by */
            double lp4 = loss_of(&m, x, t, n);
            p->w[j] = w0 - h / 4;
            double lm4 = loss_of(&m, x, t, n);
            p->w[j] = w0;
            checked++;
            central += grad_ok(p->g[j], lp, (lp + lm) / 2, lm, h);
            if (!grad_ok(p->g[j], lp, l0, lm, h) && !grad_ok(p->g[j], lp4, l0, lm4, h / 4)) {
                bad++;
                print_message("%s[%zu]: analytic %g numeric %g\n", p->name, j, p->g[j],
                              (lp - lm) / (2 * h));
            }
        }
    }
    for (size_t j = 0; j < sizeof x / 4; j += 17) {
        float x0 = x[j];
        x[j] = x0 + h;
        double lp = loss_of(&m, x, t, n);
        x[j] = x0 - h;
        double lm = loss_of(&m, x, t, n);
        x[j] = x0 + h / 4;
        double lp4 = loss_of(&m, x, t, n);
        x[j] = x0 - h / 4;
        double lm4 = loss_of(&m, x, t, n);
        x[j] = x0;
        checked++;
        central += grad_ok(dx[j], lp, (lp + lm) / 2, lm, h);
        if (!grad_ok(dx[j], lp, l0, lm, h) && !grad_ok(dx[j], lp4, l0, lm4, h / 4)) {
            bad++;
            print_message("x[%zu]: analytic %g numeric %g\n", j, dx[j], (lp - lm) / (2 * h));
        }
    }
    assert_true(checked > 80);
    assert_int_equal(bad, 0);
    /* kinks are rare: nearly all must match the central difference itself */
    assert_true(central >= checked * 9 / 10);
    nn_model_free(&m);
}

static void fused_inference_keeps_outputs(void **state) {
    (void)state;
    nn_model m, f;
    small_net(&m, 0.5f);
    for (int i = 0; i < m.nparam; i++) /* running stats away from 0/1 */
        if (m.param[i].kind == NN_P_BN_RM)
            for (size_t j = 0; j < m.param[i].n; j++) m.param[i].w[j] = 0.2f * frand();
        else if (m.param[i].kind == NN_P_BN_RV)
            for (size_t j = 0; j < m.param[i].n; j++) m.param[i].w[j] = 1.0f + 0.5f * frand();
    assert_int_equal(nn_fuse_for_inference(&m, &f), URSA_OK);
    assert_true(f.nnode < m.nnode);
    int convbn = 0;
    for (int i = 0; i < f.nnode - 1; i++)
        convbn += f.node[i].op == NN_CONV && f.node[i + 1].op == NN_BN;
    assert_int_equal(convbn, 0);
    float x[3 * 3 * 8 * 8];
    fill(x, sizeof x / 4);
    nn_exec *a, *b;
    assert_int_equal(nn_exec_new(&m, 3, 8, 8, 0, &a), URSA_OK);
    assert_int_equal(nn_exec_new(&f, 3, 8, 8, 0, &b), URSA_OK);
    const float *ya = nn_forward(a, x, 3), *yb = nn_forward(b, x, 3);
    assert_true(max_rel(yb, ya, 9) < 1e-4);
    /* a smaller batch than planned gives the same rows */
    float row[3];
    memcpy(row, ya, sizeof row);
    const float *y1 = nn_forward(b, x, 1);
    assert_true(max_rel(y1, row, 3) < 1e-4);
    nn_exec_free(a);
    nn_exec_free(b);
    nn_model_free(&m);
    nn_model_free(&f);
}

/* small_net with its ReLUs as nodes of their own, as an ONNX import has
 * them; a BN read twice keeps its ReLU apart */
static void small_net_relus_apart(nn_model *m) {
    nn_model_init(m, 3);
    int x = nn_conv(m, "c1", 0, 4, 3, 1, 1, 1);
    x = nn_bn(m, "b1", x, 0);
    x = nn_relu(m, nn_maxpool(m, x, 3, 2, 1));
    int a = nn_conv(m, "l.conv1", x, 6, 3, 2, 1, 0);
    a = nn_relu(m, nn_bn(m, "l.bn1", a, 0));
    a = nn_conv(m, "l.conv2", a, 6, 3, 1, 1, 0);
    a = nn_bn(m, "l.bn2", a, 0);
    int sc = nn_bn(m, "l.ds.1", nn_conv(m, "l.ds.0", x, 6, 1, 2, 0, 0), 0);
    x = nn_relu(m, nn_add(m, a, sc, 0));
    m->out = x;
    nn_add_head(m, 3, 5, 0.0f, 0.0f);
}

static void relu_fusion_trains_the_same(void **state) {
    (void)state;
    nn_model m, s;
    small_net(&m, 0.0f);
    small_net_relus_apart(&s);
    assert_int_equal(s.nparam, m.nparam);
    for (int i = 0; i < m.nparam; i++) {
        assert_int_equal(s.param[i].n, m.param[i].n);
        memcpy(s.param[i].w, m.param[i].w, m.param[i].n * sizeof(float));
    }
    int before = s.nnode;
    nn_fuse_relu(&s);
    /* l.bn1's and the add's ReLUs fold in; the one after the max pool and
     * the head's after its linear layer stay, as small_net has them */
    assert_true(s.nnode < before);
    assert_int_equal(s.nnode, m.nnode);
    int relus = 0;
    for (int i = 0; i < s.nnode; i++) relus += s.node[i].op == NN_RELU;
    int relus_m = 0;
    for (int i = 0; i < m.nnode; i++) relus_m += m.node[i].op == NN_RELU;
    assert_int_equal(relus, relus_m);
    int n = 4, t[4] = {2, 0, 1, 1};
    float x[4 * 3 * 8 * 8];
    fill(x, sizeof x / 4);
    nn_exec *a, *b;
    assert_int_equal(nn_exec_new(&m, n, 8, 8, 1, &a), URSA_OK);
    assert_int_equal(nn_exec_new(&s, n, 8, 8, 1, &b), URSA_OK);
    nn_zero_grad(&m);
    nn_zero_grad(&s);
    const float *ya = nn_forward(a, x, n), *yb = nn_forward(b, x, n);
    assert_true(max_rel(yb, ya, (size_t)n * 3) < 1e-6);
    nn_backward_ce(a, t);
    nn_backward_ce(b, t);
    for (int i = 0; i < m.nparam; i++)
        if (m.param[i].g) assert_true(max_rel(s.param[i].g, m.param[i].g, m.param[i].n) < 1e-5);
    nn_exec_free(a);
    nn_exec_free(b);
    /* a ReLU on a value something else reads too stays a node */
    nn_model d;
    nn_model_init(&d, 3);
    int c = nn_bn(&d, "b", nn_conv(&d, "c", 0, 4, 3, 1, 1, 0), 0);
    d.out = nn_add(&d, nn_relu(&d, c), c, 0);
    int nd = d.nnode;
    nn_fuse_relu(&d);
    assert_int_equal(d.nnode, nd);
    nn_model_free(&d);
    nn_model_free(&m);
    nn_model_free(&s);
}

static void freeze_keeps_body_but_trains_bn(void **state) {
    (void)state;
    nn_model m;
    small_net(&m, 0.0f);
    nn_freeze(&m);
    int frozen_conv = 0, live_bn = 0, live_head = 0;
    for (int i = 0; i < m.nparam; i++) {
        nn_param *p = &m.param[i];
        if (p->kind == NN_P_CONV_W) frozen_conv += p->frozen;
        if ((p->kind == NN_P_BN_W || p->kind == NN_P_BN_B) && !p->frozen) live_bn++;
        if (p->group == m.ngroups - 1 && !p->frozen) live_head++;
    }
    assert_int_equal(frozen_conv, 4);
    assert_true(live_bn >= 10 && live_head >= 8);
    /* a step moves BN and head weights only */
    float before = m.param[0].w[0];
    nn_exec *e;
    float x[2 * 3 * 8 * 8];
    int t[2] = {1, 0};
    fill(x, sizeof x / 4);
    assert_int_equal(nn_exec_new(&m, 2, 8, 8, 1, &e), URSA_OK);
    nn_zero_grad(&m);
    nn_forward(e, x, 2);
    nn_backward_ce(e, t);
    nn_adamw o;
    nn_adamw_init(&o);
    float lrs[3] = {1e-2f, 1e-2f, 1e-2f};
    int b1 = nn_param_find(&m, "b1.weight");
    float bn_before = m.param[b1].w[0];
    assert_int_equal(nn_adamw_step(&o, &m, lrs, 0.9f), URSA_OK);
    assert_true(m.param[0].w[0] == before);
    assert_true(m.param[b1].w[0] != bn_before);
    nn_unfreeze(&m);
    for (int i = 0; i < m.nparam; i++) assert_int_equal(m.param[i].frozen, 0);
    nn_exec_free(e);
    nn_model_free(&m);
}

static void schedules_follow_fastai(void **state) {
    (void)state;
    float lr, mom;
    nn_one_cycle(1e-3f, 0, 100, 0.3f, 25, 25e4f, 0.95f, 0.85f, &lr, &mom);
    assert_float_equal(lr, 1e-3f / 25, 1e-9);
    assert_float_equal(mom, 0.95f, 1e-6);
    nn_one_cycle(1e-3f, 30, 100, 0.3f, 25, 25e4f, 0.95f, 0.85f, &lr, &mom);
    assert_float_equal(lr, 1e-3f, 1e-9);
    assert_float_equal(mom, 0.85f, 1e-6);
    nn_one_cycle(1e-3f, 15, 100, 0.3f, 25, 25e4f, 0.95f, 0.85f, &lr, &mom);
    assert_float_equal(lr, (1e-3f + 1e-3f / 25) / 2, 1e-8); /* cosine midpoint */
    assert_float_equal(mom, 0.90f, 1e-6);
    nn_one_cycle(1e-3f, 99, 100, 0.3f, 25, 25e4f, 0.95f, 0.85f, &lr, &mom);
    assert_true(lr < 1e-6f && lr > 1e-3f / 25e4f);
    float lrs[3];
    nn_group_lrs(3e-5f, 3e-4f, 3, lrs);
    assert_float_equal(lrs[0], 3e-5f, 1e-10);
    assert_float_equal(lrs[1], 9.4868e-5f, 1e-8); /* geometric middle */
    assert_float_equal(lrs[2], 3e-4f, 1e-10);
    assert_float_equal(nn_lr_find_lr(1e-7f, 10, 0, 100), 1e-7f, 1e-12);
    assert_float_equal(nn_lr_find_lr(1e-7f, 10, 99, 100), 1e-7 * pow(1e8, 0.99), 1e-4);
    /* smoothing is debiased: a constant loss stays constant */
    nn_smooth s = {0};
    assert_float_equal(nn_smooth_add(&s, 2.0f), 2.0f, 1e-6);
    assert_float_equal(nn_smooth_add(&s, 2.0f), 2.0f, 1e-6);
    /* steepest descent of a loss curve that drops fastest at step 40 */
    float l[100], x[100];
    for (int i = 0; i < 100; i++) {
        x[i] = nn_lr_find_lr(1e-7f, 10, i, 100);
        l[i] = 2.0f - tanhf((i - 40) / 6.0f);
    }
    assert_float_equal(nn_lr_find_suggest(x, l, 100), x[40], x[40] * 1e-4);
}

/* 12x12 images: class 0 has vertical stripes, class 1 horizontal ones
 * (both survive a horizontal flip); image 13 cannot be read */
static int stripes(void *ctx, int i, img_rgb *im) {
    (void)ctx;
    if (i == 13) return -1;
    im->w = im->h = 12;
    im->px = malloc(12 * 12 * 3);
    uint64_t r = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
    for (int y = 0; y < 12; y++)
        for (int x = 0; x < 12; x++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            int on = (i % 2 ? y : x) / 2 % 2;
            int v = on ? 200 : 50;
            v += (int)(r % 41) - 20;
            for (int c = 0; c < 3; c++) im->px[(y * 12 + x) * 3 + c] = (uint8_t)v;
        }
    return 0;
}

static void loader_covers_each_item_once(void **state) {
    (void)state;
    int idx[40], lab[40];
    for (int i = 0; i < 40; i++) idx[i] = i, lab[i] = i; /* label = item */
    nn_meta mt;
    nn_meta_default(&mt);
    mt.size = 12;
    nn_aug a = nn_aug_fastai();
    nn_loader *l;
    assert_int_equal(nn_loader_new(stripes, NULL, idx, lab, 40, 5, 1, &a, &mt, 3, 5, &l), URSA_OK);
    assert_int_equal(nn_loader_batches(l), 8);
    for (int ep = 0; ep < 2; ep++) {
        int seen[40] = {0}, total = 0, n;
        const float *x;
        const int *y;
        while ((n = nn_loader_next(l, &x, &y)) > 0) {
            for (int j = 0; j < n; j++) seen[y[j]]++;
            for (int j = 0; j < n * 3 * 144; j++) assert_true(isfinite(x[j]));
            total += n;
        }
        assert_int_equal(total, 39); /* item 13 is skipped */
        for (int i = 0; i < 40; i++) assert_int_equal(seen[i], i == 13 ? 0 : 1);
    }
    /* once per epoch; the worker may already be into a third */
    assert_true(nn_loader_failed(l) >= 2 && nn_loader_failed(l) <= 3);
    nn_loader_free(l);
    /* training drops a last partial batch (fast.ai's drop_last); validation
     * keeps it */
    for (int train = 0; train < 2; train++) {
        assert_int_equal(nn_loader_new(stripes, NULL, idx, lab, 40, 6, train, &a, &mt, 3, 5, &l),
                         URSA_OK);
        assert_int_equal(nn_loader_batches(l), train ? 6 : 7);
        int total = 0, n;
        const float *x;
        const int *y;
        while ((n = nn_loader_next(l, &x, &y)) > 0) total += n;
        assert_true(train ? total >= 35 && total <= 36 : total == 39);
        nn_loader_free(l);
    }
}

/* with only flipping on, an augmented image is the validation one or its
 * mirror, and both happen */
static void flip_mirrors_the_image(void **state) {
    (void)state;
    img_rgb im;
    assert_int_equal(stripes(NULL, 2, &im), 0);
    for (int x = 0; x < 12; x++) im.px[(5 * 12 + x) * 3] = (uint8_t)(x * 20); /* asymmetric */
    nn_meta mt;
    nn_meta_default(&mt);
    mt.size = 12;
    float ref[3 * 144], got[3 * 144];
    nn_preprocess(&im, &mt, 3, ref);
    nn_aug a = nn_aug_none();
    a.flip = 1;
    uint64_t rng = 99;
    int same = 0, mirrored = 0;
    for (int k = 0; k < 20; k++) {
        nn_augment(&im, &mt, 3, &a, &rng, got);
        int s = 1, m = 1;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 12; y++)
                for (int x = 0; x < 12; x++) {
                    float g = got[(c * 12 + y) * 12 + x];
                    s &= fabsf(g - ref[(c * 12 + y) * 12 + x]) < 1e-5f;
                    m &= fabsf(g - ref[(c * 12 + y) * 12 + 11 - x]) < 1e-5f;
                }
        same += s;
        mirrored += m;
        assert_true(s || m);
    }
    assert_true(same > 0 && mirrored > 0);
    /* fast.ai's full set keeps values finite and near the normalised range */
    nn_aug f = nn_aug_fastai();
    for (int k = 0; k < 20; k++) {
        nn_augment(&im, &mt, 3, &f, &rng, got);
        for (int j = 0; j < 3 * 144; j++) assert_true(isfinite(got[j]) && fabsf(got[j]) < 3.0f);
    }
    img_free(&im);
}

/* the loop end to end: lr_find restores the weights and suggests an LR in
 * range; fit_one_cycle prints fast.ai's table and learns the stripes */
static void learner_finds_lr_and_fits(void **state) {
    (void)state;
    int n = 120, idx[120], lab[120];
    for (int i = 0; i < n; i++) idx[i] = i + 14, lab[i] = (i + 14) % 2;
    nn_model m;
    assert_int_equal(nn_small_resnet(&m, 3, 8, 2), URSA_OK);
    m.meta.size = 12;
    nn_aug a = nn_aug_none();
    a.flip = 1;
    nn_loader *tr, *va;
    assert_int_equal(nn_loader_new(stripes, NULL, idx, lab, 80, 16, 1, &a, &m.meta, 3, 1, &tr), URSA_OK);
    assert_int_equal(nn_loader_new(stripes, NULL, idx + 80, lab + 80, 40, 16, 0, NULL, &m.meta, 3, 1, &va),
                     URSA_OK);
    nn_learner L;
    assert_int_equal(nn_learner_init(&L, &m, tr, va, 16), URSA_OK);
    float w0 = m.param[0].w[3], lrs[100], losses[100], sug;
    int np;
    assert_int_equal(nn_lr_find(&L, lrs, losses, &np, &sug), URSA_OK);
    assert_true(np > 10 && np <= 100);
    assert_true(sug >= 1e-7f && sug <= 10.0f);
    assert_true(m.param[0].w[3] == w0); /* restored */
    for (int i = 1; i < np; i++) assert_true(lrs[i] > lrs[i - 1]);
    char *buf = NULL;
    size_t len = 0;
    L.table = open_memstream(&buf, &len);
    assert_int_equal(nn_fit_one_cycle(&L, 3, 1e-2f, 1e-2f), URSA_OK);
    fclose(L.table);
    assert_non_null(strstr(buf, "epoch  train_loss  valid_loss  error_rate  time"));
    assert_non_null(strstr(buf, "\n2      "));
    float vl, err;
    assert_int_equal(nn_validate(&L, &vl, &err), URSA_OK);
    if (err > 0.1f) fail_msg("error rate %g after 3 epochs on stripes:\n%s", err, buf);
    free(buf);
    /* with flip TTA, validation's loss is that of each image's and its
     * mirror's mean probabilities, worked out here by hand */
    const float *x;
    const int *y;
    int nb;
    size_t per = 3 * 12 * 12;
    float xm[16 * 3 * 12 * 12], p[16 * 2], q[16 * 2];
    double want = 0;
    long seen = 0;
    while ((nb = nn_loader_next(va, &x, &y)) > 0) {
        memcpy(p, nn_forward(L.ev, x, nb), sizeof(float) * 2 * nb);
        for (int i = 0; i < nb; i++) nn_tta_view(x + per * i, 3, 12, 12, NN_TTA_FLIP, 1, xm + per * i);
        memcpy(q, nn_forward(L.ev, xm, nb), sizeof(float) * 2 * nb);
        nn_softmax(p, nb, 2);
        nn_softmax(q, nb, 2);
        for (int i = 0; i < nb; i++) want -= log((p[2 * i + y[i]] + q[2 * i + y[i]]) / 2);
        seen += nb;
    }
    want /= seen;
    float tl, terr;
    L.tta = NN_TTA_FLIP;
    assert_int_equal(nn_validate(&L, &tl, &terr), URSA_OK);
    if (fabs(want - vl) < 1e-4) fail_msg("the mirror changes nothing (%g): no test", want);
    if (fabs(tl - want) > 1e-4) fail_msg("flip TTA's loss %g, by hand %g (plain %g)", tl, want, vl);
    nn_learner_free(&L);
    nn_loader_free(tr);
    nn_loader_free(va);
    nn_model_free(&m);
}

/* The audit's head on a frozen body's features: a tensor loader hands the
 * rows out as they are (in order when not training), and fast.ai's head
 * without its pool learns two clusters of 16-dim features. */
static float clusters[120][16];

static int cluster_row(void *ctx, int i, float *out) {
    (void)ctx;
    memcpy(out, clusters[i], sizeof clusters[i]);
    return 0;
}

static void head_fits_cached_features(void **state) {
    (void)state;
    int n = 120, idx[120], lab[120];
    for (int i = 0; i < n; i++) {
        idx[i] = i, lab[i] = i % 2;
        for (int k = 0; k < 16; k++)
            clusters[i][k] = frand() + (k < 4 ? (lab[i] ? 2.0f : -2.0f) : 0);
    }
    nn_loader *tr, *va;
    assert_int_equal(nn_loader_new_tensors(cluster_row, NULL, idx, lab, 80, 16, 1, 16, 1, &tr), URSA_OK);
    assert_int_equal(nn_loader_new_tensors(cluster_row, NULL, idx + 80, lab + 80, 40, 16, 0, 16, 1, &va),
                     URSA_OK);
    const float *x;
    const int *y;
    assert_int_equal(nn_loader_next(va, &x, &y), 16);
    assert_memory_equal(x, clusters[80], sizeof(float) * 16 * 16);
    assert_int_equal(y[3], lab[83]);
    while (nn_loader_next(va, &x, &y)) {} /* the rest of the epoch */
    nn_model m;
    nn_model_init(&m, 16);
    nn_add_head_pooled(&m, 2, 32, 0.25f, 0.5f);
    assert_false(m.oom);
    assert_int_equal(m.ngroups, 1);
    m.meta.size = 1;
    nn_learner L;
    assert_int_equal(nn_learner_init(&L, &m, tr, va, 16), URSA_OK);
    assert_int_equal(nn_fit_one_cycle(&L, 6, 1e-2f, 1e-2f), URSA_OK);
    float vl, err;
    assert_int_equal(nn_validate(&L, &vl, &err), URSA_OK);
    if (err > 0.05f) fail_msg("error rate %g on two clusters", err);
    nn_learner_free(&L);
    nn_loader_free(tr);
    nn_loader_free(va);
    nn_model_free(&m);
}

/* The trainer's resume: a checkpoint after epoch 0 of a 3-epoch cycle,
 * loaded into a fresh model and continued with nn_fit_one_cycle_from(..., 1)
 * ends where the uninterrupted cycle ends (one batch an epoch, so only the
 * order within it differs); BN calibration does not run again on loaded
 * trained weights. */
typedef struct {
    const char *path;
    nn_model *m;
} ckpt_ctx;

static void save_after_epoch0(void *ctx, const nn_epoch_row *row) {
    ckpt_ctx *c = ctx;
    char err[256];
    if (row->epoch == 0) assert_int_equal(nn_checkpoint_save(c->m, NULL, 0, c->path, err, sizeof err), URSA_OK);
}

static void fit_resumes_from_checkpoint(void **state) {
    (void)state;
    char *dir = test_mkdtemp(), path[4200], err[256];
    snprintf(path, sizeof path, "%s/ckpt", dir);
    int idx[16], lab[16];
    for (int i = 0; i < 16; i++) idx[i] = i, lab[i] = i % 2;
    nn_model a, b;
    assert_int_equal(nn_small_resnet(&a, 3, 4, 2), URSA_OK);
    a.meta.size = 12;
    assert_int_equal(nn_model_copy(&a, &b), URSA_OK);
    nn_loader *tr, *va;
    assert_int_equal(nn_loader_new(stripes, NULL, idx, lab, 16, 16, 1, NULL, &a.meta, 3, 1, &tr), URSA_OK);
    assert_int_equal(nn_loader_new(stripes, NULL, idx, lab, 16, 16, 0, NULL, &a.meta, 3, 1, &va), URSA_OK);
    nn_learner L;
    assert_int_equal(nn_learner_init(&L, &a, tr, va, 16), URSA_OK);
    ckpt_ctx cc = {path, &a};
    L.ctx = &cc;
    L.on_epoch = save_after_epoch0;
    assert_int_equal(nn_fit_one_cycle(&L, 3, 1e-2f, 1e-2f), URSA_OK);
    nn_learner_free(&L);
    for (int i = 0; i < b.nnode; i++)
        if (b.node[i].op == NN_BN) b.node[i].calib = 1;
    assert_int_equal(nn_checkpoint_load(&b, NULL, 0, path, err, sizeof err), URSA_OK);
    for (int i = 0; i < b.nnode; i++) assert_int_equal(b.node[i].calib, 0);
    assert_int_equal(nn_learner_init(&L, &b, tr, va, 16), URSA_OK);
    char *buf = NULL;
    size_t len = 0;
    L.table = open_memstream(&buf, &len);
    L.epochs_done = 1;
    assert_int_equal(nn_fit_one_cycle_from(&L, 3, 1, 1e-2f, 1e-2f), URSA_OK);
    fclose(L.table);
    assert_null(strstr(buf, "\n0      ")); /* epochs 1 and 2 only */
    assert_non_null(strstr(buf, "\n1      "));
    assert_non_null(strstr(buf, "\n2      "));
    free(buf);
    assert_int_equal(nn_fit_one_cycle_from(&L, 3, 4, 1e-2f, 1e-2f), URSA_ERR_INVALID);
    double worst = 0;
    for (int i = 0; i < a.nparam; i++)
        for (size_t k = 0; k < a.param[i].n; k++) {
            double d = fabs(a.param[i].w[k] - b.param[i].w[k]) / (fabs(a.param[i].w[k]) + 1e-3);
            if (d > worst) worst = d;
        }
    if (worst > 1e-3) fail_msg("resumed weights differ by %g (relative)", worst);
    nn_learner_free(&L);
    nn_loader_free(tr);
    nn_loader_free(va);
    nn_model_free(&a);
    nn_model_free(&b);
    test_rmdir(dir);
}

/* two steps, a checkpoint, two more steps == the checkpoint loaded into a
 * fresh model and the same two steps, bit for bit; a checkpoint of another
 * architecture or a damaged one is refused and changes nothing */
static void checkpoint_resumes_exactly(void **state) {
    (void)state;
    char *dir = test_mkdtemp(), path[4200], err[256];
    snprintf(path, sizeof path, "%s/ckpt", dir);
    nn_model a, b;
    small_net(&a, 0.0f);
    float x[4 * 3 * 8 * 8];
    int t[4] = {1, 0, 2, 1};
    fill(x, sizeof x / 4);
    float lrs[3] = {1e-2f, 1e-2f, 1e-2f};
    nn_adamw o;
    nn_adamw_init(&o);
    nn_exec *e;
    assert_int_equal(nn_exec_new(&a, 4, 8, 8, 1, &e), URSA_OK);
    for (int s = 0; s < 4; s++) {
        if (s == 2) {
            int pos[2] = {7, s};
            assert_int_equal(nn_checkpoint_save(&a, pos, sizeof pos, path, err, sizeof err), URSA_OK);
            assert_int_equal(nn_model_copy(&a, &b), URSA_OK);
            nn_init_weights(&b, 1234); /* forget everything: the checkpoint must bring it back */
        }
        nn_zero_grad(&a);
        nn_forward(e, x, 4);
        nn_backward_ce(e, t);
        nn_adamw_step(&o, &a, lrs, 0.9f);
    }
    nn_exec_free(e);
    int pos[2] = {0, 0};
    assert_int_equal(nn_checkpoint_load(&b, pos, sizeof pos, path, err, sizeof err), URSA_OK);
    assert_true(pos[0] == 7 && pos[1] == 2);
    assert_int_equal(nn_exec_new(&b, 4, 8, 8, 1, &e), URSA_OK);
    for (int s = 2; s < 4; s++) {
        nn_zero_grad(&b);
        nn_forward(e, x, 4);
        nn_backward_ce(e, t);
        nn_adamw_step(&o, &b, lrs, 0.9f);
    }
    nn_exec_free(e);
    for (int i = 0; i < a.nparam; i++)
        assert_memory_equal(a.param[i].w, b.param[i].w, a.param[i].n * sizeof(float));
    /* another architecture */
    nn_model c;
    nn_small_resnet(&c, 2, 4, 3);
    float c0 = c.param[0].w[0];
    assert_int_equal(nn_checkpoint_load(&c, pos, sizeof pos, path, err, sizeof err), URSA_ERR_CORRUPT);
    assert_true(c.param[0].w[0] == c0);
    nn_model_free(&c);
    /* a flipped byte */
    FILE *f = fopen(path, "r+b");
    fseek(f, 100, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, 100, SEEK_SET);
    fputc(ch ^ 0x10, f);
    fclose(f);
    assert_int_equal(nn_checkpoint_load(&b, pos, sizeof pos, path, err, sizeof err), URSA_ERR_CORRUPT);
    assert_non_null(strstr(err, "damaged"));
    nn_model_free(&a);
    nn_model_free(&b);
    test_rmdir(dir);
}

/* dropout: about p of the units zeroed in training, the rest scaled by
 * 1/(1-p), the gradient through the same mask; the identity in evaluation */
static void dropout_masks_and_scales(void **state) {
    (void)state;
    nn_model m;
    nn_model_init(&m, 500);
    nn_dropout(&m, 0, 0.25f);
    float x[4 * 500], dy[4 * 500];
    for (int i = 0; i < 2000; i++) x[i] = 1.0f + (float)(i % 7), dy[i] = 1.0f;
    nn_exec *e;
    assert_int_equal(nn_exec_new(&m, 4, 1, 1, 1, &e), URSA_OK);
    nn_exec_want_input_grad(e, 1);
    const float *y = nn_forward(e, x, 4);
    int zero = 0;
    for (int i = 0; i < 2000; i++) {
        if (y[i] == 0) zero++;
        else assert_float_equal(y[i], x[i] / 0.75f, 1e-5);
    }
    assert_true(zero > 400 && zero < 600); /* 500 expected */
    float ycopy[2000];
    memcpy(ycopy, y, sizeof ycopy);
    nn_backward(e, dy);
    const float *dx = nn_input_grad(e);
    for (int i = 0; i < 2000; i++) assert_float_equal(dx[i], ycopy[i] == 0 ? 0 : 1 / 0.75f, 1e-5);
    nn_exec_free(e);
    assert_int_equal(nn_exec_new(&m, 4, 1, 1, 0, &e), URSA_OK);
    assert_memory_equal(nn_forward(e, x, 4), x, sizeof x);
    nn_exec_free(e);
    nn_model_free(&m);
}

/* export and import give back the same model: parameters, outputs, class
 * names and preprocessing; damaged files are refused, never crash */
static void onnx_round_trip_and_damage(void **state) {
    (void)state;
    nn_model m, r;
    small_net(&m, 0.25f);
    m.meta.size = 8;
    m.meta.nclass = 3;
    m.meta.classes = calloc(3, sizeof(char *));
    m.meta.classes[0] = strdup("a \"quoted\" one");
    m.meta.classes[1] = strdup("back\\slash");
    m.meta.classes[2] = strdup("ünïcode");
    m.meta.mean[1] = 0.5f;
    m.meta.extra = strdup("dataset=toy\n");
    uint8_t *buf;
    size_t len;
    char err[256];
    assert_int_equal(nn_onnx_save_mem(&m, &buf, &len, err, sizeof err), URSA_OK);
    assert_int_equal(nn_onnx_load_mem(buf, len, &r, err, sizeof err), URSA_OK);
    assert_int_equal(r.meta.nclass, 3);
    for (int i = 0; i < 3; i++) assert_string_equal(r.meta.classes[i], m.meta.classes[i]);
    assert_int_equal(r.meta.size, 8);
    assert_float_equal(r.meta.mean[1], 0.5f, 1e-7);
    assert_non_null(strstr(r.meta.extra, "dataset=toy"));
    assert_int_equal(r.nparam, m.nparam);
    for (int i = 0; i < m.nparam; i++) {
        assert_string_equal(r.param[i].name, m.param[i].name);
        assert_memory_equal(r.param[i].w, m.param[i].w, m.param[i].n * sizeof(float));
    }
    float x[2 * 3 * 8 * 8];
    fill(x, sizeof x / 4);
    nn_exec *a, *b;
    assert_int_equal(nn_exec_new(&m, 2, 8, 8, 0, &a), URSA_OK);
    assert_int_equal(nn_exec_new(&r, 2, 8, 8, 0, &b), URSA_OK);
    assert_true(max_rel(nn_forward(b, x, 2), nn_forward(a, x, 2), 6) < 1e-6);
    nn_exec_free(a);
    nn_exec_free(b);
    nn_model_free(&r);
    /* truncations and flipped bytes: an error or a model, never a crash */
    int refused = 0;
    uint64_t s = 1;
    for (int k = 0; k < 300; k++) {
        uint8_t *d = malloc(len);
        memcpy(d, buf, len);
        size_t l = len;
        if (k % 3 == 0) l = (size_t)(frand() * 0.5f + 0.5f) * len / 2 + k;
        else
            for (int j = 0; j < 1 + k % 7; j++) {
                s = s * 6364136223846793005ull + 1;
                d[(s >> 33) % len] ^= (uint8_t)(1u << (s >> 60) % 8);
            }
        if (l > len) l = len;
        if (nn_onnx_load_mem(d, l, &r, err, sizeof err) == URSA_OK) {
            nn_exec *e = NULL;
            if (nn_exec_new(&r, 1, 8, 8, 0, &e) == URSA_OK) nn_forward(e, x, 1);
            nn_exec_free(e);
            nn_model_free(&r);
        } else {
            assert_true(err[0] != 0);
            refused++;
        }
        free(d);
    }
    assert_true(refused > 50);
    free(buf);
    nn_model_free(&m);
    /* a 2-channel input is not an image ursa can feed */
    nn_model_init(&m, 2);
    nn_linear(&m, "fc", nn_flatten(&m, nn_gap(&m, 0)), 3, 1);
    assert_int_equal(nn_onnx_save_mem(&m, &buf, &len, err, sizeof err), URSA_OK);
    assert_int_equal(nn_onnx_load_mem(buf, len, &r, err, sizeof err), URSA_ERR_INVALID);
    assert_non_null(strstr(err, "2 channels"));
    free(buf);
    nn_model_free(&m);
}

/* windows larger than their input and labels beyond the classes are
 * refused, not read past */
static void bad_shapes_and_labels(void **state) {
    (void)state;
    nn_model m;
    nn_exec *e = NULL;
    nn_model_init(&m, 3);
    nn_avgpool(&m, 0, 5, 5);
    assert_int_equal(nn_exec_new(&m, 1, 4, 4, 0, &e), URSA_ERR_INVALID);
    nn_model_free(&m);
    nn_model_init(&m, 3);
    nn_maxpool(&m, 0, 7, 2, 1);
    assert_int_equal(nn_exec_new(&m, 1, 4, 4, 0, &e), URSA_ERR_INVALID);
    nn_model_free(&m);
    nn_model_init(&m, 3);
    nn_conv(&m, "c", 0, 2, 7, 1, 1, 0);
    assert_int_equal(nn_exec_new(&m, 1, 4, 4, 0, &e), URSA_ERR_INVALID);
    nn_model_free(&m);
    const float logits[6] = {1, 2, 3, 1, 2, 3};
    int bad[2] = {0, 3}, neg[2] = {-1, 0};
    assert_true(isnan(nn_softmax_ce(logits, bad, 2, 3, NULL)));
    assert_true(isnan(nn_softmax_ce(logits, neg, 2, 3, NULL)));
}

/* A model whose metadata says std 0 (or NaN) would predict NaN for every
 * image: it is refused at load, naming the channel. */
static void onnx_zero_std_refused(void **state) {
    (void)state;
    const float bad[3] = {0.0f, NAN, 1e-9f};
    for (int k = 0; k < 3; k++) {
        nn_model m, r;
        small_net(&m, 0.25f);
        m.meta.size = 8;
        m.meta.std[2] = bad[k];
        uint8_t *buf;
        size_t len;
        char err[256];
        assert_int_equal(nn_onnx_save_mem(&m, &buf, &len, err, sizeof err), URSA_OK);
        assert_int_not_equal(nn_onnx_load_mem(buf, len, &r, err, sizeof err), URSA_OK);
        assert_non_null(strstr(err, "std must be a number other than 0"));
        assert_non_null(strstr(err, "channel 2"));
        free(buf);
        nn_model_free(&m);
    }
}

/* TTA's views: the image first, its mirror, shifts with reflected edges;
 * the mean of k rows an image */
static void tta_views_and_mean(void **state) {
    (void)state;
    unsigned m = 99;
    assert_int_equal(nn_tta_parse("flip+shift", &m), 0);
    assert_int_equal(m, NN_TTA_FLIP | NN_TTA_SHIFT);
    assert_int_equal(nn_tta_parse("shift", &m), 0);
    assert_int_equal(m, NN_TTA_SHIFT);
    assert_int_equal(nn_tta_parse("mirror", &m), -1);
    assert_int_equal(nn_tta_views(NN_TTA_OFF), 1);
    assert_int_equal(nn_tta_views(NN_TTA_FLIP), 2);
    assert_int_equal(nn_tta_views(NN_TTA_SHIFT), 5);
    assert_int_equal(nn_tta_views(NN_TTA_FLIP | NN_TTA_SHIFT), 10);
    /* one channel, 2 x 3: 0 1 2 / 3 4 5 */
    const float x[6] = {0, 1, 2, 3, 4, 5};
    float v[10 * 6];
    nn_tta_expand(x, 1, 2, 3, NN_TTA_FLIP, v);
    const float flip[12] = {0, 1, 2, 3, 4, 5, 2, 1, 0, 5, 4, 3};
    for (int i = 0; i < 12; i++) assert_float_equal(v[i], flip[i], 0);
    nn_tta_expand(x, 1, 2, 3, NN_TTA_SHIFT, v);
    const float shift[30] = {0, 1, 2, 3, 4, 5,  /* itself */
                             1, 0, 1, 4, 3, 4,  /* right by 1: column -1 reflects to 1 */
                             1, 2, 1, 4, 5, 4,  /* left by 1: column 3 reflects to 1 */
                             3, 4, 5, 0, 1, 2,  /* down by 1: row -1 reflects to 1 */
                             3, 4, 5, 0, 1, 2}; /* up by 1: row 2 reflects to 0 */
    for (int i = 0; i < 30; i++) assert_float_equal(v[i], shift[i], 0);
    nn_tta_expand(x, 1, 2, 3, NN_TTA_FLIP | NN_TTA_SHIFT, v);
    for (int i = 0; i < 30; i++) assert_float_equal(v[i], shift[i], 0);
    for (int k = 0; k < 10; k++) { /* view by view, as the expansion has them */
        float one[6];
        nn_tta_view(x, 1, 2, 3, NN_TTA_FLIP | NN_TTA_SHIFT, k, one);
        assert_memory_equal(one, v + 6 * k, sizeof one);
    }
    for (int i = 0; i < 6; i++) assert_float_equal(v[30 + i], flip[6 + i], 0); /* then mirrored */
    /* 2 images, 2 views, 3 classes */
    float p[12] = {0.1f, 0.2f, 0.7f, 0.3f, 0.4f, 0.3f, 1, 0, 0, 0, 0, 1};
    nn_tta_mean(p, 2, 2, 3);
    const float mean[6] = {0.2f, 0.3f, 0.5f, 0.5f, 0, 0.5f};
    for (int i = 0; i < 6; i++) assert_float_equal(p[i], mean[i], 1e-6);
}

int main(int argc, char **argv) {
    (void)argc;
    nn_blas_init(argv);
    const struct CMUnitTest once[] = {cmocka_unit_test(isa_choice)};
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(conv_matches_naive),
        cmocka_unit_test(packed_gemm_matches_naive),
        cmocka_unit_test(gradients_match_finite_differences),
        cmocka_unit_test(label_smoothing_loss_and_gradient),
        cmocka_unit_test(fused_inference_keeps_outputs),
        cmocka_unit_test(relu_fusion_trains_the_same),
        cmocka_unit_test(freeze_keeps_body_but_trains_bn),
        cmocka_unit_test(schedules_follow_fastai),
        cmocka_unit_test(loader_covers_each_item_once),
        cmocka_unit_test(flip_mirrors_the_image),
        cmocka_unit_test(learner_finds_lr_and_fits),
        cmocka_unit_test(head_fits_cached_features),
        cmocka_unit_test(onnx_round_trip_and_damage),
        cmocka_unit_test(dropout_masks_and_scales),
        cmocka_unit_test(checkpoint_resumes_exactly),
        cmocka_unit_test(fit_resumes_from_checkpoint),
        cmocka_unit_test(bad_shapes_and_labels),
        cmocka_unit_test(tta_views_and_mean),
        cmocka_unit_test(onnx_zero_std_refused),
    };
    return cmocka_run_group_tests(once, NULL, NULL) +
           test_each_isa("nn", tests, sizeof tests / sizeof tests[0]);
}
