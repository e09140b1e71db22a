/* demo_cmd.c: `ursa demo`, fast.ai's lesson 2 played end to end on this
 * machine, with the web's mess in the data.
 *
 * Fashion-MNIST (Debian's dataset-fashion-mnist) is written out as JPEG
 * files and served by a local HTTP server (fault-server, beside this
 * binary), because real photos are not reachable offline. The URL list
 * mixes in what a crawl of the web meets (demo_data.h): wrong labels, most
 * between classes that look alike, images of no class at all, 404s, a slow
 * host, HTML sent as image/jpeg, truncated files, exact and near-duplicates.
 * Then every step of the lesson runs on the embedded stack as a user would
 * run it, each as `ursa COMMAND` (this binary, in a child process, its
 * output shown): ingest, lr-find, train, interp, audit, clean, retrain,
 * and the model served over HTTP. The steps are a table over one demo
 * state. What was planted is known, so the summary says how much of it the
 * audit found and what the cleaning did; accuracy is measured on the 10,000
 * official test images.
 *
 * The cleaning is automatic (`ursa clean --accept-suggestions`): no person
 * looks at the suspects, and the demo says so. --seeds N then trains the
 * same recipe N times on each of four versions of the data (the noisy
 * labels, the automatically cleaned ones, the labels a reviewer would
 * leave, played by the demo from what it planted, and the true labels)
 * and reports mean and standard deviation, and the share of the noisy-to-
 * true gap that cleaning recovered.
 *
 * Everything it writes goes to --out (demo-out). A second run reuses the
 * images (and says so) and ingests into new datasets, since the first
 * one's edits stay (they are kept by design). */
#include "demo_cmd.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conn.h"
#include "dataset.h"
#include "demo_data.h"
#include "spawn.h"
#include "statedir.h"
#include "util.h"

const cfg_def demo_defs[] = {
    {"out", CFG_STR, "demo-out", 1, 0, "where the demo writes its files"},
    {"n", CFG_INT, "0", 0, 60000,
     "training images taken from Fashion-MNIST's 60,000 (0: 28,000; all with --full; 1,500 "
     "with --quick)"},
    {"epochs", CFG_INT, "0", 0, 100,
     "epochs of each training (0: 4; 12 with --full; 2 with --quick)"},
    {"full", CFG_BOOL, "false", 1, 0, "all 60,000 training images and a longer recipe"},
    {"quick", CFG_BOOL, "false", 1, 0,
     "1,500 images and short trainings: checks that every step runs (CI), not the accuracy"},
    {"noise", CFG_DOUBLE, "0.12", 0, 0.5,
     "share of the images put under a wrong label (two thirds of them a class that looks "
     "alike)"},
    {"no-class", CFG_DOUBLE, "0.01", 0, 0.2,
     "images of no class at all (noise, stripes, blobs, scribbles), as a share of --n"},
    {"seeds", CFG_INT, "0", 0, 20,
     "also train N times on each of the noisy, the cleaned, the reviewed and the true labels "
     "and report mean and standard deviation (0: only the lesson)"},
    {"seed", CFG_INT, "1", 0, 1e9, "seeds what is planted"},
    {"data", CFG_STR, "/usr/share/datasets/fashion-mnist", 1, 0,
     "Fashion-MNIST's idx files (Debian package dataset-fashion-mnist)"},
    {NULL, 0, NULL, 0, 0, NULL}};

/* the recipe, as flags of ursa train: the small resnet from scratch at
 * 28 px, one-cycle at max_lr 1e-2 (lr_find's plot), batch 128, weight
 * decay 0.05, label smoothing 0.1 (which also blunts wrong labels), no
 * augmentation (shifts and flips cost more learning speed than they gave
 * back in a few epochs, docs/training.md) */
static const char *recipe[] = {"--arch", "small", "--size", "28", "--bs", "128",
                               "--wd", "0.05", "--label-smoothing", "0.1", "--no-augment",
                               "--valid-pct", "0.1"};
enum { NRECIPE = sizeof recipe / sizeof *recipe, RECIPE_BS = 5, MAX_SEEDS = 20 };

/* relabel the label issues the audit is this sure of, delete those from
 * DELETE_SCORE up (the given label likely wrong, the right one unclear)
 * and the outliers from OUTLIER_SCORE up (ops/bench-clean.sh measures the
 * bands) */
#define MIN_SCORE "0.95"
#define DELETE_SCORE "0.8"
#define OUTLIER_SCORE "0.5"

typedef struct {
    const char *name, *what;
    char ds[80];
    double acc[MAX_SEEDS];
    int n;
} arm;

typedef struct {
    const cfg *c;
    const char *data, *out;
    int n, ntest, epochs, quick, full, seeds;
    double t0;
    char ds[64], base[64], www[4200], test[4200];
    int *truth, *ttruth;
    demo_rows v;
    demo_planted planted;
    char *status;
    char m1[128], m2[128], before[4300], after[4300], plot[4300], cm[4300], api[128];
    char suspects[4300];
    double oof, acc1, acc2;
    long lab_found, lab_true, lab_right, lab_junk, out_found, out_junk, dup_found, dup_true;
    demo_outcome noisy, cleaned, reviewed;
    long rev_fixed, rev_deleted;
    arm arms[4];
} demo;

