/* audit.c: the audit job (`ursa audit`): which images of a dataset are
 * likely mislabeled, near-duplicates or of something else.
 *
 * A model never judges an image it trained on: the images are split into
 * K folds by content hash and seed, and K models are trained with the job's
 * recipe, each on the other folds, so every image gets out-of-sample class
 * probabilities. Confident learning (common/learn/label_issues.h) turns them into
 * label issues (with a suggested label) and outliers. Near-duplicates are
 * pairs whose penultimate-layer features (the input of the last linear
 * layer, centred) have a cosine similarity over the job's threshold, within
 * and across labels; features come from the last fold's model.
 *
 * With a pretrained body (--pretrained, or the recipe of a model that had
 * one) the folds are cheap: the body is frozen, so its pooled features of
 * every image are computed once, and each fold fits only the head on them
 * (every stage of the recipe, without augmentation); near-duplicates are
 * then found in the body's features.
 *
 * Restartable as a training job is: each fold's probabilities go to a blob
 * named in the job (fold<k>) once the fold is done, the fold being trained
 * checkpoints every epoch, and the last fold's checkpoint stays until the
 * job ends (its model gives the features). The result is a blob of
 * label_issues.h's rows, named in the job (audit) and in the dataset's
 * audit record (dataset_edits.h) for the version it audited. */
#include "audit.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataset_edits.h"
#include "label_issues.h"
#include "log.h"
#include "run.h"
#include "util.h"

/* held-out images a fold's training validates on after each epoch: all of
 * them cost a third of the fold's time at 10,000 */
#define AUDIT_VALID_MAX 2000

/* the most epochs a fold trains when --min-steps scales its recipe up: a
 * dataset of a few dozen images gets a long fold, not an endless one */
#define AUDIT_FOLD_EPOCHS_MAX 50

/* The fold of an image: from its content hash and the seed only, so an
 * image keeps its fold when the audit runs again. */
