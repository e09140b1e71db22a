/* train_cmd.c: ursa train, lr-find, jobs and job.
 *
 * A job is recorded in Redis (state queued) before its message goes to
 * ursa.train.jobs, so it is never accepted and then lost; the CLI then
 * follows it through Redis (common/state/jobs.h), where the worker writes its
 * progress, and Ctrl-C only stops the following. */
#include "train_cmd.h"

#include <ctype.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "data.h"
#include "dataset.h"
#include "dataset_edits.h"
#include "jobs.h"
#include "msg.h"
#include "plot.h"
#include "registry.h"
#include "topics.h"
#include "util.h"

/* The recipe of an audit's head-only folds on the newest model's body
 * (--recipe last): the head alone on fixed features, so a high rate and
 * no unfreezing; the epochs of ops/bench-clean.sh's pretrained audit
 * (--min-steps scales them up on a small dataset). */
#define AUDIT_HEAD_EPOCHS 6
#define AUDIT_HEAD_LR 1e-2
#define AUDIT_HEAD_STAGE_TEXT "6 epochs at max_lr 1e-2"

#define COMMON_DEFS                                                                              \
    {"dataset", CFG_STR, "", 1, 0, "dataset to train on (required)"},                            \
    {"arch", CFG_STR, "resnet34", 1, 0,                                                        \
     "resnet18, resnet34, or small (a small resnet for 28..64 px images)"},                      \
    {"pretrained", CFG_STR, "", 1, 0,                                                          \
     "an ONNX classifier whose body is fine-tuned (a torchvision resnet export, or an ursa "   \
     "model); without it the model starts from random weights"},                                 \
    {"size", CFG_INT, "224", 16, 1024, "images are resized and cropped to SIZE x SIZE"},      \
    {"bs", CFG_INT, "64", 1, 4096, "batch size"},                                              \
    {"valid-pct", CFG_DOUBLE, "0.2", 0.01, 0.9,                                                \
     "share of the images held out for validation (chosen by content hash and seed)"},         \
    {"seed", CFG_INT, "42", 0, 4e15, "seeds the split, the weights and the shuffling"},         \
    {"wd", CFG_DOUBLE, "0.01", 0, 0.99, "weight decay (decoupled, AdamW)"},                     \
    {"label-smoothing", CFG_DOUBLE, "0", 0, 0.5,                                               \
     "eps of label-smoothing cross-entropy (fast.ai's LabelSmoothingCrossEntropy; 0: plain)"}, \
    {"no-augment", CFG_BOOL, "false", 1, 0, "train without get_transforms() augmentation"},     \
    {"no-wait", CFG_BOOL, "false", 1, 0, "print the job id and return at once"},              \
    {"output", CFG_STR, "text", 1, 0,                                                          \
     "text or json (-o json, with --no-wait: the queued job as JSON; then ursa job JOB -o "    \
     "json)"}

const cfg_def train_defs[] = {
    COMMON_DEFS,
    {"tta", CFG_STR, "off", 1, 0,
     "test-time augmentation of the validation (each epoch's row, the interpretation and the "
     "model's metrics): off, flip, shift or flip+shift; a served model uses it with "
     "inference.tta model"},
    {"stages", CFG_STR, "4", 1, 0,
     "the recipe, in order (also given as repeated --stage E[:LR[:LR_HI]], --unfreeze and "
     "--freeze): EPOCHS[:MAX_LR[:MAX_LR_HI]] runs fit_one_cycle (max_lr 1e-3 by default; "
     "two values spread over the layer groups like slice()), unfreeze/freeze switch training "
     "of the pretrained body"},
    {NULL, 0, NULL, 0, 0, NULL}};
const cfg_def lrfind_defs[] = {
    COMMON_DEFS,
    {"plot", CFG_STR, "", 1, 0, "write the loss against the learning rate to this .svg file"},
    {NULL, 0, NULL, 0, 0, NULL}};
const cfg_def audit_defs[] = {
    COMMON_DEFS,
    {"stages", CFG_STR, "4", 1, 0,
     "each fold's recipe, as ursa train's --stage flags (default: see --recipe)"},
    {"folds", CFG_INT, "4", 2, 20, "K: K models, each trained on K-1 folds, judge the K-th"},
    {"dup-threshold", CFG_DOUBLE, "0.98", 0.5, 1,
     "cosine similarity of penultimate-layer features (centred) that makes two images "
     "near-duplicates"},
    {"recipe", CFG_STR, "last", 1, 0,
     "last: the body of the dataset's newest model, frozen: its features of every image are "
     "computed once and each fold fits a new head on them (one stage of " AUDIT_HEAD_STAGE_TEXT
     " unless --stage is given; its other settings are the model's, flags change them); "
     "scratch: each fold trains as the newest model did, from its start (its recipe; flags "
     "change it); flags: the flags and their defaults alone. Without a model, last and "
     "scratch are flags"},
    {"min-steps", CFG_INT, "300", 0, 1e6,
     "optimizer steps each fold trains at least: on a small dataset the recipe's epochs are "
     "scaled up to reach them (each stage in proportion, at most 50 epochs a fold); 0: the "
     "recipe as given"},
    {NULL, 0, NULL, 0, 0, NULL}};
const cfg_def jobs_defs[] = {
    {"dataset", CFG_STR, "", 1, 0, "only this dataset's jobs"},
    {"limit", CFG_INT, "20", 1, 1e6, "show the newest N"},
    CLI_OUTPUT_DEF,
    {NULL, 0, NULL, 0, 0, NULL}};
const cfg_def job_defs[] = {CLI_OUTPUT_DEF, {NULL, 0, NULL, 0, 0, NULL}};