static char self[4096], bindir[4096];
static pid_t server = -1;

static double now_s(void) { return (double)util_mono_ms() / 1000.0; }

/* ---- commands ----------------------------------------------------------------------- */

/* `ursa ARGS...` (NULL-terminated): its stdout shown when echo and kept in
 * *out when out is not NULL. 0 or its status. */
static int ursa_run(int echo, char **out, const char *const *args) {
    size_t n = 0;
    while (args[n]) n++;
    char **argv = calloc(n + 2, sizeof *argv);
    if (!argv) return -1;
    argv[0] = "ursa";
    for (size_t i = 0; i < n; i++) argv[i + 1] = (char *)args[i];
    int rc = spawn_run(self, argv, echo, out);
    free(argv);
    return rc;
}
#define URSA(...) ursa_run(1, NULL, (const char *const[]){__VA_ARGS__, NULL})
#define URSA_QUIET(out, ...) ursa_run(0, out, (const char *const[]){__VA_ARGS__, NULL})

/* A command line being built: shown as the user would type it, then run. */
typedef struct {
    const char *a[64];
    int n;
} cmdline;

static void cl_add(cmdline *l, const char *const *v, int n) {
    for (int i = 0; i < n && l->n < 63; i++) l->a[l->n++] = v[i];
    l->a[l->n] = NULL;
}
#define CL(l, ...)                                                                    \
    cl_add(l, (const char *const[]){__VA_ARGS__},                                     \
           (int)(sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)))

/* Shows "$ ursa ARGS" and runs it (its output shown, kept in *out). */
static int cl_run(const cmdline *l, char **out) {
    printf("$ ursa");
    for (int i = 0; i < l->n; i++) printf(" %s", l->a[i]);
    printf("\n");
    return ursa_run(1, out, l->a);
}

static void stop_server(void) {
    if (server > 0) {
        kill(server, SIGTERM);
        waitpid(server, NULL, 0);
        server = -1;
    }
}

static void on_signal(int sig) {
    if (server > 0) kill(server, SIGTERM);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* The word after prefix on a line of text starting with it, into out. */
static int line_field(const char *text, const char *prefix, char *out, size_t n) {
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, prefix, strlen(prefix)) != 0) continue;
        p += strlen(prefix);
        size_t k = 0;
        while (p[k] && p[k] != '\n' && p[k] != ':' && p[k] != ' ' && k + 1 < n) k++;
        memcpy(out, p, k);
        out[k] = '\0';
        return 0;
    }
    return -1;
}

/* ---- training and testing ----------------------------------------------------------- */

/* ursa train on ds with the recipe and seed, shown when show; the model id
 * into model. 0 or -1. */
static int train(demo *d, const char *ds, int seed, int show, char model[128]) {
    char st[32], sd[24];
    snprintf(st, sizeof st, "%d:1e-2", d->epochs);
    snprintf(sd, sizeof sd, "%d", seed);
    cmdline l = {.n = 0};
    CL(&l, "train", "--dataset", ds);
    cl_add(&l, recipe, NRECIPE);
    CL(&l, "--stage", st);
    if (seed != 42) CL(&l, "--seed", sd); /* 42: ursa train's default */
    char *txt = NULL;
    int rc = show ? cl_run(&l, &txt) : ursa_run(0, &txt, l.a);
    model[0] = '\0';
    if (rc == 0) line_field(txt, "model ", model, 128);
    if (rc && !show) fprintf(stderr, "ursa demo: ursa train on %s failed:\n%s", ds, txt ? txt : "");
    free(txt);
    return rc == 0 && model[0] ? 0 : -1;
}

/* Test accuracy of a model file on the official test images, or -1. */
static double test_accuracy(demo *d, const char *model) {
    const char **args = calloc((size_t)d->ntest + 5, sizeof *args);
    char **names = calloc((size_t)d->ntest, sizeof *names);
    int k = 0, bad = !args || !names;
    if (!bad) {
        args[k++] = "predict";
        args[k++] = "--model";
        args[k++] = model;
    }
    for (int i = 0; !bad && i < d->ntest; i++) {
        char p[4400];
        snprintf(p, sizeof p, "%s/%s/%d.jpg", d->test, demo_classes[d->ttruth[i]], i);
        bad = !(names[i] = strdup(p));
        args[k++] = names[i];
    }
    char *out = NULL;
    /* the engine's start-up lines would sit between the results */
    const char *lvl = getenv("URSA_LOG_LEVEL");
    char *keep = lvl ? strdup(lvl) : NULL;
    setenv("URSA_LOG_LEVEL", "warn", 1);
    int rc = bad ? -1 : (args[k] = NULL, ursa_run(0, &out, args));
    if (keep) setenv("URSA_LOG_LEVEL", keep, 1);
    else unsetenv("URSA_LOG_LEVEL");
    free(keep);
    long right = 0, seen = 0;
    for (char *line = out, *nl; rc == 0 && line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        char *t1 = strchr(line, '\t');
        if (!t1) continue;
        *t1 = '\0';
        char *t2 = strchr(t1 + 1, '\t');
        if (t2) *t2 = '\0';
        const char *f = strrchr(line, '/');
        const char *dir = f;
        while (dir && dir > line && dir[-1] != '/') dir--;
        if (!f || !dir) continue;
        seen++;
        right += (size_t)(f - dir) == strlen(t1 + 1) && !strncmp(dir, t1 + 1, (size_t)(f - dir));
    }
    free(out);
    for (int i = 0; names && i < d->ntest; i++) free(names[i]);
    free(names);
    free(args);
    return rc == 0 && seen == d->ntest ? (double)right / (double)d->ntest : -1;
}