static int fold_of(const char *src, uint64_t seed, int k) {
    uint64_t h = 0;
    for (int i = 0; i < 16 && src[i]; i++) {
        char c = src[i];
        h = h << 4 | (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    h ^= seed * 0x9e3779b97f4a7c15ull;
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 29;
    return (int)(h % (uint64_t)k);
}

/* The value features are read at: the input of the model's flatten (the
 * concat pool's output, a body's features) when pooled, else the input of
 * its last linear layer (the penultimate features). */
static int feature_value(const nn_model *m, int pooled) {
    if (pooled) {
        for (int i = 0; i < m->nnode; i++)
            if (m->node[i].op == NN_FLATTEN) return m->node[i].in[0];
    } else {
        for (int i = m->nnode - 1; i >= 0; i--)
            if (m->node[i].op == NN_LINEAR) return m->node[i].in[0];
    }
    return -1;
}

/* Runs items idx[0..n) through the model as served (BN folded): images, or
 * their rows of R->feat when the model is a head on a body's features.
 * Class probabilities go into probs (n x nclass) and, when feat is not
 * NULL, the features (feature_value) into a new *feat (n x *fdim). An image
 * that cannot be read gets uniform probabilities and zero features. 0, or
 * -1 when out of memory. */
static int predict(run *R, const int *idx, int n, float *probs, int pooled, float **feat,
                   int *fdim) {
    nn_model f;
    nn_exec *e = NULL;
    int bs = 64, size = R->m.meta.size, c = R->nclass, rc = -1;
    if (nn_fuse_for_inference(&R->m, &f) != URSA_OK) return -1;
    size_t per = (size_t)f.in_c * size * size;
    float *x = malloc(sizeof(float) * per * (size_t)bs);
    int *which = malloc(sizeof(int) * (size_t)bs), pv = feature_value(&f, pooled), d = 0;
    if (!x || !which || pv < 0 || nn_exec_new(&f, bs, size, size, 0, &e) != URSA_OK) goto out;
    if (feat) {
        d = f.vc[pv];
        if (!(*feat = calloc((size_t)n * (size_t)d, sizeof(float)))) goto out;
        *fdim = d;
    }
    for (int v = 0; v < n;) {
        int k = 0;
        for (; v < n && k < bs; v++) {
            img_rgb im;
            if (R->feat) {
                memcpy(x + per * k, R->feat + (size_t)idx[v] * per, sizeof(float) * per);
            } else if (run_load_image(R, idx[v], &im)) {
                for (int j = 0; j < c; j++) probs[(size_t)v * c + j] = 1.0f / (float)c;
                continue;
            } else {
                nn_preprocess(&im, &f.meta, 3, x + per * k);
                img_free(&im);
            }
            which[k++] = v;
        }
        if (!k) continue;
        float *o = (float *)nn_forward(e, x, k);
        nn_softmax(o, k, c);
        for (int j = 0; j < k; j++)
            memcpy(probs + (size_t)which[j] * c, o + (size_t)j * c, sizeof(float) * (size_t)c);
        if (feat) {
            const float *fv = nn_value(e, pv, NULL, NULL, NULL);
            for (int j = 0; j < k; j++)
                memcpy(*feat + (size_t)which[j] * d, fv + (size_t)j * d, sizeof(float) * (size_t)d);
        }
        if (R->tj->stop) break; /* the caller sees the stop */
    }
    rc = 0;
out:
    nn_exec_free(e);
    nn_model_free(&f);
    free(x);
    free(which);
    return rc;
}

/* An audit of a pretrained body: the pooled features of every image through
 * the frozen body, computed once (validation transform) and kept in a blob
 * named in the job (features, fdim) so a restart does not compute them
 * again. Sets R->feat and R->fdim. TJ_DONE, or the job's outcome. */
static tjob_outcome body_features(run *R, int *idx) {
    size_t n = R->nim;
    char key[65], fd[16];
    if (run_field(R, "features", key, sizeof key) || run_field(R, "fdim", fd, sizeof fd))
        return run_redis_down(R, "reading the job");
    int fdim = atoi(fd);
    if (key[0] && fdim > 0 && fdim <= 65536) {
        char *data = NULL;
        size_t len = 0, want = sizeof(float) * n * (size_t)fdim;
        if (blob_get(R->tj->bs, key, want + 1, &data, &len) == URSA_OK && len == want) {
            R->feat = (float *)(void *)data; /* malloc'd: float-aligned */
            R->fdim = fdim;
            ULOG_INFO("event=audit_features job=%s images=%zu dim=%d note=\"computed before\"",
                      R->tj->id, n, fdim);
            return TJ_DONE;
        }
        free(data); /* lost: computed again */
    }
    if (run_build_model(R)) return run_fail(R);
    float *junk = malloc(sizeof(float) * n * (size_t)R->nclass), *feat = NULL;
    for (size_t i = 0; i < n; i++) idx[i] = (int)i;
    int64_t t0 = util_mono_ms();
    int bad = !junk || predict(R, idx, (int)n, junk, 1, &feat, &fdim);
    free(junk);
    if (bad) {
        free(feat);
        snprintf(R->why, sizeof R->why, "out of memory computing the body's features");
        return run_fail(R);
    }
    if (R->tj->stop) {
        free(feat);
        return R->cancelled ? run_cancelled(R) : TJ_STOPPED;
    }
    snprintf(fd, sizeof fd, "%d", fdim);
    const char *kv[] = {"features", key, "fdim", fd, NULL};
    char serr[512];
    run_blob rb = {feat, sizeof(float) * n * (size_t)fdim, key};
    ursa_err se = run_store(R, "the body's features", run_store_blob, &rb, serr, sizeof serr);
    if (se == URSA_ERR_SHUTDOWN) {
        free(feat);
        return R->cancelled ? run_cancelled(R) : TJ_STOPPED;
    }
    if (se || job_update(R->r, R->tj->id, kv) != URSA_OK) {
        free(feat);
        snprintf(R->tj->reason, sizeof R->tj->reason, "cannot store the body's features");
        return TJ_RETRY;
    }
    R->feat = feat;
    R->fdim = fdim;
    ULOG_INFO("event=audit_features job=%s images=%zu dim=%d ms=%lld blob=%.12s", R->tj->id, n,
              fdim, (long long)(util_mono_ms() - t0), key);
    return TJ_DONE;
}

/* Near-duplicates: for every image the most similar earlier image (by
 * index) over the threshold; dup[j] gets that image (or -1) and sim[j] the
 * cosine similarity of the centred features. 0, or -1 when out of memory. */
static int duplicates(float *feat, int n, int d, double thr, int *dup, float *sim) {
    double *mean = calloc((size_t)d, sizeof *mean);
    enum { B = 256 };
    float *s = malloc(sizeof(float) * B * (size_t)n);
    if (!mean || !s) {
        free(mean);
        free(s);
        return -1;
    }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < d; k++) mean[k] += feat[(size_t)i * d + k];
    for (int k = 0; k < d; k++) mean[k] /= n ? n : 1;
    for (int i = 0; i < n; i++) {
        float *v = feat + (size_t)i * d;
        double nn2 = 0;
        for (int k = 0; k < d; k++) {
            v[k] -= (float)mean[k];
            nn2 += (double)v[k] * v[k];
        }
        float inv = nn2 > 1e-20 ? (float)(1 / sqrt(nn2)) : 0;
        for (int k = 0; k < d; k++) v[k] *= inv;
        dup[i] = -1;
        sim[i] = 0;
    }
    /* row block [i0, i0 + B) against the images from i0 on (the pairs
     * before it were seen from the other side) */
    for (int i0 = 0; i0 < n; i0 += B) {
        int m = n - i0 < B ? n - i0 : B, w = n - i0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, w, d, 1.0f,
                    feat + (size_t)i0 * d, d, feat + (size_t)i0 * d, d, 0.0f, s, w);
        for (int a = 0; a < m; a++) {
            int i = i0 + a;
            const float *row = s + (size_t)a * w; /* row[j - i0]: i against j */
            for (int j = i + 1; j < n; j++)
                if (row[j - i0] >= thr && row[j - i0] > sim[j]) {
                    sim[j] = row[j - i0];
                    dup[j] = i;
                }
        }
    }
    free(mean);
    free(s);
    return 0;
}

