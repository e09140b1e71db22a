/* model_cmd.c: `ursa predict` and `ursa bench-model`: a model file on the
 * local CPU, no services needed. */
#include "model_cmd.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "blas.h"
#include "data.h"
#include "image.h"
#include "nn.h"
#include "util.h"

const cfg_def predict_defs[] = {
    {"model", CFG_STR, "", 1, 0, "the model (.onnx) to run"},
    {"top", CFG_INT, "1", 0, 100000, "classes to show per image, best first; 0 for all"},
    {"json", CFG_BOOL, "false", 1, 0, "one JSON object per line instead of tab-separated text"},
    {"batch", CFG_INT, "8", 1, 1024, "images run together"},
    {"save-input", CFG_STR, "", 1, 0,
     "also write the preprocessed input tensors (float32, N x C x S x S) to FILE, to check "
     "the model in another runtime"},
    {"tta", CFG_STR, "off", 1, 0,
     "test-time augmentation: average the probabilities of views of each image: flip (it and "
     "its mirror image), shift (it and copies moved a pixel each way, at 28 px), flip+shift "
     "(both, 10 views), off"},
    {NULL, 0, NULL, 0, 0, NULL}};

const cfg_def bench_model_defs[] = {
    {"model", CFG_STR, "", 1, 0, "the model (.onnx) to time"},
    {"arch", CFG_STR, "", 1, 0,
     "instead of --model: resnet18, resnet34 (224 px) or small-resnet (28 px gray, 10 "
     "classes), random weights"},
    {"batch", CFG_INT, "1", 1, 1024, "images per forward pass"},
    {"threads", CFG_INT, "0", 0, 256, "threads (0: one per core)"},
    {"iters", CFG_INT, "20", 1, 100000, "timed passes (after 3 warm-up passes)"},
    {"train", CFG_BOOL, "false", 1, 0,
     "time training steps instead (forward, backward, AdamW; all layers trainable)"},
    {"size", CFG_INT, "0", 0, 4096, "input side in pixels (0: the model's)"},
    {"export", CFG_STR, "", 1, 0,
     "with --arch: also write the (randomly initialised) model to this .onnx file, for "
     "serving benchmarks"},
    {NULL, 0, NULL, 0, 0, NULL}};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* a label in tab-separated output: tabs and line breaks become spaces */
/* labels come from the model file: util_cell keeps the line one line and
 * a terminal's escapes out */
static void tsv_str(FILE *f, const char *s) { util_cell(f, s, '\t'); }

#define json_str util_json_str

static int load_model(const char *path, nn_model *m, const char *cmd) {
    char err[512];
    if (!*path) {
        fprintf(stderr, "ursa %s: --model FILE.onnx is required\n", cmd);
        return 2;
    }
    if (nn_onnx_load(path, m, err, sizeof err) != URSA_OK) {
        fprintf(stderr, "ursa %s: %s\n", cmd, err);
        return 1;
    }
    return 0;
}

static void print_result(const nn_model *m, const char *file, const float *prob, int top, int json) {
    int c = nn_out_size(m);
    int *s = malloc(sizeof(int) * (size_t)c);
    if (!s) abort();
    nn_rank(prob, c, s);
    int k = top <= 0 || top > c ? c : top;
    char buf[32];
    if (json) {
        printf("{\"file\": ");
        json_str(stdout, file);
        printf(", \"predictions\": [");
        for (int j = 0; j < k; j++) {
            printf("%s[", j ? ", " : "");
            json_str(stdout, nn_class_name(&m->meta, s[j], buf, sizeof buf));
            if (isfinite(prob[s[j]])) printf(", %.6g]", prob[s[j]]);
            else printf(", null]"); /* JSON has no NaN */
        }
        printf("]}\n");
    } else {
        tsv_str(stdout, file);
        for (int j = 0; j < k; j++) {
            putchar('\t');
            tsv_str(stdout, nn_class_name(&m->meta, s[j], buf, sizeof buf));
            printf("\t%.6f", prob[s[j]]);
        }
        printf("\n");
    }
    free(s);
}