/* A model's test accuracy by its id (exported to out/arms/), or -1. */
static double model_accuracy(demo *d, const char *model) {
    char p[4400];
    snprintf(p, sizeof p, "%s/arms/%s.onnx", d->out, model);
    if (URSA_QUIET(NULL, "export", model, p)) return -1;
    double a = test_accuracy(d, p);
    unlink(p);
    return a;
}

static void mean_sd(const double *v, int n, double *mean, double *sd) {
    double s = 0, q = 0;
    for (int i = 0; i < n; i++) s += v[i];
    *mean = n ? s / n : 0;
    for (int i = 0; i < n; i++) q += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0;
}

/* ---- the steps ---------------------------------------------------------------------- */

static int step_up(demo *d) {
    if (URSA("up")) return -1;
    /* new datasets every run, whatever --out says: the stack keeps the
     * earlier runs' datasets (the same images under them, and their edits) */
    rstore *rs = cli_redis(d->c);
    if (!rs) return -1;
    int runno = 0, exists = 1;
    while (exists && ++runno < 1000) {
        snprintf(d->ds, sizeof d->ds, runno == 1 ? "fashion" : "fashion-%d", runno);
        if (ds_exists(rs, d->ds, &exists) != URSA_OK) {
            fprintf(stderr, "ursa demo: cannot read the datasets from Redis\n");
            rstore_destroy(rs);
            return -1;
        }
    }
    rstore_destroy(rs);
    if (runno > 1)
        printf("run %d on this stack: the dataset is %s (the earlier runs' datasets stay)\n", runno,
               d->ds);
    return 0;
}

static int step_data(demo *d) {
    int reused_tr = 0, reused_te = 0;
    if (demo_images(bindir, d->data, "train", d->www, d->n, &reused_tr) ||
        demo_truths(d->www, d->n, d->truth) ||
        demo_images(bindir, d->data, "t10k", d->test, d->ntest, &reused_te) ||
        demo_truths(d->test, d->ntest, d->ttruth)) {
        fprintf(stderr, "ursa demo: cannot write the images into %s\n", d->out);
        return -1;
    }
    printf(reused_tr ? "reusing the %d training images written by an earlier run in %s\n"
                     : "wrote %d training images into %s\n", d->n, d->www);
    printf(reused_te ? "reusing the %d test images in %s\n"
                     : "wrote %d test images (the official test set) into %s\n", d->ntest, d->test);
    char portf[4300], logf[4300], prog[4300];
    snprintf(portf, sizeof portf, "%s/www.port", d->out);
    snprintf(logf, sizeof logf, "%s/www.log", d->out);
    snprintf(prog, sizeof prog, "%s/fault-server", bindir);
    unlink(portf);
    unlink(logf);
    server = spawn_exec(prog, (char *const[]){"fault-server", d->www, portf, NULL},
                        &(spawn_opts){.log = logf}, NULL);
    int port = -1;
    for (int i = 0; server > 0 && i < 100 && (port = util_read_int(portf)) <= 0; i++) usleep(50000);
    if (port <= 0) {
        fprintf(stderr, "ursa demo: the image server did not start (see %s)\n", logf);
        return -1;
    }
    snprintf(d->base, sizeof d->base, "http://127.0.0.1:%d", port);
    demo_plan pl = {.www = d->www, .base = d->base, .n = d->n,
                    .noise = cfg_double(d->c, "noise"), .alike = 2.0 / 3,
                    .junk = cfg_double(d->c, "no-class"), .ndup = d->quick ? 5 : 20,
                    .nnear = d->quick ? 3 : 10, .nmess = d->quick ? 2 : 8,
                    .seed = (unsigned long long)cfg_int(d->c, "seed")};
    char why[256];
    if (demo_plant(&pl, d->truth, d->out, &d->v, &d->planted, why, sizeof why)) {
        fprintf(stderr, "ursa demo: %s\n", why);
        return -1;
    }
    const demo_planted *p = &d->planted;
    printf("the URL list %s/urls.csv: %zu URLs in %d classes, served from %s\n", d->out, d->v.n,
           DEMO_NCLASS, d->base);
    printf("planted (listed in %s/planted.tsv): %ld images under a wrong label (%.1f%%; %ld of "
           "them under a class that looks alike, like a shirt called a t-shirt), %ld images of "
           "no class at all, %ld exact copies, %ld re-encoded near-duplicates, %ld 404s, %ld "
           "HTML pages sent as image/jpeg, %ld truncated files, 2 URLs on a host that sends a "
           "byte a second\n",
           d->out, p->flipped, 100.0 * p->flipped / d->n, p->alike, p->junk, p->ndup, p->nnear,
           p->nmess, p->nmess, p->nmess);
    return 0;
}