/* A fold's probabilities, as stored: raw float32 of its images in order. */
static int fold_load(run *R, int f, const int *idx, int n, float *probs) {
    char field[16];
    snprintf(field, sizeof field, "fold%d", f);
    char key[65];
    if (run_field(R, field, key, sizeof key)) return -1;
    if (!key[0]) return 0;
    char *data = NULL;
    size_t len = 0, want = sizeof(float) * (size_t)n * (size_t)R->nclass;
    if (blob_get(R->tj->bs, key, want + 1, &data, &len) != URSA_OK || len != want) {
        free(data);
        return 0; /* lost or not this split's: the fold runs again */
    }
    for (int i = 0; i < n; i++)
        memcpy(probs + (size_t)idx[i] * R->nclass, data + sizeof(float) * (size_t)i * R->nclass,
               sizeof(float) * (size_t)R->nclass);
    free(data);
    return 1;
}

/* 0, -1 on a failure, -2 when stopped or cancelled while waiting for space */
static int fold_store(run *R, int f, const float *fp, int n) {
    char key[65], field[16], what[48], err[512];
    run_blob rb = {fp, sizeof(float) * (size_t)n * (size_t)R->nclass, key};
    snprintf(what, sizeof what, "fold %d's results", f + 1);
    ursa_err e = run_store(R, what, run_store_blob, &rb, err, sizeof err);
    if (e) return e == URSA_ERR_SHUTDOWN ? -2 : -1;
    snprintf(field, sizeof field, "fold%d", f);
    const char *kv[] = {field, key, NULL};
    return job_update(R->r, R->tj->id, kv) == URSA_OK ? 0 : -1;
}

/* An audit's working set, over the images of the snapshot (n of them, C
 * classes); audit_free frees it. */