/* ---- argv: ordered stage flags ------------------------------------------------------ */

char **train_argv(int argc, char **argv, int *nargc, char **owned) {
    char **av = calloc((size_t)argc + 2, sizeof(char *));
    size_t cap = 16, len = 0;
    char *st = malloc(cap);
    if (!av || !st) {
        free(av);
        free(st);
        return NULL;
    }
    int n = 0, any = 0;
    st[0] = '\0';
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *add = NULL;
        if (i && !strcmp(a, "--")) { /* the rest are arguments */
            while (i < argc) av[n++] = argv[i++];
            break;
        }
        if (i && (!strcmp(a, "--stage")) && i + 1 < argc) add = argv[++i];
        else if (i && !strncmp(a, "--stage=", 8)) add = a + 8;
        else if (i && (!strcmp(a, "--unfreeze") || !strcmp(a, "--freeze"))) add = a + 2;
        if (!add) {
            av[n++] = argv[i];
            continue;
        }
        size_t l = strlen(add);
        if (len + l + 2 >= cap) {
            while (len + l + 2 >= cap) cap *= 2;
            char *t = realloc(st, cap);
            if (!t) {
                free(st);
                free(av);
                return NULL;
            }
            st = t;
        }
        len += (size_t)sprintf(st + len, "%s%s", len ? "," : "", add);
        any = 1;
    }
    *owned = NULL;
    if (any) {
        char *flag = malloc(len + 10);
        if (!flag) {
            free(st);
            free(av);
            return NULL;
        }
        sprintf(flag, "--stages=%s", st);
        /* after the command name, before any argument */
        memmove(av + 2, av + 1, sizeof(char *) * (size_t)(n - 1));
        av[1] = flag;
        n++;
        *owned = flag;
    }
    free(st);
    *nargc = n;
    return av;
}

/* Parses "4, unfreeze, 2:3e-5:3e-4" into stages; 0, or -1 after printing why. */
static int parse_stages(const char *text, Ursa__TrainStage **out, size_t *n, int pretrained) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", text);
    int unfreeze = !pretrained;
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ", \t", &save); tok;
         tok = strtok_r(NULL, ", \t", &save)) {
        if (!strcmp(tok, "unfreeze") || !strcmp(tok, "freeze")) {
            unfreeze = tok[0] == 'u';
            continue;
        }
        char *end;
        long ep = strtol(tok, &end, 10);
        double lo = 1e-3, hi;
        if (end != tok && *end == ':') lo = strtod(end + 1, &end);
        hi = lo;
        if (*end == ':') hi = strtod(end + 1, &end);
        if (*end || ep < 1 || ep > 10000 || !(lo > 0) || !(hi >= lo) || !(hi < 100)) {
            fprintf(stderr,
                    "ursa train: bad stage \"%s\": want EPOCHS[:MAX_LR[:MAX_LR_HI]], e.g. 4, "
                    "4:1e-3 or 2:3e-5:3e-4 (1..10000 epochs, 0 < lr <= lr_hi < 100)\n",
                    tok);
            return -1;
        }
        if (*n == 16) {
            fprintf(stderr, "ursa train: at most 16 stages\n");
            return -1;
        }
        Ursa__TrainStage *s = malloc(sizeof *s);
        if (!s) return -1;
        ursa__train_stage__init(s);
        s->epochs = (uint32_t)ep;
        s->lr_min = lo;
        s->lr_max = hi;
        s->unfreeze = unfreeze;
        out[(*n)++] = s;
    }
    if (!*n) {
        fprintf(stderr, "ursa train: no stage to run (e.g. --stage 4)\n");
        return -1;
    }
    return 0;
}

/* ---- reading a job ----------------------------------------------------------------- */

typedef struct {
    char state[16], kind[16], dataset[72], arch[16], worker[160], model[160], manifest[65];
    char error[1024], suggestion[32], audit[65], edit_seq[24], waiting[700];
    char *lr_curve;
    int stage, epoch, step, steps, n_train, n_valid, n_classes, starts, stops, resumes, cancel;
    int fold, folds, n_label, n_duplicate, n_outlier, fold_epochs, fold_steps, fdim;
    double loss, error_rate, valid_loss;
    long long created, started, ended, beat;
    Ursa__TrainJob *spec;
} jobinfo;

static void jobinfo_free(jobinfo *j) {
    free(j->lr_curve);
    if (j->spec) ursa__train_job__free_unpacked(j->spec, NULL);
    memset(j, 0, sizeof *j);
}

/* URSA_ERR_NOT_FOUND for an unknown job. */
static ursa_err job_read(rstore *r, const char *id, jobinfo *j) {
    memset(j, 0, sizeof *j);
    redisReply *rep = NULL;
    ursa_err e = job_get_all(r, id, &rep);
    if (e) return e;
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        const char *k = rep->element[i]->str, *v = rep->element[i + 1]->str;
        size_t vl = rep->element[i + 1]->len;
#define S(name, dst) else if (!strcmp(k, name)) snprintf(dst, sizeof dst, "%s", v)
#define I(name, dst) else if (!strcmp(k, name)) dst = atoi(v)
#define D(name, dst) else if (!strcmp(k, name)) dst = atof(v)
#define L(name, dst) else if (!strcmp(k, name)) dst = atoll(v)
        if (!strcmp(k, "spec")) j->spec = ursa__train_job__unpack(NULL, vl, (const uint8_t *)v);
        else if (!strcmp(k, "lr_curve")) j->lr_curve = strdup(v);
        S("state", j->state); S("kind", j->kind); S("dataset", j->dataset); S("arch", j->arch);
        S("worker", j->worker); S("model", j->model); S("error", j->error);
        S("manifest", j->manifest); S("lr_suggestion", j->suggestion); S("audit", j->audit);
        S("edit_seq", j->edit_seq); S("waiting", j->waiting);
        I("fold", j->fold); I("folds", j->folds); I("n_label", j->n_label);
        I("n_duplicate", j->n_duplicate); I("n_outlier", j->n_outlier);
        I("fold_epochs", j->fold_epochs); I("fold_steps", j->fold_steps); I("fdim", j->fdim);
        I("stage", j->stage); I("epoch", j->epoch); I("step", j->step); I("steps", j->steps);
        I("n_train", j->n_train); I("n_valid", j->n_valid); I("n_classes", j->n_classes);
        I("starts", j->starts); I("stops", j->stops); I("resumes", j->resumes);
        I("cancel", j->cancel);
        D("loss", j->loss); D("error_rate", j->error_rate); D("valid_loss", j->valid_loss);
        L("created_ms", j->created); L("started_ms", j->started); L("ended_ms", j->ended);
        L("beat_ms", j->beat);
#undef S
#undef I
#undef D
#undef L
    }
    freeReplyObject(rep);
    return URSA_OK;
}