static int step_ingest(demo *d) {
    char p[4300];
    snprintf(p, sizeof p, "%s/urls.csv", d->out);
    cmdline l = {.n = 0};
    CL(&l, "ingest", "--dataset", d->ds, p);
    if (cl_run(&l, NULL)) return -1;
    return URSA_QUIET(&d->status, "status", "--dataset", d->ds) ? -1
                                                                 : (fputs(d->status, stdout), 0);
}

static int step_lr_find(demo *d) {
    cmdline l = {.n = 0};
    CL(&l, "lr-find", "--dataset", d->ds);
    cl_add(&l, recipe, NRECIPE);
    CL(&l, "--plot", d->plot);
    char *txt = NULL, sug[32] = "";
    if (cl_run(&l, &txt)) {
        free(txt);
        return -1;
    }
    line_field(txt, "suggested lr: ", sug, sizeof sug);
    free(txt);
    printf("lr_find suggests %s, where the loss falls fastest; as the lesson does, the training "
           "takes a max_lr well before the loss's minimum on the plot: 1e-2\n", sug);
    return 0;
}

static int step_train(demo *d) {
    if (train(d, d->ds, 42, 1, d->m1)) return -1;
    return URSA("export", d->m1, d->before);
}

static int step_interp(demo *d) {
    cmdline l = {.n = 0};
    CL(&l, "interp", d->m1, "--most-confused", "12", "--top-losses", "8", "--plot", d->cm);
    return cl_run(&l, NULL);
}

/* the audit's suspects against what was planted */
static void score_suspects(demo *d, char *sus) {
    for (char *line = sus, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        char *col[8] = {0};
        int nc = 0;
        for (char *t = line; t && nc < 8 && (!nl || t < nl);) {
            col[nc++] = t;
            char *tab = strchr(t, '\t');
            t = tab && (!nl || tab < nl) ? tab + 1 : NULL;
        }
        if (nc < 7 || !strncmp(col[0], "url\t", 4)) continue;
        int label = !strncmp(col[5], "label\t", 6), outlier = !strncmp(col[5], "outlier\t", 8);
        int dup = !strncmp(col[5], "duplicate\t", 10);
        char id[33];
        snprintf(id, sizeof id, "%.32s", col[6]);
        const demo_row *w = demo_find(&d->v, id);
        if (label) {
            d->lab_found++;
            if (w && w->truth >= 0 && w->label != w->truth) {
                d->lab_true++;
                size_t cl = strlen(demo_classes[w->truth]);
                d->lab_right += !strncmp(col[3], demo_classes[w->truth], cl) && col[3][cl] == '\t';
            }
            d->lab_junk += w && w->truth < 0; /* an image of no class, taken for a wrong label */
        } else if (outlier) {
            d->out_found++;
            d->out_junk += w && w->truth < 0;
        } else if (dup) {
            d->dup_found++;
            d->dup_true += w && (w->kind == 'n' || w->near_orig);
        }
    }
}

static int step_audit(demo *d) {
    /* the newest model's body, frozen: each fold fits a head on its
     * features, computed once */
    cmdline l = {.n = 0};
    CL(&l, "audit", "--dataset", d->ds);
    char *txt = NULL;
    if (cl_run(&l, &txt)) {
        free(txt);
        return -1;
    }
    const char *oe = strstr(txt, "out-of-fold error_rate ");
    d->oof = oe ? atof(oe + strlen("out-of-fold error_rate ")) : 1;
    free(txt);
    char *sus = NULL;
    if (URSA_QUIET(&sus, "clean", "--dataset", d->ds, "--kinds", "label,outlier,duplicate")) {
        free(sus);
        return -1;
    }
    util_write_file_atomic(d->suspects, sus, strlen(sus));
    score_suspects(d, sus);
    free(sus);
    printf("\nagainst what was planted:\n"
           "  label issues: %ld found, %ld of them planted wrong labels (of %ld planted; %ld "
           "suggest the true class)\n"
           "  images of no class: %ld planted; %ld outliers found, %ld of them planted; %ld more "
           "among the label issues\n"
           "  near-duplicates: %ld pairs found, %ld of them planted (of %ld planted); the %ld "
           "exact copies were caught at ingest as duplicates\n",
           d->lab_found, d->lab_true, d->planted.flipped, d->lab_right, d->planted.junk,
           d->out_found, d->out_junk, d->lab_junk, d->dup_found, d->dup_true, d->planted.nnear,
           d->planted.ndup);
    printf("(all suspects, most likely first: %s; in a browser: the console's cleaner)\n",
           d->suspects);
    return 0;
}

/* what the cleaning did, against what was planted */
static int score_cleaned(demo *d) {
    rstore *r = cli_redis(d->c);
    int bad = !r || demo_score(r, d->ds, &d->v, &d->cleaned);
    rstore_destroy(r);
    if (bad) return -1;
    const demo_outcome *o = &d->cleaned;
    printf("\nwhat the cleaning did, against what was planted: of the %ld wrong labels %ld "
           "relabelled right, %ld deleted, %ld relabelled to another wrong class, %ld left; "
           "%ld right labels broken and %ld right images deleted; %ld of the %ld images of no "
           "class deleted\n",
           d->noisy.wrong - d->noisy.junk_kept, o->fixed, o->flip_deleted, o->relabel_wrong,
           o->unfixed, o->broken, o->right_deleted, o->junk_deleted, d->planted.junk);
    printf("wrong labels (and images of no class) in the dataset: %ld before, %ld after\n",
           d->noisy.wrong, o->wrong);
    return 0;
}