typedef struct {
    int K;          /* folds */
    double thr;     /* near-duplicate threshold */
    size_t n;
    int C;
    int *label, *fold; /* each image's class and fold */
    int *idx;          /* scratch: a fold's images, or every image */
    float *probs;      /* n x C out-of-sample class probabilities */
    float *fp;         /* a fold's predictions, before they are stored */
    float *feat;       /* the last fold's model's features of every image (n x fdim) */
    int fdim;
    int *dup;          /* each image's near-duplicate (or -1), and its similarity */
    float *sim;
    li_result *res;
    li_row *rows;
    size_t nrows;
    long *per_class;
    uint32_t per_fold; /* epochs of one fold */
    uint32_t recipe_epochs, steps_per_epoch; /* the spec's, and a fold's steps in one */
    int trained_last;  /* the last fold's model was trained in this run */
    long wrong, issues, nlabel, ndup, nout;
} audit;

static void audit_free(audit *A) {
    free(A->label), free(A->fold), free(A->idx), free(A->dup), free(A->probs), free(A->fp);
    free(A->feat), free(A->sim), free(A->res), free(A->rows), free(A->per_class);
}

/* An audit sized to its data: when a fold would train fewer than the
 * job's min_steps optimizer steps, the stages' epochs (R->epochs) are
 * scaled up in proportion, each stage keeping at least its own and the
 * fold at most AUDIT_FOLD_EPOCHS_MAX; A->per_fold gets the fold's epochs.
 * Steps are counted as training takes them, floor(n_train / batch) an
 * epoch (the last partial batch is dropped), on the fold with the fewest
 * images to train on, so that every fold reaches the minimum. */
static void fold_budget(run *R, audit *A) {
    const Ursa__TrainJob *s = R->spec;
    int held[20] = {0}, ntr = (int)A->n; /* K <= 20 */
    for (size_t i = 0; i < A->n; i++) held[A->fold[i]]++;
    for (int f = 0; f < A->K; f++)
        if (held[f] && (int)A->n - held[f] < ntr) ntr = (int)A->n - held[f];
    int bs = (int)s->batch_size < ntr ? (int)s->batch_size : ntr;
    A->steps_per_epoch = (uint32_t)(ntr / (bs > 0 ? bs : 1));
    uint32_t E = 0, spe = A->steps_per_epoch ? A->steps_per_epoch : 1;
    for (size_t i = 0; i < s->n_stages; i++) E += R->epochs[i];
    A->recipe_epochs = A->per_fold = E;
    if (!s->min_steps || (uint64_t)E * spe >= s->min_steps || E >= AUDIT_FOLD_EPOCHS_MAX)
        return;
    uint32_t T = (s->min_steps + spe - 1) / spe, sum = 0;
    if (T > AUDIT_FOLD_EPOCHS_MAX) T = AUDIT_FOLD_EPOCHS_MAX;
    double left[RUN_STAGES_MAX];
    for (size_t i = 0; i < s->n_stages; i++) { /* T > E: each gets at least its own */
        double exact = (double)R->epochs[i] * T / E;
        R->epochs[i] = (uint32_t)exact;
        left[i] = exact - R->epochs[i];
        sum += R->epochs[i];
    }
    while (sum < T) { /* the largest remainders, one epoch each */
        size_t best = 0;
        for (size_t i = 1; i < s->n_stages; i++)
            if (left[i] > left[best]) best = i;
        R->epochs[best]++;
        left[best] = -1;
        sum++;
    }
    A->per_fold = T;
}

/* Ends the job for a stop or a cancel. */
static tjob_outcome stopped(run *R) { return R->cancelled ? run_cancelled(R) : TJ_STOPPED; }

/* The checks the job and the dataset must pass, the working set, each
 * image's fold and the job's epochs. 0, or 1 when the job must end now
 * with *o. */