/* The recipe's epochs: one fold's for an audit. */
static int recipe_epochs(const jobinfo *j) {
    int n = 0;
    for (size_t i = 0; j->spec && i < j->spec->n_stages; i++) n += (int)j->spec->stages[i]->epochs;
    return n;
}

/* Epochs the job trains in all: an audit's folds each train the epochs its
 * trainer chose (fold_epochs: the recipe's, or more for --min-steps). */
static int total_epochs(const jobinfo *j) {
    if (strcmp(j->kind, "audit")) return recipe_epochs(j);
    int folds = j->spec && j->spec->folds ? (int)j->spec->folds : 4;
    return (j->fold_epochs ? j->fold_epochs : recipe_epochs(j)) * folds;
}

/* An audit's folds: what they train when the trainer sized them to the
 * data (--min-steps), and on what when on a pretrained body. */
static void audit_lines(FILE *f, const jobinfo *j) {
    int e = recipe_epochs(j);
    if (j->fold_epochs > e && e > 0 && j->spec) {
        int per = j->fold_steps / j->fold_epochs; /* steps an epoch */
        fprintf(f, "each fold trains %d epochs (%d steps): the recipe's %d epoch%s (%d steps) %s "
                   "fewer than --min-steps %u", j->fold_epochs, j->fold_steps, e,
                e == 1 ? "" : "s", e * per, e == 1 ? "is" : "are", j->spec->min_steps);
        if (j->fold_steps < (int)j->spec->min_steps)
            fprintf(f, " (capped at %d epochs a fold)", j->fold_epochs);
        fputc('\n', f);
    }
    if (j->spec && j->spec->pretrained_blob[0]) {
        fprintf(f, "folds: the head alone, on the features of the pretrained body %.12s",
                j->spec->pretrained_blob);
        if (j->fdim) fprintf(f, " (%d an image, computed once)", j->fdim);
        fputc('\n', f);
    }
}