static int step_clean(demo *d) {
    printf("No person looks at the suspects here: the suggestions the audit is sure of are "
           "accepted as they are (fast.ai's cleaner assumes a person; the console's cleaner is "
           "that step by click, and --seeds N also shows a reviewer's result)\n");
    if (d->oof > 0.5) { /* a model that wrong is no judge: its suggestions would do harm */
        printf("the audit's models got %.0f%% of the images wrong out of fold: too weak to "
               "trust, so no suggestion is accepted\n", 100 * d->oof);
        return score_cleaned(d);
    }
    cmdline l = {.n = 0};
    CL(&l, "clean", "--dataset", d->ds, "--accept-suggestions", "--kinds", "label", "--min-score",
       MIN_SCORE, "--delete-score", DELETE_SCORE);
    if (cl_run(&l, NULL)) return -1;
    l.n = 0;
    CL(&l, "clean", "--dataset", d->ds, "--accept-suggestions", "--kinds", "outlier",
       "--min-score", OUTLIER_SCORE);
    if (cl_run(&l, NULL)) return -1;
    l.n = 0; /* near-duplicates: only copies this close (look-alikes are not dirt) */
    CL(&l, "clean", "--dataset", d->ds, "--accept-suggestions", "--kinds", "duplicate",
       "--min-score", "0.995");
    if (cl_run(&l, NULL)) return -1;
    return score_cleaned(d);
}

static int step_retrain(demo *d) {
    printf("the same recipe from scratch on the cleaned dataset, so the two models differ only "
           "in the labels\n");
    if (train(d, d->ds, 42, 1, d->m2)) return -1;
    return URSA("export", d->m2, d->after);
}

static int step_test(demo *d) {
    d->acc1 = test_accuracy(d, d->before);
    d->acc2 = test_accuracy(d, d->after);
    if (d->acc1 < 0 || d->acc2 < 0) {
        fprintf(stderr, "ursa demo: ursa predict failed on the test images\n");
        return -1;
    }
    printf("test accuracy on %d images: %.2f%% before cleaning, %.2f%% after (%+.2f points)\n",
           d->ntest, 100 * d->acc1, 100 * d->acc2, 100 * (d->acc2 - d->acc1));
    return 0;
}

/* An arm's dataset: the URL list ingested again under another name. */
static int arm_ingest(demo *d, arm *a, const char *list) {
    char p[4300];
    snprintf(p, sizeof p, "%s/%s", d->out, list);
    cmdline l = {.n = 0};
    CL(&l, "ingest", "--dataset", a->ds, p);
    printf("$ ursa ingest --dataset %s %s\n", a->ds, p);
    char *txt = NULL;
    int rc = ursa_run(0, &txt, l.a);
    if (rc) fprintf(stderr, "ursa demo: %s", txt ? txt : "");
    free(txt);
    return rc;
}

static int step_arms(demo *d) {
    arm *A = d->arms;
    A[0] = (arm){.name = "noisy", .what = "the labels as ingested"};
    A[1] = (arm){.name = "cleaned", .what = "after the automatic cleaning above"};
    A[2] = (arm){.name = "reviewed",
                 .what = "a reviewer's decisions on the same suspects (played by the demo, "
                         "which knows what it planted)"};
    A[3] = (arm){.name = "true", .what = "the true labels, nothing planted"};
    snprintf(A[0].ds, sizeof A[0].ds, "%s-noisy", d->ds);
    snprintf(A[1].ds, sizeof A[1].ds, "%s", d->ds);
    snprintf(A[2].ds, sizeof A[2].ds, "%s-reviewed", d->ds);
    snprintf(A[3].ds, sizeof A[3].ds, "%s-true", d->ds);
    char dir[4300], csv[4300];
    snprintf(dir, sizeof dir, "%s/arms", d->out);
    snprintf(csv, sizeof csv, "%s/reviewed.csv", d->out);
    if (util_mkdirs(dir)) return -1;
    if (arm_ingest(d, &A[0], "urls.csv") || arm_ingest(d, &A[2], "urls.csv") ||
        arm_ingest(d, &A[3], "urls-true.csv"))
        return -1;
    char *sus = NULL;
    rstore *r = cli_redis(d->c);
    if (!r || util_read_file(d->suspects, (size_t)1 << 30, &sus, &(size_t){0}) ||
        demo_review(r, A[2].ds, &d->v, sus, csv, &d->rev_fixed, &d->rev_deleted)) {
        free(sus);
        rstore_destroy(r);
        fprintf(stderr, "ursa demo: cannot write the reviewer's decisions\n");
        return -1;
    }
    free(sus);
    printf("the reviewer, looking at the audit's %ld label issues and %ld outliers: %ld "
           "relabelled to what they show, %ld deleted as of no class, the rest kept (%s)\n",
           d->lab_found, d->out_found, d->rev_fixed, d->rev_deleted, csv);
    cmdline l = {.n = 0};
    CL(&l, "clean", "--dataset", A[2].ds, "--apply", csv, "--delete-missing");
    if (cl_run(&l, NULL) || demo_score(r, A[2].ds, &d->v, &d->reviewed)) {
        rstore_destroy(r);
        return -1;
    }
    rstore_destroy(r);
    /* seed 42 of the noisy and cleaned arms are the lesson's two models
     * (the same images, labels, split and seed: the engine is deterministic) */
    A[0].acc[A[0].n++] = d->acc1;
    A[1].acc[A[1].n++] = d->acc2;
    for (int s = 0; s < d->seeds; s++)
        for (int k = 0; k < 4; k++) {
            if (A[k].n > s) continue;
            char model[128];
            double t = now_s();
            if (train(d, A[k].ds, 42 + s, 0, model)) return -1;
            double acc = model_accuracy(d, model);
            if (acc < 0) return -1;
            A[k].acc[A[k].n++] = acc;
            printf("  %-8s seed %d: %.2f%% (%s, %.0f s)\n", A[k].name, 42 + s, 100 * acc, model,
                   now_s() - t);
            fflush(stdout);
        }
    printf("\n| labels | test accuracy, mean ± sd of %d seeds |\n| --- | ---: |\n", d->seeds);
    for (int k = 0; k < 4; k++) {
        double m, sd;
        mean_sd(A[k].acc, A[k].n, &m, &sd);
        printf("| %s: %s | %.2f%% ± %.2f |\n", A[k].name, A[k].what, 100 * m, 100 * sd);
    }
    return 0;
}