static int audit_setup(run *R, audit *A, tjob_outcome *o) {
    const Ursa__TrainJob *s = R->spec;
    A->K = s->folds ? (int)s->folds : 4;
    A->thr = s->dup_threshold > 0 ? s->dup_threshold : 0.98;
    if (A->K < 2 || A->K > 20) {
        snprintf(R->why, sizeof R->why, "folds must be within 2..20, not %d", A->K);
        *o = run_fail(R);
        return 1;
    }
    if (run_classes(R)) {
        *o = run_fail(R);
        return 1;
    }
    size_t n = A->n = R->nim;
    int C = A->C = R->nclass, K = A->K;
    A->label = malloc(sizeof(int) * n);
    A->fold = malloc(sizeof(int) * n);
    A->idx = malloc(sizeof(int) * n);
    A->dup = malloc(sizeof(int) * n);
    A->probs = calloc(n * (size_t)C, sizeof(float));
    A->sim = malloc(sizeof(float) * n);
    A->res = calloc(n, sizeof *A->res);
    A->rows = calloc(2 * n + 1, sizeof *A->rows); /* a label issue may also be a duplicate */
    A->per_class = calloc((size_t)C, sizeof(long));
    if (!A->label || !A->fold || !A->idx || !A->dup || !A->probs || !A->sim || !A->res ||
        !A->rows || !A->per_class) {
        snprintf(R->why, sizeof R->why, "out of memory auditing %zu images", n);
        *o = run_fail(R);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        A->label[i] = run_class_of(R, R->im[i].label);
        A->fold[i] = fold_of(R->im[i].src, s->seed, K);
        A->per_class[A->label[i]]++;
    }
    for (int c = 0; c < C; c++)
        if (A->per_class[c] < K) {
            snprintf(R->why, sizeof R->why,
                     "class \"%s\" has %ld images; an audit of %d folds needs at least %d",
                     R->classes[c], A->per_class[c], K, K);
            *o = run_fail(R);
            return 1;
        }
    fold_budget(R, A);
    R->total_epochs = (int)A->per_fold * K;
    R->audit = 1;
    char fe[16], fs[16], nc[16];
    snprintf(fe, sizeof fe, "%u", A->per_fold);
    snprintf(fs, sizeof fs, "%u", A->per_fold * A->steps_per_epoch);
    snprintf(nc, sizeof nc, "%d", C);
    /* what `ursa job` shows: the folds' budget and (with the error) reliability */
    const char *kv[] = {"fold_epochs", fe, "fold_steps", fs, "n_classes", nc, NULL};
    if (job_update(R->r, R->tj->id, kv)) {
        *o = run_redis_down(R, "recording the folds' budget");
        return 1;
    }
    uint32_t re = A->recipe_epochs, rs = re * A->steps_per_epoch;
    if (A->per_fold > re)
        ULOG_INFO("event=audit_budget job=%s fold_epochs=%u fold_steps=%s recipe_epochs=%u "
                  "recipe_steps=%u min_steps=%u note=\"each fold trains %u epochs (%s steps): the "
                  "recipe's %u epoch%s (%u steps) %s fewer than --min-steps %u\"",
                  R->tj->id, A->per_fold, fs, re, rs, s->min_steps, A->per_fold, fs, re,
                  re == 1 ? "" : "s", rs, re == 1 ? "is" : "are", s->min_steps);
    return 0;
}

/* Fold f's split: its images held out (A->idx and R->va_*, the latter cut
 * to AUDIT_VALID_MAX), the others to train on (R->tr_*). Returns the
 * number held out. */
static int fold_split(run *R, audit *A, int f) {
    int nf = 0;
    R->ntr = R->nva = 0;
    for (size_t i = 0; i < A->n; i++) {
        if (A->fold[i] == f) {
            A->idx[nf++] = (int)i;
            R->va_idx[R->nva] = (int)i;
            R->va_lab[R->nva++] = A->label[i];
        } else {
            R->tr_idx[R->ntr] = (int)i;
            R->tr_lab[R->ntr++] = A->label[i];
        }
    }
    /* the epoch table's valid columns from a sample of the held-out fold
     * (the images are in id order: content hashes, so any run of them is
     * a fair sample); the out-of-fold predictions take all of it */
    if (R->nva > AUDIT_VALID_MAX) R->nva = AUDIT_VALID_MAX;
    return nf;
}

/* The out-of-fold pass: fold f's model on its nf held-out images (A->idx)
 * into A->fp. The last fold's model sees every image instead (unless the
 * folds are heads on a body's features): its held-out fold's probabilities,
 * and everyone's features for the near-duplicates. 0, or -1 when out of
 * memory. */