int predict_cmd(const cfg *c, int argc, char **argv) {
    if (argc < 1) {
        fprintf(stderr, "ursa predict: no images given (see ursa predict --help)\n");
        return 2;
    }
    nn_model m, f;
    int rc = load_model(cfg_str(c, "model"), &m, "predict");
    if (rc) return rc;
    if (nn_fuse_for_inference(&m, &f) != URSA_OK) {
        fprintf(stderr, "ursa predict: out of memory\n");
        nn_model_free(&m);
        return 1;
    }
    nn_model_free(&m);
    unsigned tta;
    if (nn_tta_parse(cfg_str(c, "tta"), &tta)) {
        fprintf(stderr, "ursa predict: --tta %s: off, flip, shift or flip+shift\n",
                cfg_str(c, "tta"));
        nn_model_free(&f);
        return 2;
    }
    int bs = (int)cfg_int(c, "batch"), size = f.meta.size, in_c = f.in_c, k = nn_tta_views(tta);
    if (bs > argc) bs = argc;
    int top = (int)cfg_int(c, "top"), json = cfg_bool(c, "json");
    nn_exec *e;
    int oh = 0, ow = 0;
    char why[512];
    if (nn_exec_new_err(&f, bs * k, size, size, 0, &e, why, sizeof why) != URSA_OK) {
        fprintf(stderr, "ursa predict: the model does not run on %dx%d inputs: %s\n", size, size,
                why);
        nn_model_free(&f);
        return 1;
    }
    nn_value(e, f.out, NULL, &oh, &ow);
    if (oh * ow != 1) {
        fprintf(stderr, "ursa predict: the model's output is a %dx%d map, not class scores\n", oh, ow);
        nn_exec_free(e);
        nn_model_free(&f);
        return 1;
    }
    FILE *save = NULL;
    if (*cfg_str(c, "save-input") && !(save = fopen(cfg_str(c, "save-input"), "wb"))) {
        fprintf(stderr, "ursa predict: cannot write %s\n", cfg_str(c, "save-input"));
        rc = 1;
    }
    size_t per = (size_t)in_c * size * size;
    float *x = malloc(sizeof(float) * per * (size_t)bs * (size_t)k);
    float *one = k > 1 ? malloc(sizeof(float) * per) : NULL; /* an image, before its views */
    const char **names = malloc(sizeof(char *) * (size_t)bs);
    if (!x || !names || (k > 1 && !one)) abort();
    int failed = 0;
    img_opts io = img_opts_from_cfg(c); /* img.max-pixels, img.max-scans */
    img_decode_opts dop = img_decode_opts_default();
    dop.max_pixels = io.max_pixels;
    dop.max_scans = io.max_scans;
    for (int i = 0; i < argc && !rc;) {
        int n = 0;
        for (; i < argc && n < bs; i++) {
            char *data = NULL;
            size_t len = 0;
            img_rgb im;
            img_reject rej;
            if (util_read_file(argv[i], (size_t)1 << 30, &data, &len) != URSA_OK) {
                fprintf(stderr, "ursa predict: %s: cannot read\n", argv[i]);
                failed++;
                continue;
            }
            ursa_err err = nn_decode_image((const uint8_t *)data, len, &f.meta, &dop, &im, &rej);
            free(data);
            if (err != URSA_OK) {
                fprintf(stderr, "ursa predict: %s: %s (%s)\n", argv[i],
                        err == URSA_ERR_INVALID ? rej.reason : ursa_err2str(err),
                        err == URSA_ERR_INVALID ? rej.detail : "");
                failed++;
                continue;
            }
            if (k > 1) {
                nn_preprocess(&im, &f.meta, in_c, one);
                nn_tta_expand(one, in_c, size, size, tta, x + per * k * n);
            } else {
                nn_preprocess(&im, &f.meta, in_c, x + per * n);
            }
            img_free(&im);
            names[n++] = argv[i];
        }
        if (!n) continue;
        if (save && fwrite(x, sizeof(float), per * n * k, save) != per * n * k) rc = 1;
        float *out = (float *)nn_forward(e, x, n * k);
        nn_softmax(out, n * k, nn_out_size(&f));
        nn_tta_mean(out, n, k, nn_out_size(&f));
        for (int j = 0; j < n; j++)
            print_result(&f, names[j], out + (size_t)j * nn_out_size(&f), top, json);
        fflush(stdout);
    }
    if (save && fclose(save)) rc = 1;
    free(x);
    free(one);
    free(names);
    nn_exec_free(e);
    nn_model_free(&f);
    return rc ? rc : failed ? 1 : 0;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int bench_model_cmd(const cfg *c, int argc, char **argv) {
    (void)argc;
    (void)argv;
    nn_model m;
    const char *arch = cfg_str(c, "arch"), *path = cfg_str(c, "model");
    if (*arch) {
        int depth = !strcmp(arch, "resnet18") ? 18 : !strcmp(arch, "resnet34") ? 34 : 0;
        int small = !strcmp(arch, "small-resnet");
        if ((!depth && !small) || *path) {
            fprintf(stderr, "ursa bench-model: give --model FILE or --arch "
                            "resnet18|resnet34|small-resnet\n");
            return 2;
        }
        if (small) {
            nn_small_resnet(&m, 1, 32, 10); /* Fashion-MNIST's */
            m.meta.size = 28;
        } else {
            nn_resnet(&m, depth, 1000);
        }
    } else {
        int rc = load_model(path, &m, "bench-model");
        if (rc) return rc;
    }
    const char *exp = cfg_str(c, "export");
    if (*exp) {
        char err[512];
        if (!*arch) {
            fprintf(stderr, "ursa bench-model: --export goes with --arch\n");
            nn_model_free(&m);
            return 2;
        }
        if (nn_onnx_save(&m, exp, err, sizeof err) != URSA_OK) {
            fprintf(stderr, "ursa bench-model: %s\n", err);
            nn_model_free(&m);
            return 1;
        }
        fprintf(stderr, "ursa bench-model: wrote %s\n", exp);
    }
    int bs = (int)cfg_int(c, "batch"), iters = (int)cfg_int(c, "iters");
    int train = cfg_bool(c, "train"), th = (int)cfg_int(c, "threads");
    int size = cfg_int(c, "size") ? (int)cfg_int(c, "size") : m.meta.size;
    if (th > 0) omp_set_num_threads(th);
    nn_model run;
    if (train) {
        run = m;
        nn_unfreeze(&run);
    } else {
        if (nn_fuse_for_inference(&m, &run) != URSA_OK) return 1;
        nn_model_free(&m);
    }
    nn_exec *e;
    char err[512];
    if (nn_exec_new_err(&run, bs, size, size, train, &e, err, sizeof err) != URSA_OK) {
        fprintf(stderr, "ursa bench-model: the model does not run on %dx%d inputs: %s\n", size,
                size, err);
        nn_model_free(&run);
        return 1;
    }
    size_t per = (size_t)run.in_c * size * size;
    float *x = malloc(sizeof(float) * per * (size_t)bs);
    int *t = calloc((size_t)bs, sizeof(int));
    double *ms = malloc(sizeof(double) * (size_t)iters);
    if (!x || !t || !ms) abort();
    uint64_t s = 42;
    for (size_t i = 0; i < per * (size_t)bs; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((s >> 40) & 0xFFFF) / 65536.0f * 2 - 1;
    }
    for (int i = 0; i < bs; i++) t[i] = i % nn_out_size(&run);
    nn_adamw opt;
    nn_adamw_init(&opt);
    float lrs[16];
    for (int i = 0; i < 16; i++) lrs[i] = 1e-5f;
    fprintf(stderr,
            "ursa bench-model: %s %s batch=%d size=%d threads=%d isa=%s core=%s params=%zu\n",
            *arch ? arch : path, train ? "train" : "inference", bs, size, omp_get_max_threads(),
            nn_exec_isa(e), nn_blas_core(), nn_param_count(&run));
    for (int i = -3; i < iters; i++) {
        double t0 = now_s();
        nn_forward(e, x, bs);
        if (train) {
            nn_zero_grad(&run);
            nn_backward_ce(e, t);
            nn_adamw_step(&opt, &run, lrs, 0.9f);
        }
        double dt = (now_s() - t0) * 1e3;
        if (i >= 0) ms[i] = dt;
    }
    qsort(ms, (size_t)iters, sizeof(double), cmp_d);
    double med = iters % 2 ? ms[iters / 2] : (ms[iters / 2 - 1] + ms[iters / 2]) / 2;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("min_ms=%.2f max_ms=%.2f peak_rss_mb=%.0f\n", ms[0], ms[iters - 1], ru.ru_maxrss / 1024.0);
    printf("latency_ms=%.2f throughput_ips=%.2f isa=%s\n", med, bs * 1000.0 / med, nn_exec_isa(e));
    free(x);
    free(t);
    free(ms);
    nn_exec_free(e);
    nn_model_free(&run);
    return 0;
}