static int step_serve(demo *d) {
    char pf[4300];
    int iport = statedir_path(d->c, "run/inference.port", pf, sizeof pf) == URSA_OK
                    ? util_read_int(pf) : -1;
    if (iport <= 0) {
        fprintf(stderr, "ursa demo: ursa-inference is not running (ursa status)\n");
        return -1;
    }
    char models[256];
    snprintf(d->api, sizeof d->api, "http://127.0.0.1:%d", iport);
    snprintf(models, sizeof models, "%s/v1/models", d->api);
    for (int i = 0; i < 150; i++) { /* the newest model is loaded within seconds */
        char *mj = NULL;
        spawn_run("/usr/bin/curl", (char *const[]){"curl", "-sf", models, NULL}, 0, &mj);
        int ok = mj && strstr(mj, d->m2) != NULL;
        free(mj);
        if (ok) break;
        usleep(200000);
    }
    for (int i = 0; i < 3; i++) {
        int t = (i * 3331 + 17) % d->ntest;
        char body[4400], url[200];
        snprintf(body, sizeof body, "@%s/%s/%d.jpg", d->test, demo_classes[d->ttruth[t]], t);
        snprintf(url, sizeof url, "%s/v1/classify?top=2", d->api);
        printf("$ curl -s -X POST --data-binary %s '%s'    (a %s)\n", body, url,
               demo_classes[d->ttruth[t]]);
        spawn_run("/usr/bin/curl",
                  (char *const[]){"curl", "-s", "-X", "POST", "--data-binary", body, url, NULL}, 1,
                  NULL);
        printf("\n");
    }
    char url[600];
    int t = 4242 % d->n;
    snprintf(url, sizeof url, "%s/v1/classify-url?url=%s/ds/%s/%d.jpg", d->api, d->base,
             demo_classes[d->truth[t]], t);
    printf("$ curl -s '%s'    (a %s)\n", url, demo_classes[d->truth[t]]);
    spawn_run("/usr/bin/curl", (char *const[]){"curl", "-s", url, NULL}, 1, NULL);
    printf("\n");
    return 0;
}

typedef struct {
    const char *title;
    int (*run)(demo *d);
    int arms; /* only with --seeds */
} step;

static const step steps[] = {
    {"ursa up: the embedded stack (redis-server, Kafka broker, the daemons)", step_up, 0},
    {"the data: Fashion-MNIST as JPEG files on a local web server, with the web's mess",
     step_data, 0},
    {"ursa ingest: download and verify every URL", step_ingest, 0},
    {"ursa lr-find: the learning-rate finder", step_lr_find, 0},
    {"ursa train: the small resnet from scratch, one-cycle", step_train, 0},
    {"ursa interp: what the model gets wrong", step_interp, 0},
    {"ursa audit: which images look mislabeled, of no class, or duplicated", step_audit, 0},
    {"ursa clean --accept-suggestions: the audit's sure suggestions, taken", step_clean, 0},
    {"ursa train again: the cleaned data", step_retrain, 0},
    {"the test set: the official test images, which no model has seen", step_test, 0},
    {"--seeds: the noisy, cleaned, reviewed and true labels, several seeds each", step_arms, 1},
    {"ursa-inference: the model served over HTTP", step_serve, 0},
};
enum { NSTEPS = sizeof steps / sizeof *steps };

/* ---- the summary -------------------------------------------------------------------- */