static int fold_predict(run *R, audit *A, int f, int nf) {
    size_t n = A->n;
    int C = A->C;
    free(A->fp);
    if (!(A->fp = malloc(sizeof(float) * (size_t)nf * C))) return -1;
    if (!(f == A->K - 1 && !R->feat && n > 1)) return predict(R, A->idx, nf, A->fp, 0, NULL, NULL);
    float *all = malloc(sizeof(float) * n * (size_t)C);
    int *every = malloc(sizeof(int) * n);
    int bad = !all || !every;
    for (size_t i = 0; !bad && i < n; i++) every[i] = (int)i;
    bad = bad || predict(R, every, (int)n, all, 0, &A->feat, &A->fdim);
    for (int i = 0; !bad && i < nf; i++)
        memcpy(A->fp + (size_t)i * C, all + (size_t)A->idx[i] * C, sizeof(float) * (size_t)C);
    free(all);
    free(every);
    return bad ? -1 : 0;
}

/* One fold: its model trained on the other folds (resuming from its
 * checkpoint), its held-out images' probabilities into A->probs and a blob.
 * A fold done before is skipped, but for the last one when its model must
 * give the features. 0, or 1 when the job must end now with *o. */
static int audit_fold(run *R, audit *A, int f, tjob_outcome *o) {
    int K = A->K, C = A->C;
    int nf = fold_split(R, A, f);
    R->fold = f;
    R->epoch_base = A->per_fold * (uint32_t)f;
    snprintf(R->ckpt, sizeof R->ckpt, "%s/%s.f%d.ckpt", R->tj->ckpt_dir, R->tj->id, f);
    int have = nf ? fold_load(R, f, A->idx, nf, A->probs) : 1;
    if (have < 0) {
        *o = run_redis_down(R, "reading the folds");
        return 1;
    }
    if (have && (R->feat || f < K - 1)) return 0; /* else its model gives the features */
    char kf[16], kfolds[16];
    snprintf(kf, sizeof kf, "%d", f + 1);
    snprintf(kfolds, sizeof kfolds, "%d", K);
    const char *kv[] = {"fold", kf, "folds", kfolds, NULL};
    job_update(R->r, R->tj->id, kv);
    ULOG_INFO("event=audit_fold job=%s fold=%d/%d train=%d held_out=%d%s", R->tj->id, f + 1,
              K, R->ntr, R->nva, have ? " note=\"done before: the model for features\"" : "");
    if (!R->nva || !R->ntr) return 0; /* a tiny dataset: nothing to hold out */
    run_learner_down(R);
    if (run_build_model(R)) {
        *o = run_fail(R);
        return 1;
    }
    if (run_fit_stages(R, o)) return 1;
    A->trained_last = f == K - 1;
    if (have) return 0;
    if (fold_predict(R, A, f, nf)) {
        snprintf(R->why, sizeof R->why, "out of memory predicting fold %d", f + 1);
        *o = run_fail(R);
        return 1;
    }
    if (R->tj->stop) {
        *o = stopped(R);
        return 1;
    }
    for (int i = 0; i < nf; i++)
        memcpy(A->probs + (size_t)A->idx[i] * C, A->fp + (size_t)i * C, sizeof(float) * (size_t)C);
    int fs = fold_store(R, f, A->fp, nf);
    if (fs == -2) {
        *o = R->cancelled ? run_cancelled(R) : TJ_STOPPED;
        return 1;
    }
    if (fs) {
        snprintf(R->tj->reason, sizeof R->tj->reason, "cannot store fold %d's results", f + 1);
        *o = TJ_RETRY;
        return 1;
    }
    if (f < K - 1) run_ckpt_drop(R);
    return 0;
}

/* Near-duplicates in the frozen body's features, or in the last fold's
 * model's (computed now when they were not in its out-of-fold pass). 0, or
 * 1 when the job must end now with *o. */