static void fmt_clock(double secs, char *out, size_t n) {
    long s = (long)(secs + 0.5);
    if (s >= 3600) snprintf(out, n, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else snprintf(out, n, "%02ld:%02ld", s / 60, s % 60);
}

static void fmt_time(long long ms, char *out, size_t n) {
    if (!ms) {
        snprintf(out, n, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%d %H:%M:%S", &tm);
}

static void stage_line(FILE *f, const Ursa__TrainJob *s, int k) {
    if (!s || k < 1 || (size_t)k > s->n_stages) return;
    const Ursa__TrainStage *st = s->stages[k - 1];
    int pre = s->pretrained_blob && s->pretrained_blob[0];
    fprintf(f, "stage %d of %zu: %u epoch%s, %s, max_lr ", k, s->n_stages, st->epochs,
            st->epochs == 1 ? "" : "s",
            !pre ? "whole model" : st->unfreeze ? "unfrozen" : "frozen (head only)");
    if (st->lr_min == st->lr_max) fprintf(f, "%g\n", st->lr_max);
    else fprintf(f, "slice(%g, %g)\n", st->lr_min, st->lr_max);
}

static void table_head(FILE *f) {
    fprintf(f, "%-6s %-11s %-11s %-11s %s\n", "epoch", "train_loss", "valid_loss", "error_rate",
            "time");
}

static void table_row(FILE *f, const job_row *w) {
    char t[16];
    fmt_clock(w->seconds, t, sizeof t);
    fprintf(f, "%-6d %-11.6f %-11.6f %-11.6f %s\n", w->epoch, w->train_loss, w->valid_loss,
            w->error_rate, t);
}

/* Prints the rows from index *shown on, with stage headers. */
static void print_rows(FILE *f, const jobinfo *j, const job_row *rows, int n, int *shown,
                       int *last_stage) {
    for (int i = 0; i < n; i++) {
        if (rows[i].n < *shown) continue;
        if (rows[i].stage != *last_stage) {
            if (*last_stage) fputc('\n', f);
            if (!strcmp(j->kind, "audit"))
                fprintf(f, "fold %d of %u: trained on the other folds, validated on (up to 2,000 of) "
                        "this one's images\n",
                        rows[i].stage, j->spec && j->spec->folds ? j->spec->folds : 4);
            else
                stage_line(f, j->spec, rows[i].stage);
            table_head(f);
            *last_stage = rows[i].stage;
        }
        table_row(f, &rows[i]);
        *shown = rows[i].n + 1;
    }
}

static void print_end(const jobinfo *j) {
    if (!strcmp(j->state, "done") && !strcmp(j->kind, "train")) {
        printf("\nmodel %s: error_rate %.4f, valid_loss %.4f on %d validation images\n"
               "  ursa export %s model.onnx    ursa interp %s\n",
               j->model, j->error_rate, j->valid_loss, j->n_valid, j->model, j->model);
    } else if (!strcmp(j->state, "done") && !strcmp(j->kind, "audit")) {
        printf("\naudit of %s: %d label issues, %d near-duplicates, %d outliers; out-of-fold "
               "error_rate %.4f\n  ursa clean --dataset %s    (lists them, most likely first)\n",
               j->dataset, j->n_label, j->n_duplicate, j->n_outlier, j->error_rate, j->dataset);
        /* n_classes: from trainers that record it in the audit */
        if (j->n_classes && ds_audit_unreliable(j->error_rate, j->n_classes))
            printf("out-of-fold error %.0f%%: the suggestions are unreliable (train longer, or a "
                   "better model first)\n", 100 * j->error_rate);
    } else if (!strcmp(j->state, "done")) {
        printf("suggested lr: %s (steepest descent of the smoothed loss)\n", j->suggestion);
    } else if (!strcmp(j->state, "failed")) {
        printf("job failed: %s\n", j->error);
    } else if (!strcmp(j->state, "cancelled")) {
        printf("job cancelled%s%s\n", j->error[0] ? ": " : "", j->error);
    }
}

/* ---- following a job ---------------------------------------------------------------- */

static volatile sig_atomic_t detach;
static void on_int(int sig) {
    (void)sig;
    detach = 1;
}

/* Follows a job until it ends: a progress bar within each epoch, a table
 * row after each. Returns 0 done, 1 failed or cancelled, 0 on detach. */
static int follow(rstore *r, const char *id) {
    int tty = isatty(2), shown = 0, last_stage = 0, hinted = 0, told = 0;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_int;
    sigaction(SIGINT, &sa, &old);
    int64_t t0 = util_mono_ms();
    int rc = 1;
    for (;;) {
        jobinfo j;
        job_row *rows = NULL;
        int n = 0;
        if (job_read(r, id, &j) || job_rows_read(r, id, &rows, &n)) {
            fprintf(stderr, "%sursa: lost Redis while following job %s: %s\n", tty ? "\n" : "", id,
                    rstore_last_error(r));
            jobinfo_free(&j);
            break;
        }
        if (tty) fprintf(stderr, "\r\033[K");
        if (!told && j.fold_epochs) { /* the audit's trainer has sized its folds */
            audit_lines(stdout, &j);
            told = 1;
        }
        print_rows(stdout, &j, rows, n, &shown, &last_stage);
        fflush(stdout);
        free(rows);
        int state = job_state_parse(j.state);
        if (state >= 0 && job_state_final((job_state)state)) {
            print_end(&j);
            rc = state == JOB_DONE ? 0 : 1;
            jobinfo_free(&j);
            break;
        }
        double secs = (double)(util_mono_ms() - t0) / 1000;
        if (state == JOB_QUEUED && secs > 15 && !hinted) {
            fprintf(stderr, "%sno trainer has taken job %s yet: is ursa-trainer running? "
                            "(ursa status)\n", tty ? "" : "", id);
            hinted = 1;
        }
        if (tty) {
            char bar[32], t[16];
            int w = 20, fill = j.steps ? w * j.step / j.steps : 0;
            for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '-';
            bar[w] = '\0';
            fmt_clock(secs, t, sizeof t);
            int total = total_epochs(&j);
            if (state == JOB_RUNNING && j.steps)
                fprintf(stderr, "epoch %d/%d [%s] %d/%d  loss %.4f  %s", j.epoch + 1, total, bar,
                        j.step, j.steps, j.loss, t);
            else
                fprintf(stderr, "%s%s  %s", j.state, j.cancel ? " (cancel requested)" : "", t);
            fflush(stderr);
        }
        jobinfo_free(&j);
        if (detach) {
            fprintf(stderr, "%sdetached: job %s goes on; follow it with `ursa job %s`\n",
                    tty ? "\r\033[K" : "\n", id, id);
            rc = 0;
            break;
        }
        util_sleep_ms(300);
    }
    sigaction(SIGINT, &old, NULL);
    return rc;
}

/* ---- submitting ------------------------------------------------------------------- */

/* What a job starts from besides its flags: the recipe of the dataset's
 * newest model (job, NULL for none) and, for an audit whose folds fit a
 * head on that model's body, the model (its id and blob; "" otherwise). */
typedef struct {
    const Ursa__TrainJob *job;
    char model[160], body[65];
} start_from;

/* Makes the job from the settings, records it and queues it; follows it
 * unless --no-wait. *id gets its id. */
static int submit(const cfg *c, const char *cmd, const char *kind, const start_from *from,
                  char id[JOB_ID_MAX + 1], rstore **rout) {
    const char *ds = cli_dataset(c, cmd);
    if (!ds) return 2;
    int json = cli_json(c, cmd);
    if (json < 0) return 2;
    if (json && !cfg_bool(c, "no-wait")) {
        fprintf(stderr, "ursa %s: -o json goes with --no-wait (then ursa job JOB -o json)\n", cmd);
        return 2;
    }
    const Ursa__TrainJob *base = from ? from->job : NULL;
/* a setting: the flag when given, else the base recipe's, else the default */
#define FROM_BASE(name) (base && !cfg_given(c, name))
    unsigned tta = NN_TTA_OFF;
    if (!strcmp(kind, "train")) {
        const char *t = FROM_BASE("tta") ? (base->tta ? base->tta : "") : cfg_str(c, "tta");
        if (nn_tta_parse(t, &tta)) {
            fprintf(stderr, "ursa %s: --tta %s: off, flip, shift or flip+shift\n", cmd, t);
            return 2;
        }
    }
    const char *arch = FROM_BASE("arch") ? base->arch : cfg_str(c, "arch");
    const char *pre = FROM_BASE("pretrained") ? "" : cfg_str(c, "pretrained");
    if (strcmp(arch, "resnet18") && strcmp(arch, "resnet34") && strcmp(arch, "small")) {
        fprintf(stderr, "ursa %s: --arch must be resnet18, resnet34 or small\n", cmd);
        return 2;
    }
    /* the folds fit a head on the newest model's body: never its own
     * stages, which may unfreeze the body they would train from its start */
    int head_only = FROM_BASE("pretrained") && from->body[0];
    Ursa__TrainStage *stages[16];
    size_t nst = 0;
    int from_base_stages = strcmp(kind, "lr_find") && FROM_BASE("stages") && !head_only;
    if (head_only && !cfg_given(c, "stages")) {
        if (!(stages[0] = malloc(sizeof **stages))) {
            fprintf(stderr, "ursa %s: out of memory\n", cmd);
            return 1;
        }
        ursa__train_stage__init(stages[0]);
        stages[0]->epochs = AUDIT_HEAD_EPOCHS;
        stages[0]->lr_min = stages[0]->lr_max = AUDIT_HEAD_LR;
        nst = 1;
    } else if (from_base_stages) {
        for (size_t i = 0; i < base->n_stages && i < 16; i++) {
            if (!(stages[nst] = malloc(sizeof **stages))) {
                while (nst) free(stages[--nst]);
                fprintf(stderr, "ursa %s: out of memory\n", cmd);
                return 1;
            }
            *stages[nst++] = *base->stages[i];
        }
    } else if (strcmp(kind, "lr_find") &&
               parse_stages(cfg_str(c, "stages"), stages, &nst,
                            *pre != 0 || head_only ||
                                (FROM_BASE("pretrained") && base->pretrained_blob[0]))) {
        return 2;
    }
    int rc = 1;
    rstore *r = NULL;
    kq_producer *p = NULL;
    blob_store *bs = NULL;
    char pkey[65] = "";
    if (FROM_BASE("pretrained"))
        snprintf(pkey, sizeof pkey, "%s", head_only ? from->body : base->pretrained_blob);
    if (*pre) {
        char *data = NULL;
        size_t len = 0;
        ursa_err e = util_read_file(pre, (size_t)1 << 31, &data, &len);
        if (e) {
            fprintf(stderr, "ursa %s: cannot read %s: %s\n", cmd, pre, ursa_err2str(e));
            rc = 2;
            goto out;
        }
        if (!(bs = cli_blobs(c)) || blob_put(bs, data, len, pkey) != URSA_OK) {
            if (bs) fprintf(stderr, "ursa %s: cannot store %s in the blob store\n", cmd, pre);
            free(data);
            goto out;
        }
        free(data);
    }
    job_new_id(id);
    Ursa__Header h;
    char hid[33];
    msg_header_init(&h, hid, ds, id);
    Ursa__TrainJob j = URSA__TRAIN_JOB__INIT;
    j.header = &h;
    j.kind = (char *)kind;
    j.dataset = (char *)ds;
    j.arch = (char *)arch;
    j.pretrained_blob = pkey;
    j.size = FROM_BASE("size") ? base->size : (uint32_t)cfg_int(c, "size");
    j.batch_size = FROM_BASE("bs") ? base->batch_size : (uint32_t)cfg_int(c, "bs");
    j.valid_pct = FROM_BASE("valid-pct") ? base->valid_pct : cfg_double(c, "valid-pct");
    j.seed = FROM_BASE("seed") ? base->seed : (uint64_t)cfg_int(c, "seed");
    j.weight_decay = FROM_BASE("wd") ? base->weight_decay : cfg_double(c, "wd");
    j.label_smoothing = FROM_BASE("label-smoothing") ? base->label_smoothing
                                                     : cfg_double(c, "label-smoothing");
    j.augment = FROM_BASE("no-augment") ? base->augment : !cfg_bool(c, "no-augment");
    j.tta = tta ? (char *)nn_tta_name(tta) : "";
    j.n_stages = nst;
    j.stages = stages;
    if (!strcmp(kind, "audit")) {
        j.folds = (uint32_t)cfg_int(c, "folds");
        j.dup_threshold = cfg_double(c, "dup-threshold");
        j.min_steps = (uint32_t)cfg_int(c, "min-steps");
    }
#undef FROM_BASE
    if (!(r = cli_redis(c)) || !(p = cli_kafka(c))) goto out;
    ursa_err qe = job_queue(r, p, id, kind, ds, arch, &j.base);
    if (qe == URSA_ERR_KAFKA) {
        fprintf(stderr, "ursa %s: Kafka did not take the job; it is recorded as failed\n", cmd);
        goto out;
    }
    if (qe) {
        fprintf(stderr, "ursa %s: cannot record the job: %s\n", cmd, rstore_last_error(r));
        goto out;
    }
    int epochs = 0;
    for (size_t i = 0; i < nst; i++) epochs += (int)stages[i]->epochs;
    if (json) {
        printf("{\"job\": \"%s\", \"kind\": \"%s\", \"dataset\": ", id, kind);
        util_json_str(stdout, ds);
        printf(", \"arch\": ");
        util_json_str(stdout, arch);
        printf(", \"state\": \"queued\", \"epochs\": %d, \"size\": %u, \"batch\": %u}\n",
               epochs, j.size, j.batch_size);
    } else if (!strcmp(kind, "train"))
        printf("job %s queued: train %s on %s, %zu stage%s, %d epoch%s, %u px, batch %u\n", id,
               arch, ds, nst, nst == 1 ? "" : "s", epochs, epochs == 1 ? "" : "s", j.size,
               j.batch_size);
    else if (!strcmp(kind, "audit"))
        printf("job %s queued: audit of %s in %u folds, each %s for %d epoch%s in %zu stage%s, "
               "%u px, batch %u%s%s%s%s\n", id, ds, j.folds, arch, epochs, epochs == 1 ? "" : "s",
               nst, nst == 1 ? "" : "s", j.size, j.batch_size,
               head_only ? " (the body of its newest model " : base ? " (the recipe of its last "
                                                                      "model)" : "",
               head_only ? from->model : "", head_only ? ")" : "",
               j.pretrained_blob[0] ? "; a pretrained body: the folds fit the head alone on its "
                                      "features, computed once" : "");
    else
        printf("job %s queued: lr_find for %s on %s, %u px, batch %u\n", id, arch, ds, j.size,
               j.batch_size);
    fflush(stdout);
    rc = 0;
out:
    for (size_t i = 0; i < nst; i++) free(stages[i]);
    kq_producer_destroy(p);
    blob_store_destroy(bs);
    if (rc == 0) *rout = r;
    else rstore_destroy(r);
    return rc;
}

int train_cmd(const cfg *c, int argc, char **argv) {
    (void)argv;
    if (argc) {
        fprintf(stderr, "ursa train: unexpected argument \"%s\"\n", argv[0]);
        return 2;
    }
    char id[JOB_ID_MAX + 1];
    rstore *r = NULL;
    int rc = submit(c, "train", "train", NULL, id, &r);
    if (rc) return rc;
    if (!cfg_bool(c, "no-wait")) rc = follow(r, id);
    rstore_destroy(r);
    return rc;
}

/* A registered model's blob into body (65 bytes); 0, or -1 when it has
 * none or Redis failed. */
static int model_blob(rstore *r, const char *model, char *body) {
    const char *fields[] = {"blob", NULL};
    redisReply *v = NULL;
    body[0] = '\0';
    if (registry_fields(r, model, fields, &v)) return -1;
    if (v->elements == 1 && v->element[0]->type == REDIS_REPLY_STRING)
        snprintf(body, 65, "%s", v->element[0]->str);
    freeReplyObject(v);
    return body[0] ? 0 : -1;
}

int audit_cmd(const cfg *c, int argc, char **argv) {
    if (argc) {
        fprintf(stderr, "ursa audit: unexpected argument \"%s\"\n", argv[0]);
        return 2;
    }
    const char *ds = cli_dataset(c, "audit"), *recipe = cfg_str(c, "recipe");
    if (!ds) return 2;
    int last = !strcmp(recipe, "last");
    if (!last && strcmp(recipe, "scratch") && strcmp(recipe, "flags")) {
        fprintf(stderr, "ursa audit: --recipe is last, scratch or flags\n");
        return 2;
    }
    Ursa__TrainJob *base = NULL;
    start_from from = {0};
    if (strcmp(recipe, "flags")) {
        rstore *r0 = cli_redis(c);
        if (!r0) return 1;
        base = job_last_recipe(r0, ds, from.model);
        if (base && last && model_blob(r0, from.model, from.body))
            fprintf(stderr, "ursa audit: model %s has no blob: the folds train as it did (see "
                            "--recipe scratch)\n", from.model);
        rstore_destroy(r0);
        if (!base)
            fprintf(stderr, "ursa audit: dataset %s has no model yet: the recipe is the flags' "
                            "(see --help)\n", ds);
    }
    from.job = base;
    char id[JOB_ID_MAX + 1];
    rstore *r = NULL;
    int rc = submit(c, "audit", "audit", &from, id, &r);
    if (base) ursa__train_job__free_unpacked(base, NULL);
    if (rc) return rc;
    if (!cfg_bool(c, "no-wait")) rc = follow(r, id);
    rstore_destroy(r);
    return rc;
}

/* Reads a job's lr_find curve. */
static int parse_curve(const char *text, double *lr, double *loss, int max) {
    int n = 0;
    for (const char *p = text; p && *p && n < max;) {
        if (sscanf(p, "%lf\t%lf", &lr[n], &loss[n]) == 2) n++;
        p = strchr(p, '\n');
        if (p) p++;
    }
    return n;
}

int lrfind_cmd(const cfg *c, int argc, char **argv) {
    if (argc) {
        fprintf(stderr, "ursa lr-find: unexpected argument \"%s\"\n", argv[0]);
        return 2;
    }
    const char *plot = cfg_str(c, "plot");
    if (*plot && !plot_path_ok(plot)) {
        fprintf(stderr, "ursa lr-find: --plot writes SVG: give a file name ending in .svg\n");
        return 2;
    }
    char id[JOB_ID_MAX + 1];
    rstore *r = NULL;
    int rc = submit(c, "lr-find", "lr_find", NULL, id, &r);
    if (rc) return rc;
    if (cfg_bool(c, "no-wait")) {
        rstore_destroy(r);
        return 0;
    }
    rc = follow(r, id);
    jobinfo j;
    if (rc == 0 && *plot && job_read(r, id, &j) == URSA_OK) {
        if (!strcmp(j.state, "done")) {
            double lr[128], loss[128];
            int n = parse_curve(j.lr_curve, lr, loss, 128);
            if (plot_lr_svg(plot, lr, loss, n, atof(j.suggestion))) {
                fprintf(stderr, "ursa lr-find: cannot write %s\n", plot);
                rc = 1;
            } else {
                printf("plot: %s (%d points)\n", plot, n);
            }
        }
        jobinfo_free(&j);
    }
    rstore_destroy(r);
    return rc;
}

/* ---- jobs and job ----------------------------------------------------------------- */

static void progress_text(const jobinfo *j, char *out, size_t n) {
    int total = total_epochs(j);
    if (!strcmp(j->state, "running") && strcmp(j->kind, "lr_find"))
        snprintf(out, n, "epoch %d/%d", j->epoch, total);
    else if (!strcmp(j->state, "done") && !strcmp(j->kind, "lr_find"))
        snprintf(out, n, "lr %s", j->suggestion);
    else if (!strcmp(j->state, "done"))
        snprintf(out, n, "err %.4f", j->error_rate);
    else
        snprintf(out, n, "-");
}

static int job_delete_cmd(const cfg *c, const char *id);

/* One job as a JSON object's members (no braces). */
static void job_json(FILE *f, const char *id, const jobinfo *j) {
    const char *kv[] = {"job", id, "kind", j->kind, "dataset", j->dataset, "arch", j->arch,
                        "state", j->state, "model", j->model, "error", j->error,
                        "waiting", j->waiting, "worker", j->worker};
    for (size_t k = 0; k < sizeof kv / sizeof *kv; k += 2) {
        fprintf(f, "%s\"%s\": ", k ? ", " : "", kv[k]);
        util_json_str(f, kv[k + 1]);
    }
    fprintf(f, ", \"epoch\": %d, \"epochs\": %d, \"step\": %d, \"steps\": %d", j->epoch,
            total_epochs(j), j->step, j->steps);
    fprintf(f, ", \"error_rate\": ");
    if (!strcmp(j->state, "done") && strcmp(j->kind, "lr_find")) fprintf(f, "%.6g", j->error_rate);
    else fprintf(f, "null");
    fprintf(f, ", \"created_ms\": %lld, \"started_ms\": %lld, \"ended_ms\": %lld, "
               "\"starts\": %d, \"resumes\": %d, \"cancel\": %s",
            j->created, j->started, j->ended, j->starts, j->resumes, j->cancel ? "true" : "false");
}

int jobs_cmd(const cfg *c, int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[0], "delete")) return job_delete_cmd(c, argv[1]);
    if (argc) {
        fprintf(stderr, "usage: ursa jobs [--dataset NAME] | ursa jobs delete JOB\n");
        return 2;
    }
    const char *want = cfg_str(c, "dataset");
    long limit = (long)cfg_int(c, "limit");
    int json = cli_json(c, "jobs");
    if (json < 0) return 2;
    rstore *r = cli_redis(c);
    if (!r) return 1;
    redisReply *rep = NULL;
    if (job_list(r, &rep)) {
        fprintf(stderr, "ursa jobs: %s\n", rstore_last_error(r));
        rstore_destroy(r);
        return 1;
    }
    if (json) printf("{\"jobs\": [");
    else
        printf("%-17s %-8s %-16s %-9s %-10s %-14s %s\n", "JOB", "KIND", "DATASET", "ARCH",
               "STATE", "PROGRESS", "CREATED");
    long shown = 0;
    for (size_t i = rep->elements; i-- > 0 && shown < limit;) {
        jobinfo j;
        if (job_read(r, rep->element[i]->str, &j)) continue;
        if (*want && strcmp(want, j.dataset)) {
            jobinfo_free(&j);
            continue;
        }
        char prog[48], created[32];
        progress_text(&j, prog, sizeof prog);
        fmt_time(j.created, created, sizeof created);
        if (json) {
            printf("%s{", shown ? ", " : "");
            job_json(stdout, rep->element[i]->str, &j);
            printf("}");
        } else {
            printf("%-17s %-8s %-16s %-9s %-10s %-14s %s\n", rep->element[i]->str, j.kind,
                   j.dataset, j.arch, j.state, prog, created);
        }
        shown++;
        jobinfo_free(&j);
    }
    if (json) printf("]}\n");
    else if (!shown) printf("(no jobs%s%s)\n", *want ? " for dataset " : "", want);
    freeReplyObject(rep);
    rstore_destroy(r);
    return 0;
}

static int job_show(rstore *r, const char *id, int json) {
    jobinfo j;
    ursa_err e = job_read(r, id, &j);
    if (e == URSA_ERR_NOT_FOUND) {
        fprintf(stderr, "ursa job: no job %s (see ursa jobs)\n", id);
        return 1;
    }
    if (e) {
        fprintf(stderr, "ursa job: %s\n", rstore_last_error(r));
        return 1;
    }
    if (json) {
        printf("{");
        job_json(stdout, id, &j);
        job_row *rows = NULL;
        int n = 0;
        printf(", \"rows\": [");
        if (job_rows_read(r, id, &rows, &n) == URSA_OK)
            for (int i = 0; i < n; i++)
                printf("%s{\"n\": %d, \"stage\": %d, \"epoch\": %d, \"train_loss\": %.6g, "
                       "\"valid_loss\": %.6g, \"error_rate\": %.6g, \"seconds\": %.3f}",
                       i ? ", " : "", rows[i].n, rows[i].stage, rows[i].epoch, rows[i].train_loss,
                       rows[i].valid_loss, rows[i].error_rate, rows[i].seconds);
        printf("]}\n");
        free(rows);
        jobinfo_free(&j);
        return 0;
    }
    char cr[32], st[32], en[32];
    fmt_time(j.created, cr, sizeof cr);
    fmt_time(j.started, st, sizeof st);
    fmt_time(j.ended, en, sizeof en);
    printf("job %s: %s %s on %s\nstate: %s%s", id, j.kind, j.arch, j.dataset, j.state,
           j.cancel && !strcmp(j.state, "running") ? " (cancel requested)" : "");
    char holder[160] = "";
    int running = !strcmp(j.state, "running");
    if (running && job_lease_holder(r, id, holder, sizeof holder) == URSA_OK && !holder[0])
        printf(", but no worker holds it (%s stopped at epoch %d); a trainer sends it again "
               "within seconds", j.worker, j.epoch); /* jobs.h: job_sweep */
    else if (running)
        printf(" on %s, epoch %d, step %d/%d, loss %.4f", j.worker, j.epoch, j.step, j.steps,
               j.loss);
    if (running && j.waiting[0]) /* paused by its trainer: a full disk (run.c, run_store) */
        printf("\npaused: %s", j.waiting);
    printf("\ncreated %s, started %s, ended %s", cr, st, en);
    int deaths = j.starts - j.stops - (running && holder[0]);
    if (j.starts > 1 || j.resumes) printf(" (started %d times, resumed from a checkpoint %d)",
                                          j.starts, j.resumes);
    if (deaths > 0) printf("\nits worker died %d time%s while running it", deaths,
                           deaths > 1 ? "s" : "");
    printf("\n");
    if (j.spec)
        printf("settings: %u px, batch %u, valid_pct %g, seed %llu, wd %g, label smoothing %g, "
               "augment %s%s%s%s%.12s\n",
               j.spec->size, j.spec->batch_size, j.spec->valid_pct,
               (unsigned long long)j.spec->seed, j.spec->weight_decay, j.spec->label_smoothing,
               j.spec->augment ? "on" : "off", j.spec->tta && j.spec->tta[0] ? ", tta " : "",
               j.spec->tta && j.spec->tta[0] ? j.spec->tta : "",
               j.spec->pretrained_blob[0] ? ", pretrained " : "", j.spec->pretrained_blob);
    if (j.n_train)
        printf("data: %d classes, %d training and %d validation images\n", j.n_classes,
               j.n_train, j.n_valid);
    if (!strcmp(j.kind, "audit")) audit_lines(stdout, &j);
    if (j.manifest[0])
        printf("snapshot %.12s: the dataset as edited up to edit #%s (ursa edits)\n", j.manifest,
               j.edit_seq[0] ? j.edit_seq : "0");
    job_row *rows = NULL;
    int n = 0, shown = 0, last = 0;
    if (job_rows_read(r, id, &rows, &n) == URSA_OK && n) {
        printf("\n");
        print_rows(stdout, &j, rows, n, &shown, &last);
    }
    free(rows);
    print_end(&j);
    if (!strcmp(j.kind, "lr_find") && j.lr_curve && !strcmp(j.state, "done")) {
        double lr[128], loss[128];
        int k = parse_curve(j.lr_curve, lr, loss, 128);
        printf("%d points from lr %.2e to %.2e\n", k, k ? lr[0] : 0, k ? lr[k - 1] : 0);
    }
    jobinfo_free(&j);
    return 0;
}

/* ursa job delete JOB, ursa jobs delete JOB */
static int job_delete_cmd(const cfg *c, const char *id) {
    if (!job_id_valid(id)) {
        fprintf(stderr, "ursa job delete: \"%s\" is not a job id (see ursa jobs)\n", id);
        return 2;
    }
    rstore *r = cli_redis(c);
    if (!r) return 1;
    job_state st;
    ursa_err e = job_delete(r, id, &st);
    int rc = 0;
    if (e == URSA_ERR_NOT_FOUND) {
        fprintf(stderr, "ursa job delete: no job %s (see ursa jobs)\n", id);
        rc = 1;
    } else if (e == URSA_ERR_INVALID) {
        fprintf(stderr, "ursa job delete: job %s is %s: cancel it first (ursa job cancel %s)\n",
                id, job_state_name(st), id);
        rc = 1;
    } else if (e) {
        fprintf(stderr, "ursa job delete: %s\n", rstore_last_error(r));
        rc = 1;
    } else {
        printf("job %s deleted (its model, if it published one, stays: ursa models delete)\n", id);
    }
    rstore_destroy(r);
    return rc;
}

int job_cmd(const cfg *c, int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[0], "delete")) return job_delete_cmd(c, argv[1]);
    int cancel = argc == 2 && !strcmp(argv[0], "cancel");
    if (!(argc == 1 || cancel)) {
        fprintf(stderr, "usage: ursa job JOB | ursa job cancel JOB | ursa job delete JOB\n");
        return 2;
    }
    const char *id = argv[argc - 1];
    if (!job_id_valid(id)) {
        fprintf(stderr, "ursa job: \"%s\" is not a job id (see ursa jobs)\n", id);
        return 2;
    }
    int json = cli_json(c, "job");
    if (json < 0) return 2;
    rstore *r = cli_redis(c);
    if (!r) return 1;
    int rc = 0;
    if (cancel) {
        job_state st;
        int ended = 0;
        ursa_err e = job_cancel(r, id, &st, &ended);
        if (e == URSA_ERR_NOT_FOUND) {
            fprintf(stderr, "ursa job cancel: no job %s\n", id);
            rc = 1;
        } else if (e) {
            fprintf(stderr, "ursa job cancel: %s\n", rstore_last_error(r));
            rc = 1;
        } else if (st == JOB_QUEUED) {
            printf("job %s cancelled before it started\n", id);
        } else if (st == JOB_RUNNING && ended) {
            printf("job %s cancelled: no worker was running it\n", id);
        } else if (st == JOB_RUNNING) {
            printf("job %s: cancel requested; its worker stops it within a few seconds\n", id);
        } else {
            printf("job %s has already ended (%s)\n", id, job_state_name(st));
        }
    } else {
        rc = job_show(r, id, json);
    }
    rstore_destroy(r);
    return rc;
}