static void summary_arms(demo *d, FILE *m) {
    double mean[4], sd[4];
    for (int k = 0; k < 4; k++) mean_sd(d->arms[k].acc, d->arms[k].n, &mean[k], &sd[k]);
    fprintf(m, "## Noisy, cleaned, reviewed and true labels, %d seeds each\n\n"
               "The same recipe trained with seeds 42 to %d on each version of the data; "
               "accuracy on the %d test images, mean ± standard deviation.\n\n"
               "| labels | accuracy | each seed |\n| --- | ---: | --- |\n",
            d->seeds, 41 + d->seeds, d->ntest);
    for (int k = 0; k < 4; k++) {
        fprintf(m, "| %s: %s | %.2f%% ± %.2f |", d->arms[k].name, d->arms[k].what, 100 * mean[k],
                100 * sd[k]);
        for (int s = 0; s < d->arms[k].n; s++) fprintf(m, " %.2f", 100 * d->arms[k].acc[s]);
        fprintf(m, " |\n");
    }
    double gap = mean[3] - mean[0];
    fprintf(m, "\nThe noise costs %.2f points (true minus noisy). ", 100 * gap);
    if (gap > 0)
        fprintf(m, "Share of that gap recovered: %.2f by the automatic cleaning, %.2f by the "
                   "reviewer.\n\n", (mean[1] - mean[0]) / gap, (mean[2] - mean[0]) / gap);
    else
        fprintf(m, "There is no gap to recover.\n\n");
    fprintf(m, "The reviewer is the demo standing in for a person: it looked at the same "
               "suspects the audit listed and decided each from what it planted (%ld relabelled, "
               "%ld deleted); wrong labels left: %ld, against %ld after the automatic "
               "cleaning.\n\n", d->rev_fixed, d->rev_deleted, d->reviewed.wrong, d->cleaned.wrong);
}

static int summary(demo *d, double times[], int ntimes) {
    char con[300] = "(not running)", pf[4300];
    if (statedir_path(d->c, "run/console.port", pf, sizeof pf) == URSA_OK && util_read_int(pf) > 0) {
        char tok[4300];
        statedir_path(d->c, "run/console.token", tok, sizeof tok);
        snprintf(con, sizeof con, "http://127.0.0.1:%d/ (the token: %.120s)", util_read_int(pf),
                 tok);
    }
    char *sum = NULL;
    size_t sumlen = 0;
    FILE *m = open_memstream(&sum, &sumlen);
    if (!m) return -1;
    const demo_outcome *o = &d->cleaned;
    fprintf(m, "# ursa demo: the lesson on Fashion-MNIST, %d training images\n\n", d->n);
    fprintf(m, "## The data\n\n%zu URLs ingested into dataset `%s`; what became of them "
               "(`ursa status --dataset %s`):\n\n```\n%s```\n\n",
            d->v.n, d->ds, d->ds, d->status ? d->status : "");
    fprintf(m, "## Cleaning\n\nThe audit's suspects against what was planted:\n\n"
               "| | found | of them planted | planted |\n| --- | ---: | ---: | ---: |\n");
    fprintf(m, "| wrong labels (label issues) | %ld | %ld (%ld suggest the true class) | %ld |\n",
            d->lab_found, d->lab_true, d->lab_right, d->planted.flipped);
    fprintf(m, "| images of no class (outliers; %ld more among the label issues) | %ld | %ld | %ld |\n",
            d->lab_junk, d->out_found, d->out_junk, d->planted.junk);
    fprintf(m, "| near-duplicate pairs | %ld | %ld | %ld |\n\n", d->dup_found, d->dup_true,
            d->planted.nnear);
    fprintf(m, "Accepted automatically (no person looked): of the wrong labels %ld relabelled "
               "right, %ld deleted, %ld relabelled wrong, %ld left; %ld right labels broken, %ld "
               "right images deleted; %ld of %ld images of no class deleted. Wrong labels in "
               "the dataset: %ld before, %ld after.\n\n",
            o->fixed, o->flip_deleted, o->relabel_wrong, o->unfixed, o->broken, o->right_deleted,
            o->junk_deleted, d->planted.junk, d->noisy.wrong, o->wrong);
    fprintf(m, "## Accuracy on the %d official test images\n\n| model | accuracy |\n| --- | ---: |\n"
               "| `%s`, before cleaning | %.2f%% |\n| `%s`, after cleaning | %.2f%% |\n\n",
            d->ntest, d->m1, 100 * d->acc1, d->m2, 100 * d->acc2);
    if (d->seeds) summary_arms(d, m);
    fprintf(m, "## Time of each stage\n\n| stage | seconds |\n| --- | ---: |\n");
    for (int i = 0; i < ntimes; i++)
        if (times[i] >= 0) fprintf(m, "| %s | %.1f |\n", steps[i].title, times[i]);
    fprintf(m, "| **all** | **%.1f** |\n\n", now_s() - d->t0);
    fprintf(m, "## Files\n\n- the model: `%s` (before cleaning: `%s`)\n- plots: `%s`, `%s`\n"
               "- the URL list `%s/urls.csv`, what was planted `%s/planted.tsv`, the audit's "
               "suspects `%s`\n- the console: %s\n- the classifier's API: %s/v1/classify\n",
            d->after, d->before, d->plot, d->cm, d->out, d->out, d->suspects, con, d->api);
    fclose(m);
    char p[4300];
    snprintf(p, sizeof p, "%s/summary.md", d->out);
    util_write_file_atomic(p, sum, sumlen);
    printf("\n== summary (also in %s)\n\n%s", p, sum);
    printf("\nThe stack keeps running (ursa status); stop it with: ursa down\n");
    free(sum);
    return 0;
}