static int audit_duplicates(run *R, audit *A, tjob_outcome *o) {
    size_t n = A->n;
    for (size_t i = 0; i < n; i++) A->idx[i] = (int)i, A->dup[i] = -1;
    if (R->feat && n > 1) {
        if (duplicates(R->feat, (int)n, R->fdim, A->thr, A->dup, A->sim)) {
            snprintf(R->why, sizeof R->why, "out of memory comparing %zu images", n);
            *o = run_fail(R);
            return 1;
        }
    } else if (A->trained_last && n > 1) {
        float *junk = A->feat ? NULL : malloc(sizeof(float) * n * (size_t)A->C);
        int bad = (!A->feat &&
                   (!junk || predict(R, A->idx, (int)n, junk, 0, &A->feat, &A->fdim))) ||
                  duplicates(A->feat, (int)n, A->fdim, A->thr, A->dup, A->sim);
        free(junk);
        if (bad) {
            snprintf(R->why, sizeof R->why, "out of memory comparing %zu images", n);
            *o = run_fail(R);
            return 1;
        }
        if (R->tj->stop) {
            *o = stopped(R);
            return 1;
        }
    }
    return 0;
}

/* Confident learning over the out-of-sample probabilities, and the
 * out-of-fold error; label issues (with their suggestion), outliers and
 * near-duplicates become A->rows, sorted. */
static void audit_rows(run *R, audit *A) {
    size_t n = A->n;
    int C = A->C;
    A->issues = li_find(A->probs, A->label, n, C, A->res, NULL);
    for (size_t i = 0; i < n; i++) {
        const float *p = A->probs + i * (size_t)C;
        int best = 0;
        for (int c = 1; c < C; c++)
            if (p[c] > p[best]) best = c;
        A->wrong += best != A->label[i];
    }
    for (size_t i = 0; i < n; i++) {
        const ds_image *d = &R->im[i];
        for (int pass = 0; pass < 2; pass++) {
            li_row *w = &A->rows[A->nrows];
            snprintf(w->image, sizeof w->image, "%.32s", d->src);
            snprintf(w->jpeg, sizeof w->jpeg, "%s", d->jpeg);
            snprintf(w->given, sizeof w->given, "%s", d->label);
            if (pass == 0 && A->res[i].kind == LI_LABEL) {
                snprintf(w->suggested, sizeof w->suggested, "%s", R->classes[A->res[i].suggested]);
                snprintf(w->kind, sizeof w->kind, "label");
                w->score = 1 - A->res[i].quality;
                A->nlabel++;
            } else if (pass == 0 && A->res[i].kind == LI_OUTLIER && A->dup[i] < 0) {
                const float *p = A->probs + i * (size_t)C;
                float top = 0;
                for (int c = 0; c < C; c++) top = p[c] > top ? p[c] : top;
                snprintf(w->suggested, sizeof w->suggested, "%s", d->label);
                snprintf(w->kind, sizeof w->kind, "outlier");
                w->score = 1 - top;
                A->nout++;
            } else if (pass == 1 && A->dup[i] >= 0) { /* its own row, beside a label issue */
                const ds_image *p = &R->im[A->dup[i]];
                snprintf(w->suggested, sizeof w->suggested, "%s", p->label);
                snprintf(w->kind, sizeof w->kind, "duplicate");
                snprintf(w->partner, sizeof w->partner, "%.32s", p->src);
                snprintf(w->partner_jpeg, sizeof w->partner_jpeg, "%s", p->jpeg);
                w->score = A->sim[i] > 1 ? 1 : A->sim[i];
                A->ndup++;
            } else {
                continue;
            }
            A->nrows++;
        }
    }
    li_rows_sort(A->rows, A->nrows);
}

/* The rows into a blob, the audit recorded for the dataset version it
 * audited, and the job done. */