/* ---- the command -------------------------------------------------------------------- */

static int setup(demo *d, const cfg *c) {
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) {
        fprintf(stderr, "ursa demo: cannot find this program's path\n");
        return 2;
    }
    self[sl] = '\0';
    snprintf(bindir, sizeof bindir, "%s", self);
    *strrchr(bindir, '/') = '\0';
    d->c = c;
    d->t0 = now_s();
    d->data = cfg_str(c, "data");
    d->out = cfg_str(c, "out");
    d->full = cfg_bool(c, "full");
    d->quick = cfg_bool(c, "quick");
    d->seeds = (int)cfg_int(c, "seeds");
    d->n = (int)cfg_int(c, "n");
    if (!d->n) d->n = d->full ? 60000 : d->quick ? 1500 : 28000;
    d->epochs = (int)cfg_int(c, "epochs");
    if (!d->epochs) d->epochs = d->full ? 12 : d->quick ? 2 : 4;
    d->ntest = d->quick ? 1000 : 10000;
    if (d->quick) recipe[RECIPE_BS] = "32"; /* 1,500 images: enough steps to learn something */
    char p[4300], q[4300];
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", d->data);
    if (access(p, R_OK)) {
        fprintf(stderr,
                "ursa demo: no Fashion-MNIST at %s: apt-get install dataset-fashion-mnist "
                "(or give --data DIR)\n", d->data);
        return 2;
    }
    snprintf(p, sizeof p, "%s/fault-server", bindir);
    snprintf(q, sizeof q, "%s/idx2jpeg", bindir);
    if (access(p, X_OK) || access(q, X_OK)) {
        fprintf(stderr, "ursa demo: fault-server and idx2jpeg are not beside %s: run it from a "
                        "built tree (cmake --build build)\n", self);
        return 2;
    }
    snprintf(d->www, sizeof d->www, "%s/www", d->out);
    snprintf(d->test, sizeof d->test, "%s/test", d->out);
    snprintf(d->before, sizeof d->before, "%s/model-before-cleaning.onnx", d->out);
    snprintf(d->after, sizeof d->after, "%s/model.onnx", d->out);
    snprintf(d->plot, sizeof d->plot, "%s/lr_find.svg", d->out);
    snprintf(d->cm, sizeof d->cm, "%s/confusion.svg", d->out);
    snprintf(d->suspects, sizeof d->suspects, "%s/suspects.tsv", d->out);
    if (util_mkdirs(d->www) || util_mkdirs(d->test)) {
        fprintf(stderr, "ursa demo: cannot make %s\n", d->www);
        return 1;
    }
    d->truth = malloc(sizeof(int) * 60000);
    d->ttruth = malloc(sizeof(int) * 10000);
    if (!d->truth || !d->ttruth) return 1;
    /* the daemons `ursa up` starts must fetch from the local server and take
     * 28 px images; the server takes a free port rather than fail on a busy
     * 8080 (a stack already running keeps the settings it started with) */
    setenv("URSA_FETCH_ALLOW", "127.0.0.1/32", 0);
    setenv("URSA_IMG_MIN_SIDE", "16", 0);
    setenv("URSA_INFERENCE_PORT", "0", 0);
    /* the slow host given up on sooner: 1 s under 1 KB/s, three attempts
     * 250 and 500 ms apart (a crawl of the web waits 5 s and 1 and 2 s) */
    setenv("URSA_FETCH_LOW_SPEED_SECS", "1", 0);
    setenv("URSA_CRAWLER_RETRY_MS", "250", 0);
    /* the commands it runs work on the stack it was given */
    setenv("URSA_STATE_DIR", cfg_str(c, "state-dir"), 1);
    return 0;
}

int demo_cmd(const cfg *c, int argc, char **argv) {
    (void)argv;
    if (argc) {
        fprintf(stderr, "ursa demo: takes no arguments (see ursa demo --help)\n");
        return 2;
    }
    demo *d = calloc(1, sizeof *d);
    if (!d) return 1;
    int rc = setup(d, c);
    double times[NSTEPS];
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    for (int i = 0; !rc && i < NSTEPS; i++) {
        times[i] = -1;
        if (steps[i].arms && !d->seeds) continue;
        if (isatty(1)) printf("\n\033[1m== %s\033[0m\n", steps[i].title);
        else printf("\n== %s\n", steps[i].title);
        fflush(stdout);
        double t = now_s();
        if (steps[i].run(d)) {
            fprintf(stderr, "ursa demo: stopped at \"%s\"\n", steps[i].title);
            rc = 1;
        }
        times[i] = now_s() - t;
        /* the noisy dataset, as ingested, before anything is cleaned */
        if (!rc && steps[i].run == step_ingest) {
            rstore *r = cli_redis(c);
            rc = !r || demo_score(r, d->ds, &d->v, &d->noisy);
            rstore_destroy(r);
        }
    }
    if (!rc) rc = summary(d, times, NSTEPS) ? 1 : 0;
    stop_server();
    free(d->status);
    demo_rows_free(&d->v);
    free(d->truth);
    free(d->ttruth);
    free(d);
    return rc;
}