static tjob_outcome audit_store(run *R, audit *A) {
    const Ursa__TrainJob *s = R->spec;
    size_t n = A->n;
    char manifest[65] = "", seq[24] = "";
    run_field(R, "manifest", manifest, sizeof manifest); /* "" when Redis fails: the row says so */
    run_field(R, "edit_seq", seq, sizeof seq);
    if (!seq[0]) snprintf(seq, sizeof seq, "0");
    char head[512], key[65], oe[32];
    double err = n ? (double)A->wrong / (double)n : 0.0;
    snprintf(oe, sizeof oe, "%.6f", err);
    snprintf(head, sizeof head,
             "ursa audit v1 dataset=%s job=%s images=%zu classes=%d folds=%d edit_seq=%s "
             "manifest=%s label=%ld duplicate=%ld outlier=%ld oof_error=%s",
             s->dataset, R->tj->id, n, A->C, A->K, seq, manifest, A->nlabel, A->ndup, A->nout,
             oe);
    size_t len = 0;
    char *tsv = li_rows_tsv(A->rows, A->nrows, head, &len);
    char serr[512];
    run_blob rb = {tsv, len, key};
    ursa_err se = tsv ? run_store(R, "the audit's result", run_store_blob, &rb, serr, sizeof serr)
                      : URSA_ERR_NOMEM;
    if (se == URSA_ERR_SHUTDOWN) {
        free(tsv);
        return R->cancelled ? run_cancelled(R) : TJ_STOPPED;
    }
    if (se) {
        free(tsv);
        snprintf(R->tj->reason, sizeof R->tj->reason, "cannot store the audit's result");
        return TJ_RETRY;
    }
    free(tsv);
    char nl[24], nd[24], no[24];
    snprintf(nl, sizeof nl, "%ld", A->nlabel);
    snprintf(nd, sizeof nd, "%ld", A->ndup);
    snprintf(no, sizeof no, "%ld", A->nout);
    if (manifest[0] && ds_audit_record(R->r, s->dataset, R->tj->id, manifest))
        return run_redis_down(R, "recording the audit");
    const char *kv[] = {"audit", key, "n_label", nl, "n_duplicate", nd, "n_outlier", no,
                        "error_rate", oe, NULL};
    int moved = 0;
    if (job_set_state(R->r, R->tj->id, JOB_DONE, kv, &moved))
        return run_redis_down(R, "ending the job");
    if (moved) run_progress(R, "done", NULL, NULL);
    run_ckpt_drop(R);
    ULOG_INFO("event=audit_done job=%s dataset=%s images=%zu label_issues=%ld (li_find %ld) "
              "duplicates=%ld outliers=%ld oof_error=%s blob=%.12s",
              R->tj->id, s->dataset, n, A->nlabel, A->issues, A->ndup, A->nout, oe, key);
    int k = snprintf(R->tj->reason, sizeof R->tj->reason,
                     "done: %ld label issues, %ld duplicates, %ld outliers", A->nlabel, A->ndup,
                     A->nout);
    if (ds_audit_unreliable(err, A->C)) {
        char why[160];
        snprintf(why, sizeof why,
                 "out-of-fold error %.0f%%: the suggestions are unreliable (train longer, or a "
                 "better model first)", 100 * err);
        ULOG_WARN("event=audit_unreliable job=%s oof_error=%s classes=%d note=\"%s\"", R->tj->id,
                  oe, A->C, why);
        snprintf(R->tj->reason + k, sizeof R->tj->reason - (size_t)k, "; %s", why);
    }
    return TJ_DONE;
}

tjob_outcome audit_run(run *R) {
    audit A = {0};
    tjob_outcome o = TJ_DONE;
    if (audit_setup(R, &A, &o)) goto out;
    const char *body = R->spec->pretrained_blob;
    if (body && body[0]) { /* the folds fit the head alone */
        if ((o = body_features(R, A.idx)) != TJ_DONE || R->why[0]) goto out; /* or it failed */
        run_learner_down(R);
    }
    for (int f = 0; f < A.K; f++)
        if (audit_fold(R, &A, f, &o)) goto out;
    /* the last fold's loaders stop: their threads read R->feat, which the
     * duplicates' pass centres in place and the end frees (ThreadSanitizer
     * saw both); its model stays for that pass */
    run_learner_down(R);
    if (audit_duplicates(R, &A, &o)) goto out;
    audit_rows(R, &A);
    o = audit_store(R, &A);
out:
    run_learner_down(R); /* a fold that ended the job early: its loaders too */
    audit_free(&A);
    free(R->feat);
    R->feat = NULL;
    return o;
}
