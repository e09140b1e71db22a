/* job.c: running one training or lr_find job (an audit: audit.c); see job.h. */
#include "job.h"
#include "run.h"
#include "audit.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataset.h"
#include "learner.h"
#include "log.h"
#include "metrics.h"
#include "msg.h"
#include "registry.h"
#include "rstore.h"
#include "topics.h"
#include "util.h"

/* ---- small helpers ------------------------------------------------------------------ */

/* the running job's progress on /metrics */
static struct {
    metrics_series *epoch, *epochs, *step, *steps, *progress;
} met;

void tjob_register_metrics(void) {
    met.epoch = metrics_plain_gauge("job_epoch", "Epochs the running (or last) job has finished.");
    met.epochs = metrics_plain_gauge(
        "job_epochs", "Epochs of the running (or last) job in all (an audit: of every fold).");
    met.step = metrics_plain_gauge("job_step", "Batches done in the running job's epoch.");
    met.steps = metrics_plain_gauge("job_steps", "Batches in the running job's epoch.");
    met.progress = metrics_plain_gauge(
        "job_progress_ratio",
        "The share of the running (or last) job's epochs done, the current one in part (0 to 1).");
}

/* Sets the progress gauges: plain atomic stores, so every batch may. */
static void show_progress(run *R, int step, int steps) {
    double done = (double)(R->epoch_base + R->pos.done);
    metrics_set(met.epoch, done);
    metrics_set(met.epochs, R->total_epochs);
    metrics_set(met.step, step);
    metrics_set(met.steps, steps);
    if (R->total_epochs > 0 && steps > 0)
        metrics_set(met.progress, (done + (double)step / steps) / R->total_epochs);
}

void run_progress(run *R, const char *state, const nn_epoch_row *row, const char *error) {
    const Ursa__TrainJob *s = R->spec;
    Ursa__Header h;
    char id[33];
    msg_header_init(&h, id, s->dataset, R->tj->id);
    Ursa__TrainProgress m = URSA__TRAIN_PROGRESS__INIT;
    m.header = &h;
    m.job_id = R->tj->id;
    m.state = (char *)state;
    m.stage = R->pos.stage + 1;
    m.epoch = R->epoch_base + R->pos.done;
    m.epochs = (uint32_t)R->total_epochs;
    if (row) {
        m.train_loss = row->train_loss;
        m.valid_loss = row->valid_loss;
        m.error_rate = row->error_rate;
        m.seconds = row->seconds;
    }
    m.error = (char *)(error ? error : "");
    void *buf;
    size_t len;
    if (msg_pack(&m.base, &buf, &len) != URSA_OK) return;
    /* progress is a stream of news: at most once is enough, Redis has the truth */
    kq_produce(R->tj->p, TOPIC_TRAIN_PROGRESS, R->tj->id, strlen(R->tj->id), buf, len, NULL, 0,
               NULL, NULL);
    free(buf);
}

static int ckpt_in_blobs(const run *R) { return !R->tj->ckpt_dir || !*R->tj->ckpt_dir; }

static void ckpt_field(const run *R, char *out, size_t n) {
    const char *b = strrchr(R->ckpt, '/');
    snprintf(out, n, "ckpt:%s", b ? b + 1 : R->ckpt);
}

ursa_err run_ckpt_save(run *R, char *err, size_t n) {
    if (!ckpt_in_blobs(R))
        return nn_checkpoint_save(&R->m, &R->pos, sizeof R->pos, R->ckpt, err, n);
    uint8_t *buf = NULL;
    size_t len = 0;
    char field[300], old[80], key[65];
    ursa_err e = nn_checkpoint_encode(&R->m, &R->pos, sizeof R->pos, &buf, &len);
    if (e) {
        snprintf(err, n, "%s: %s", R->ckpt, ursa_err2str(e));
        return e;
    }
    e = blob_put(R->tj->bs, buf, len, key);
    free(buf);
    if (e) {
        blob_unwritable_why(R->tj->bs, e, err, n);
        return e;
    }
    ckpt_field(R, field, sizeof field);
    if (run_field(R, field, old, sizeof old)) old[0] = '\0';
    const char *kv[] = {field, key, NULL};
    if (job_update(R->r, R->tj->id, kv)) {
        snprintf(err, n, "recording checkpoint %.12s: Redis: %s", key, rstore_last_error(R->r));
        return URSA_ERR_UNAVAILABLE;
    }
    if (old[0] && strcmp(old, key) != 0) blob_delete(R->tj->bs, old);
    return URSA_OK;
}

ursa_err run_ckpt_load(run *R, void *pos, uint32_t poslen, char *err, size_t n) {
    if (!ckpt_in_blobs(R)) {
        if (access(R->ckpt, F_OK) != 0) return URSA_ERR_NOT_FOUND;
        return nn_checkpoint_load(&R->m, pos, poslen, R->ckpt, err, n);
    }
    char field[300], key[80];
    ckpt_field(R, field, sizeof field);
    if (run_field(R, field, key, sizeof key)) {
        snprintf(err, n, "reading the job: Redis: %s", rstore_last_error(R->r));
        return URSA_ERR_UNAVAILABLE;
    }
    if (!key[0]) return URSA_ERR_NOT_FOUND;
    char *data = NULL;
    size_t len = 0;
    ursa_err e = blob_get(R->tj->bs, key, (size_t)1 << 36, &data, &len);
    if (!e) e = nn_checkpoint_decode(&R->m, pos, poslen, (const uint8_t *)data, len);
    free(data);
    if (e) snprintf(err, n, "checkpoint blob %.12s: %s", key, ursa_err2str(e));
    return e;
}

void run_ckpt_drop(run *R) {
    if (!ckpt_in_blobs(R)) {
        unlink(R->ckpt);
        return;
    }
    char field[300], key[80];
    ckpt_field(R, field, sizeof field);
    if (run_field(R, field, key, sizeof key) || !key[0]) return;
    if (job_del_field(R->r, R->tj->id, field) == URSA_OK) blob_delete(R->tj->bs, key);
}

/* Ends the job as failed with R->why. */
tjob_outcome run_fail(run *R) {
    const char *kv[] = {"error", R->why, NULL};
    int moved = 0;
    if (job_set_state(R->r, R->tj->id, JOB_FAILED, kv, &moved) != URSA_OK) {
        snprintf(R->tj->reason, sizeof R->tj->reason, "cannot record the failure: %s",
                 rstore_last_error(R->r));
        return TJ_RETRY;
    }
    char q[600];
    ULOG_WARN("event=job_failed job=%s reason=%s", R->tj->id, ulog_quote(q, sizeof q, R->why));
    if (moved) run_progress(R, "failed", NULL, R->why);
    run_ckpt_drop(R);
    snprintf(R->tj->reason, sizeof R->tj->reason, "failed: %s", R->why);
    return TJ_DONE;
}

tjob_outcome run_redis_down(run *R, const char *what) {
    snprintf(R->tj->reason, sizeof R->tj->reason, "%s: Redis: %s", what, rstore_last_error(R->r));
    return TJ_RETRY;
}

/* Delivery of the model's announcement, shared with librdkafka's callback,
 * which may come after the job gave up waiting (then it frees it). */
typedef struct {
    atomic_int state; /* 0 pending, 1 delivered, 2 failed, 3 abandoned */
} delivery;

static void delivered(void *opaque, ursa_err err, const char *errstr) {
    (void)errstr;
    delivery *d = opaque;
    if (atomic_exchange(&d->state, err ? 2 : 1) == 3) free(d);
}

/* Produces a message and waits for the broker's acknowledgement. */
static ursa_err produce_acked(run *R, const char *topic, const char *key,
                              const ProtobufCMessage *m) {
    void *buf;
    size_t len;
    ursa_err e = msg_pack(m, &buf, &len);
    if (e) return e;
    for (int attempt = 1;; attempt++) {
        delivery *d = calloc(1, sizeof *d);
        if (!d) {
            free(buf);
            return URSA_ERR_NOMEM;
        }
        e = kq_produce(R->tj->p, topic, key, strlen(key), buf, len, NULL, 0, delivered, d);
        if (e) {
            free(d);
            break;
        }
        while (atomic_load(&d->state) == 0 && !R->tj->stop) util_sleep_ms(20);
        int st = atomic_exchange(&d->state, 3);
        if (st != 0) free(d); /* else the callback frees it */
        if (st == 1) break;
        if (st == 0) {
            e = URSA_ERR_SHUTDOWN;
            break;
        }
        if (attempt >= 5) {
            e = URSA_ERR_KAFKA;
            break;
        }
        util_sleep_ms(util_backoff_ms(attempt, 500, 5000));
    }
    free(buf);
    return e;
}

/* ---- data ---------------------------------------------------------------------------- */

static int cache_get(run *R, int i, img_rgb *out) {
    int hit = 0;
    pthread_mutex_lock(&R->cache_mu);
    const img_rgb *c = &R->cache[i];
    if (c->px) {
        size_t n = (size_t)c->w * (size_t)c->h * 3;
        *out = *c;
        if ((out->px = malloc(n))) memcpy(out->px, c->px, n), hit = 1;
    }
    pthread_mutex_unlock(&R->cache_mu);
    return hit;
}

static void cache_put(run *R, int i, const img_rgb *im) {
    size_t n = (size_t)im->w * (size_t)im->h * 3;
    pthread_mutex_lock(&R->cache_mu);
    img_rgb *c = &R->cache[i];
    if (!c->px && R->cache_bytes + n <= R->cache_max) {
        *c = *im;
        if ((c->px = malloc(n))) memcpy(c->px, im->px, n), R->cache_bytes += n;
    }
    pthread_mutex_unlock(&R->cache_mu);
}

int run_load_image(void *ctx, int i, img_rgb *out) {
    run *R = ctx;
    if (R->cache && cache_get(R, i, out)) return 0;
    char *data = NULL;
    size_t len = 0;
    ursa_err be;
    /* an object store that does not answer is waited for, not skipped past:
     * a job never trains on part of its images for an outage; a corrupt
     * blob is skipped (blob_get named it) and never trained on */
    for (int attempt = 1;
         (be = blob_get(R->tj->bs, R->im[i].jpeg, (size_t)64 << 20, &data, &len)) ==
             URSA_ERR_UNAVAILABLE && !atomic_load(&R->tj->stop);
         attempt++) {
        if (attempt == 1)
            ULOG_WARN("event=blob_store_unavailable job=%s blob=%.12s note=\"waiting for it\"",
                      R->tj->id, R->im[i].jpeg);
        util_sleep_ms(util_backoff_ms(attempt, 200, 5000));
    }
    if (be != URSA_OK) return -1;
    img_reject rej;
    /* verified images (JPEG, 500 px at most): the default limits */
    ursa_err e = nn_decode_image((const uint8_t *)data, len, &R->m.meta, NULL, out, &rej);
    free(data);
    if (e != URSA_OK) return -1;
    if (R->cache) cache_put(R, i, out);
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int run_class_of(run *R, const char *label) {
    char *key = (char *)label;
    char **f = bsearch(&key, R->classes, (size_t)R->nclass, sizeof(char *), cmp_str);
    return f ? (int)(f - R->classes) : -1;
}

int run_field(run *R, const char *field, char *out, size_t n) {
    redisReply *rep = NULL;
    out[0] = '\0';
    if (job_get_field(R->r, R->tj->id, field, &rep)) return -1;
    if (rep->type == REDIS_REPLY_STRING) snprintf(out, n, "%s", rep->str);
    freeReplyObject(rep);
    return 0;
}

/* Reads (or takes, on the first start) the dataset's snapshot. */
tjob_outcome run_snapshot(run *R) {
    const Ursa__TrainJob *s = R->spec;
    char key[65];
    if (run_field(R, "manifest", key, sizeof key)) return run_redis_down(R, "reading the job");
    if (!key[0]) {
        int exists = 0;
        if (ds_exists(R->r, s->dataset, &exists)) return run_redis_down(R, "reading the dataset");
        if (!exists) {
            snprintf(R->why, sizeof R->why, "unknown dataset \"%s\" (see ursa ingest)",
                     s->dataset);
            return run_fail(R);
        }
        long long seq = 0;
        if (ds_manifest_read_ex(R->r, s->dataset, 0, &R->im, &R->nim, &seq))
            return run_redis_down(R, "reading the manifest");
        if (!R->nim) {
            snprintf(R->why, sizeof R->why, "dataset \"%s\" has no verified image yet",
                     s->dataset);
            return run_fail(R);
        }
        size_t len;
        char *tsv = ds_manifest_tsv(R->im, R->nim, &len);
        if (!tsv || blob_put(R->tj->bs, tsv, len, key) != URSA_OK) {
            free(tsv);
            snprintf(R->tj->reason, sizeof R->tj->reason, "cannot store the manifest snapshot");
            return TJ_RETRY;
        }
        free(tsv);
        char seq_s[24];
        snprintf(seq_s, sizeof seq_s, "%lld", seq);
        /* the last dataset edit the job saw (dataset_edits.h) */
        const char *kv[] = {"manifest", key, "edit_seq", seq_s, NULL};
        if (job_update(R->r, R->tj->id, kv)) return run_redis_down(R, "recording the snapshot");
    } else {
        char *tsv = NULL;
        size_t len = 0;
        ursa_err e = blob_get(R->tj->bs, key, (size_t)1 << 30, &tsv, &len);
        if (e == URSA_OK) e = ds_manifest_parse(tsv, len, &R->im, &R->nim);
        free(tsv);
        if (e == URSA_ERR_NOT_FOUND || e == URSA_ERR_CORRUPT) {
            snprintf(R->why, sizeof R->why, "the dataset snapshot %.12s is %s", key,
                     e == URSA_ERR_NOT_FOUND ? "missing from the blob store" : "damaged");
            return run_fail(R);
        }
        if (e) {
            snprintf(R->tj->reason, sizeof R->tj->reason, "reading the snapshot: %s",
                     ursa_err2str(e));
            return TJ_RETRY;
        }
    }
    return TJ_DONE;
}

/* Classes (sorted, as fast.ai orders them), the seeded split and the checks
 * a dataset must pass. Returns 0, or -1 with R->why set. */
int run_classes(run *R) {
    const Ursa__TrainJob *s = R->spec;
    R->classes = calloc(R->nim, sizeof(char *));
    R->tr_idx = malloc(sizeof(int) * R->nim);
    R->tr_lab = malloc(sizeof(int) * R->nim);
    R->va_idx = malloc(sizeof(int) * R->nim);
    R->va_lab = malloc(sizeof(int) * R->nim);
    if (!R->classes || !R->tr_idx || !R->tr_lab || !R->va_idx || !R->va_lab) goto nomem;
    for (size_t i = 0; i < R->nim; i++) {
        char *l = R->im[i].label;
        if (run_class_of(R, l) >= 0) continue;
        if (!(R->classes[R->nclass++] = strdup(l))) goto nomem;
        qsort(R->classes, (size_t)R->nclass, sizeof(char *), cmp_str);
    }
    if (R->nclass < 2) {
        snprintf(R->why, sizeof R->why,
                 "dataset \"%s\" has one class (\"%s\"): a classifier needs two or more",
                 s->dataset, R->classes[0]);
        return -1;
    }
    return 0;
nomem:
    snprintf(R->why, sizeof R->why, "out of memory reading %zu images", R->nim);
    return -1;
}

static int split(run *R) {
    const Ursa__TrainJob *s = R->spec;
    if (run_classes(R)) return -1;
    int *ntr = calloc((size_t)R->nclass, sizeof(int)), *nva = calloc((size_t)R->nclass, sizeof(int));
    if (!ntr || !nva) {
        free(ntr);
        free(nva);
        snprintf(R->why, sizeof R->why, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < R->nim; i++) {
        int c = run_class_of(R, R->im[i].label);
        if (ds_in_valid(R->im[i].src, s->seed, s->valid_pct)) {
            R->va_idx[R->nva] = (int)i;
            R->va_lab[R->nva++] = c;
            nva[c]++;
        } else {
            R->tr_idx[R->ntr] = (int)i;
            R->tr_lab[R->ntr++] = c;
            ntr[c]++;
        }
    }
    int bad = 0;
    for (int c = 0; c < R->nclass && !bad; c++) {
        bad = 1;
        if (ntr[c] + nva[c] < R->tj->min_per_class)
            snprintf(R->why, sizeof R->why,
                     "class \"%s\" has %d images; at least %d are needed "
                     "(trainer.min-images-per-class)",
                     R->classes[c], ntr[c] + nva[c], R->tj->min_per_class);
        else if (!nva[c])
            snprintf(R->why, sizeof R->why,
                     "class \"%s\" has no validation image (%d images, valid_pct %g): add "
                     "images, or change valid_pct or the seed",
                     R->classes[c], ntr[c], s->valid_pct);
        else if (!ntr[c])
            snprintf(R->why, sizeof R->why,
                     "class \"%s\" has no training image (%d images, all in validation with "
                     "valid_pct %g)",
                     R->classes[c], nva[c], s->valid_pct);
        else
            bad = 0;
    }
    free(ntr);
    free(nva);
    return bad ? -1 : 0;
}

/* ---- the model ----------------------------------------------------------------------- */

static int arch_depth(const char *arch) {
    return !strcmp(arch, "resnet18") ? 18 : !strcmp(arch, "resnet34") ? 34 : 0;
}

/* The shapes of the model's convolutions, in order, as text. */
static void conv_shapes(const nn_model *m, int upto_node, char *out, size_t n, int *count) {
    size_t o = 0;
    *count = 0;
    out[0] = '\0';
    for (int i = 0; i < m->nnode && i < upto_node; i++) {
        const nn_node *nd = &m->node[i];
        if (nd->op != NN_CONV) continue;
        const nn_param *w = &m->param[nd->w];
        (*count)++;
        if (o + 40 < n)
            o += (size_t)snprintf(out + o, n - o, "%dx%dx%dx%d ", w->shape[0], w->shape[1],
                                  w->shape[2], w->shape[3]);
    }
}

/* The pretrained body: an ONNX classifier of the job's architecture. */
static int pretrained_body(run *R) {
    const Ursa__TrainJob *s = R->spec;
    char *data = NULL, err[512];
    size_t len = 0;
    ursa_err e = blob_get(R->tj->bs, s->pretrained_blob, (size_t)1 << 31, &data, &len);
    if (e) {
        snprintf(R->why, sizeof R->why, "pretrained model blob %.12s: %s", s->pretrained_blob,
                 ursa_err2str(e));
        return -1;
    }
    e = nn_onnx_load_mem((const uint8_t *)data, len, &R->m, err, sizeof err);
    free(data);
    if (e) {
        snprintf(R->why, sizeof R->why, "the pretrained file is not a model ursa can read: %s",
                 err);
        return -1;
    }
    if (R->m.in_c != 3) {
        snprintf(R->why, sizeof R->why,
                 "the pretrained model takes %d-channel images; a body needs RGB (3)",
                 R->m.in_c);
        return -1;
    }
    int gp = -1;
    for (int i = 0; i < R->m.nnode && gp < 0; i++)
        if (R->m.node[i].op == NN_GAP || R->m.node[i].op == NN_GMP) gp = i;
    if (gp < 0) {
        snprintf(R->why, sizeof R->why,
                 "the pretrained model has no global pooling to cut its head at: not a "
                 "classifier body ursa supports");
        return -1;
    }
    int depth = arch_depth(s->arch);
    if (depth) { /* its convolutions must be the architecture's */
        nn_model ref;
        if (nn_resnet_body(&ref, depth) != URSA_OK) {
            nn_model_free(&ref);
            snprintf(R->why, sizeof R->why, "out of memory");
            return -1;
        }
        static char a[8192], b[8192]; /* one job runs at a time */
        int na, nb;
        conv_shapes(&R->m, gp, a, sizeof a, &na);
        conv_shapes(&ref, ref.nnode, b, sizeof b, &nb);
        nn_model_free(&ref);
        if (strcmp(a, b) != 0) {
            snprintf(R->why, sizeof R->why,
                     "the pretrained model is not a %s body: it has %d convolutions where a %s "
                     "has %d, or their shapes differ",
                     s->arch, na, s->arch, nb);
            return -1;
        }
    }
    if (nn_body_from(&R->m) != URSA_OK) {
        snprintf(R->why, sizeof R->why, "cannot cut the pretrained model into a body");
        return -1;
    }
    return 0;
}

int run_build_model(run *R) {
    const Ursa__TrainJob *s = R->spec;
    nn_model_free(&R->m); /* each builder below makes the model anew */
    int depth = arch_depth(s->arch);
    R->pretrained = s->pretrained_blob && s->pretrained_blob[0];
    if (R->feat) { /* an audit's head on a frozen body's features (audit.c) */
        nn_model_init(&R->m, R->fdim);
        nn_add_head_pooled(&R->m, R->nclass, 512, 0.25f, 0.5f);
    } else if (R->pretrained) {
        if (pretrained_body(R)) return -1;
        nn_add_head(&R->m, R->nclass, 512, 0.25f, 0.5f);
    } else if (depth) {
        if (nn_resnet_body(&R->m, depth) != URSA_OK) goto nomem;
        nn_init_weights(&R->m, s->seed);
        nn_add_head(&R->m, R->nclass, 512, 0.25f, 0.5f);
    } else {
        if (nn_small_resnet(&R->m, 3, 32, R->nclass) != URSA_OK) goto nomem;
        nn_init_weights(&R->m, s->seed);
    }
    if (R->m.oom) goto nomem;
    nn_meta *mt = &R->m.meta;
    nn_meta_free(mt);
    nn_meta_default(mt);
    mt->size = R->feat ? 1 : (int)s->size;
    mt->classes = calloc((size_t)R->nclass, sizeof(char *));
    if (!mt->classes) goto nomem;
    for (int i = 0; i < R->nclass; i++)
        if (!(mt->classes[i] = strdup(R->classes[i]))) goto nomem;
    mt->nclass = R->nclass;
    return 0;
nomem:
    snprintf(R->why, sizeof R->why, "out of memory building %s", s->arch);
    return -1;
}

/* ---- training ------------------------------------------------------------------------ */

static void on_batch(void *ctx, int epoch, int it, int n_it, float smooth, float lr) {
    (void)epoch;
    (void)lr;
    run *R = ctx;
    show_progress(R, it + 1, n_it);
    int64_t now = util_mono_ms();
    if (now - R->last_beat < 1000 && it + 1 < n_it) return;
    R->last_beat = now;
    char step[16], steps[16], loss[32], beat[24], stage[16], ep[16];
    snprintf(step, sizeof step, "%d", it + 1);
    snprintf(steps, sizeof steps, "%d", n_it);
    snprintf(loss, sizeof loss, "%.6f", smooth);
    snprintf(beat, sizeof beat, "%lld", (long long)util_now_ms());
    snprintf(stage, sizeof stage, "%u", R->pos.stage + 1);
    snprintf(ep, sizeof ep, "%u", R->epoch_base + R->pos.done);
    const char *kv[] = {"step", step, "steps", steps, "loss", loss, "beat_ms", beat,
                        "stage", stage, "epoch", ep, NULL};
    job_update(R->r, R->tj->id, kv); /* best effort: the next beat tries again */
    redisReply *rep = NULL;
    if (job_get_field(R->r, R->tj->id, "cancel", &rep) == URSA_OK) {
        if (rep->type == REDIS_REPLY_STRING && !strcmp(rep->str, "1")) {
            R->cancelled = 1;
            R->tj->stop = 1;
        }
        freeReplyObject(rep);
    }
}

static void on_epoch(void *ctx, const nn_epoch_row *row) {
    run *R = ctx;
    const Ursa__TrainStage *st = R->spec->stages[R->pos.stage];
    job_row w = {(int)(R->epoch_base + R->pos.done),
                 R->audit ? R->fold + 1 : (int)R->pos.stage + 1, row->epoch, row->train_loss,
                 row->valid_loss, row->error_rate, row->seconds};
    if (job_row_put(R->r, R->tj->id, &w))
        ULOG_WARN("event=row_not_recorded job=%s epoch=%d", R->tj->id, w.n);
    R->pos.done++;
    show_progress(R, 0, 1);
    R->pos.epoch = (uint32_t)row->epoch + 1;
    if (R->pos.epoch >= st->epochs) {
        R->pos.stage++;
        R->pos.epoch = 0;
    }
    char err[512];
    R->pos.magic = POS_MAGIC;
    if (run_ckpt_save(R, err, sizeof err))
        ULOG_ERROR("event=checkpoint_failed job=%s err=\"%s\"", R->tj->id, err);
    char ep[16], beat[24];
    snprintf(ep, sizeof ep, "%u", R->epoch_base + R->pos.done);
    snprintf(beat, sizeof beat, "%lld", (long long)util_now_ms());
    const char *kv[] = {"epoch", ep, "beat_ms", beat, NULL};
    job_update(R->r, R->tj->id, kv);
    ULOG_INFO("event=epoch job=%s stage=%u epoch=%d train_loss=%.4f valid_loss=%.4f "
              "error_rate=%.4f seconds=%.1f",
              R->tj->id, R->pos.epoch ? R->pos.stage + 1 : R->pos.stage, row->epoch,
              row->train_loss, row->valid_loss, row->error_rate, row->seconds);
    run_progress(R, "running", row, NULL);
}

/* An image's row of R->feat (an nn_tensor_fn). */
static int feature_row(void *ctx, int i, float *out) {
    run *R = ctx;
    memcpy(out, R->feat + (size_t)i * (size_t)R->fdim, sizeof(float) * (size_t)R->fdim);
    return 0;
}

/* Sets up loaders and the learner; seed shuffles the epochs. */
int run_learner_up(run *R, uint64_t seed) {
    const Ursa__TrainJob *s = R->spec;
    nn_aug aug = nn_aug_fastai();
    int bs = (int)s->batch_size;
    if (bs > R->ntr) bs = R->ntr; /* a last partial batch is dropped in training */
    ursa_err e;
    if (R->feat)
        e = nn_loader_new_tensors(feature_row, R, R->tr_idx, R->tr_lab, R->ntr, bs, 1, R->fdim,
                                  seed, &R->tr);
    else
        e = nn_loader_new(run_load_image, R, R->tr_idx, R->tr_lab, R->ntr, bs, 1,
                          s->augment ? &aug : NULL, &R->m.meta, 3, seed, &R->tr);
    if (!e && R->feat)
        e = nn_loader_new_tensors(feature_row, R, R->va_idx, R->va_lab, R->nva, bs, 0, R->fdim,
                                  seed, &R->va);
    else if (!e)
        e = nn_loader_new(run_load_image, R, R->va_idx, R->va_lab, R->nva, bs, 0, NULL,
                          &R->m.meta, 3, seed, &R->va);
    if (e || nn_learner_init(&R->L, &R->m, R->tr, R->va, bs)) {
        snprintf(R->why, sizeof R->why, "out of memory for %s at %u px, batch %d", s->arch,
                 s->size, bs);
        return -1;
    }
    R->have_learner = 1;
    R->L.opt.wd = (float)s->weight_decay;
    R->L.label_smoothing = (float)s->label_smoothing;
    R->L.stop = &R->tj->stop; /* a shutdown, or a cancel seen by on_batch */
    R->L.ctx = R;
    R->L.on_batch = on_batch;
    R->L.on_epoch = on_epoch;
    return 0;
}

static int by_loss(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The validation set through the model as served (BN folded), worst loss
 * first; sets *err and *loss. */
static int interpret(run *R, char *key, double *err_rate, double *vloss) {
    nn_model f;
    nn_exec *e = NULL;
    int bs = R->L.bs, size = R->m.meta.size, c = R->nclass;
    if (nn_fuse_for_inference(&R->m, &f) != URSA_OK) return -1;
    size_t per = (size_t)3 * size * size;
    float *x = malloc(sizeof(float) * per * (size_t)bs);
    int *which = malloc(sizeof(int) * (size_t)bs);
    struct row {
        double loss;
        int i, pred;
        float p;
    } *rows = calloc((size_t)R->nva, sizeof *rows);
    int nrows = 0, wrong = 0, rc = -1;
    double tl = 0;
    if (!x || !which || !rows || nn_exec_new(&f, bs, size, size, 0, &e) != URSA_OK) goto out;
    for (int v = 0; v < R->nva;) {
        int n = 0;
        for (; v < R->nva && n < bs; v++) {
            img_rgb im;
            if (run_load_image(R, R->va_idx[v], &im)) continue;
            nn_preprocess(&im, &f.meta, 3, x + per * n);
            img_free(&im);
            which[n++] = v;
        }
        if (!n) continue;
        float *o = (float *)nn_forward(e, x, n);
        nn_softmax(o, n, c);
        for (int j = 0; j < n; j++) {
            const float *p = o + (size_t)j * c;
            int best = 0, y = R->va_lab[which[j]];
            for (int k = 1; k < c; k++)
                if (p[k] > p[best]) best = k;
            struct row *r = &rows[nrows++];
            r->i = which[j];
            r->pred = best;
            r->p = p[y];
            r->loss = -log(p[y] > 1e-30f ? (double)p[y] : 1e-30);
            tl += r->loss;
            wrong += best != y;
        }
    }
    if (!nrows) goto out;
    qsort(rows, (size_t)nrows, sizeof *rows, by_loss);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) goto out;
    for (int k = 0; k < nrows; k++) {
        const ds_image *d = &R->im[R->va_idx[rows[k].i]];
        fprintf(m, "%s\t%s\t%s\t%.6f\t%.6f\t%s\n", d->jpeg, R->classes[R->va_lab[rows[k].i]],
                R->classes[rows[k].pred], rows[k].loss, rows[k].p, d->src);
    }
    fclose(m);
    rc = blob_put(R->tj->bs, buf, len, key) == URSA_OK ? 0 : -1;
    free(buf);
    *err_rate = (double)wrong / nrows;
    *vloss = tl / nrows;
out:
    nn_exec_free(e);
    nn_model_free(&f);
    free(x);
    free(which);
    free(rows);
    return rc;
}

/* Exports, registers and announces the model, then ends the job. */
static tjob_outcome publish(run *R) {
    const Ursa__TrainJob *s = R->spec;
    char model_id[160], interp[65], blob[65];
    double err_rate = 0, vloss = 0;
    job_model_id(s->dataset, R->tj->id, model_id, sizeof model_id);
    if (interpret(R, interp, &err_rate, &vloss)) {
        snprintf(R->tj->reason, sizeof R->tj->reason, "cannot interpret or store the results");
        return TJ_RETRY;
    }
    free(R->m.meta.extra);
    char extra[1024];
    snprintf(extra, sizeof extra,
             "model=%s\ndataset=%s\njob=%s\narch=%s\nerror_rate=%.6f\nvalid_loss=%.6f\n"
             "n_train=%d\nn_valid=%d\n",
             model_id, s->dataset, R->tj->id, s->arch, err_rate, vloss, R->ntr, R->nva);
    R->m.meta.extra = strdup(extra);
    uint8_t *onnx = NULL;
    size_t olen = 0;
    char err[512] = "";
    ursa_err pe = URSA_OK;
    if (nn_onnx_save_mem(&R->m, &onnx, &olen, err, sizeof err) != URSA_OK ||
        (pe = blob_put(R->tj->bs, onnx, olen, blob)) != URSA_OK) {
        if (pe != URSA_OK) snprintf(err, sizeof err, "blob store: %s", ursa_err2str(pe));
        free(onnx);
        snprintf(R->tj->reason, sizeof R->tj->reason, "cannot export the model: %s", err);
        return TJ_RETRY;
    }
    /* the registry: idempotent, so a second publish of the same job changes nothing */
    char *classes = NULL;
    size_t clen = 0;
    FILE *cf = open_memstream(&classes, &clen);
    for (int i = 0; cf && i < R->nclass; i++) fprintf(cf, "%s%s", i ? "\t" : "", R->classes[i]);
    if (cf) fclose(cf);
    char size_s[16], er_s[32], vl_s[32], ntr_s[16], nva_s[16], bytes_s[24];
    snprintf(size_s, sizeof size_s, "%u", s->size);
    snprintf(er_s, sizeof er_s, "%.6f", err_rate);
    snprintf(vl_s, sizeof vl_s, "%.6f", vloss);
    snprintf(ntr_s, sizeof ntr_s, "%d", R->ntr);
    snprintf(nva_s, sizeof nva_s, "%d", R->nva);
    snprintf(bytes_s, sizeof bytes_s, "%lld", (long long)olen);
    const char *mkv[] = {"dataset", s->dataset, "job", R->tj->id, "arch", s->arch, "blob", blob,
                        "classes", classes ? classes : "", "size", size_s, "error_rate", er_s,
                        "valid_loss", vl_s, "n_train", ntr_s, "n_valid", nva_s,
                        "interp", interp, "bytes", bytes_s, NULL};
    /* the ONNX copy: inference start-up reads it when the blobs are far */
    ursa_err e = registry_publish(R->r, model_id, s->dataset, mkv,
                                  olen <= ((size_t)64 << 20) ? onnx : NULL, olen);
    free(onnx);
    if (e) {
        free(classes);
        return run_redis_down(R, "registering the model");
    }
    /* the announcement, acknowledged before the job may end */
    Ursa__Header h;
    char hid[33];
    msg_header_init(&h, hid, s->dataset, R->tj->id);
    Ursa__ModelPublished mp = URSA__MODEL_PUBLISHED__INIT;
    mp.header = &h;
    mp.model_id = model_id;
    mp.dataset = s->dataset;
    mp.job_id = R->tj->id;
    mp.blob = blob;
    mp.arch = s->arch;
    mp.error_rate = err_rate;
    mp.n_classes = (size_t)R->nclass;
    mp.classes = R->classes;
    e = produce_acked(R, TOPIC_MODELS_PUBLISHED, model_id, &mp.base);
    free(classes);
    if (e == URSA_ERR_SHUTDOWN) return TJ_STOPPED;
    if (e) {
        snprintf(R->tj->reason, sizeof R->tj->reason, "announcing the model: %s",
                 ursa_err2str(e));
        return TJ_RETRY;
    }
    char er[32], vl[32];
    snprintf(er, sizeof er, "%.6f", err_rate);
    snprintf(vl, sizeof vl, "%.6f", vloss);
    const char *kv[] = {"model", model_id, "error_rate", er, "valid_loss", vl, NULL};
    int moved = 0;
    if (job_set_state(R->r, R->tj->id, JOB_DONE, kv, &moved)) return run_redis_down(R, "ending the job");
    if (moved) {
        nn_epoch_row row = {0, 0, (float)vloss, (float)err_rate, 0};
        run_progress(R, "done", &row, NULL);
    }
    run_ckpt_drop(R);
    ULOG_INFO("event=model_published job=%s model=%s blob=%.12s error_rate=%.4f valid=%d",
              R->tj->id, model_id, blob, err_rate, R->nva);
    snprintf(R->tj->reason, sizeof R->tj->reason, "done: model %s", model_id);
    return TJ_DONE;
}

tjob_outcome run_cancelled(run *R) {
    const char *kv[] = {"error", "cancelled by the user", NULL};
    int moved = 0;
    if (job_set_state(R->r, R->tj->id, JOB_CANCELLED, kv, &moved))
        return run_redis_down(R, "recording the cancel");
    if (moved) run_progress(R, "cancelled", NULL, NULL);
    run_ckpt_drop(R);
    snprintf(R->tj->reason, sizeof R->tj->reason, "cancelled");
    return TJ_DONE;
}

int run_fit_stages(run *R, tjob_outcome *out) {
    const Ursa__TrainJob *s = R->spec;
    R->pos = (position){POS_MAGIC, 0, 0, 0};
    char err[512] = "";
    position p;
    ursa_err ce = run_ckpt_load(R, &p, sizeof p, err, sizeof err);
    if (ce == URSA_ERR_UNAVAILABLE) { /* never start over for an outage */
        snprintf(R->tj->reason, sizeof R->tj->reason, "reading the checkpoint: %s", err);
        *out = TJ_RETRY;
        return 1;
    }
    if (ce != URSA_ERR_NOT_FOUND) {
        if (ce == URSA_OK && p.magic == POS_MAGIC && p.stage <= s->n_stages) {
            R->pos = p;
            ULOG_INFO("event=resumed job=%s stage=%u epoch=%u epochs_done=%u", R->tj->id,
                      p.stage + 1, p.epoch, p.done);
            job_incr(R->r, R->tj->id, "resumes");
        } else {
            ULOG_WARN("event=checkpoint_unusable job=%s err=\"%s\" note=\"starting over\"",
                      R->tj->id, err);
        }
    }
    if (run_learner_up(R, s->seed + R->pos.done + 1000003u * (uint64_t)R->fold)) {
        *out = run_fail(R);
        return 1;
    }
    while (R->pos.stage < s->n_stages) {
        const Ursa__TrainStage *st = s->stages[R->pos.stage];
        if (R->pretrained && !st->unfreeze) nn_freeze(&R->m);
        else nn_unfreeze(&R->m);
        R->L.epochs_done = (int)R->pos.epoch;
        uint32_t stage = R->pos.stage;
        ursa_err e = nn_fit_one_cycle_from(&R->L, (int)st->epochs, (int)R->pos.epoch,
                                           (float)st->lr_min, (float)st->lr_max);
        if (e == URSA_ERR_SHUTDOWN) {
            if (R->cancelled) {
                *out = run_cancelled(R);
            } else {
                snprintf(R->tj->reason, sizeof R->tj->reason, "stopped in stage %u", stage + 1);
                *out = TJ_STOPPED;
            }
            return 1;
        }
        if (e == URSA_ERR_INVALID)
            snprintf(R->why, sizeof R->why,
                     "training diverged in stage %u: the loss is not a number (max_lr %g too "
                     "high?)", stage + 1, st->lr_max);
        else if (e)
            snprintf(R->why, sizeof R->why, "training failed in stage %u: %s", stage + 1,
                     ursa_err2str(e));
        if (e) {
            *out = run_fail(R);
            return 1;
        }
        if (R->pos.stage == stage) R->pos.stage++; /* nothing left of it to run */
    }
    return 0;
}

static tjob_outcome train(run *R) {
    const Ursa__TrainJob *s = R->spec;
    for (size_t i = 0; i < s->n_stages; i++) R->total_epochs += (int)s->stages[i]->epochs;
    tjob_outcome o;
    if (run_fit_stages(R, &o)) return o;
    return publish(R);
}

static tjob_outcome lr_find(run *R) {
    if (run_learner_up(R, R->spec->seed)) return run_fail(R);
    if (R->pretrained) nn_freeze(&R->m);
    float lrs[100], losses[100], sug = 0;
    int n = 0;
    ursa_err e = nn_lr_find(&R->L, lrs, losses, &n, &sug);
    if (R->cancelled) return run_cancelled(R);
    if (e == URSA_OK && R->tj->stop) {
        snprintf(R->tj->reason, sizeof R->tj->reason, "stopped");
        return TJ_STOPPED;
    }
    if (e) {
        snprintf(R->why, sizeof R->why, "lr_find failed: %s", ursa_err2str(e));
        return run_fail(R);
    }
    char curve[100 * 40], sg[32];
    size_t o = 0;
    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(curve + o, sizeof curve - o, "%.6g\t%.6g\n", lrs[i], losses[i]);
    snprintf(sg, sizeof sg, "%.6g", sug);
    const char *kv[] = {"lr_curve", curve, "lr_suggestion", sg, NULL};
    if (job_set_state(R->r, R->tj->id, JOB_DONE, kv, NULL)) return run_redis_down(R, "ending the job");
    run_progress(R, "done", NULL, NULL);
    snprintf(R->tj->reason, sizeof R->tj->reason, "done: suggested lr %s", sg);
    return TJ_DONE;
}

/* ---- the thread ---------------------------------------------------------------------- */

static tjob_outcome run_job(run *R) {
    tjob *tj = R->tj;
    job_state st;
    ursa_err e = job_get_state(R->r, tj->id, &st);
    if (e == URSA_ERR_NOT_FOUND) return TJ_DONE; /* not ours to run (see main.c) */
    if (e) return run_redis_down(R, "reading the job");
    if (job_state_final(st)) return TJ_DONE;
    redisReply *rep = NULL;
    if (job_get_field(R->r, tj->id, "cancel", &rep)) return run_redis_down(R, "reading");
    int cancel = rep->type == REDIS_REPLY_STRING && !strcmp(rep->str, "1");
    freeReplyObject(rep);
    if (cancel) {
        R->cancelled = 1;
        return run_cancelled(R);
    }
    char now[24];
    snprintf(now, sizeof now, "%lld", (long long)util_now_ms());
    const char *kv[] = {"worker", tj->worker, "beat_ms", now, NULL};
    if (job_set_state(R->r, tj->id, JOB_RUNNING, kv, NULL) ||
        job_set_once(R->r, tj->id, "started_ms", now) ||
        job_incr(R->r, tj->id, "starts"))
        return run_redis_down(R, "starting the job");
    ULOG_INFO("event=job_started job=%s kind=%s dataset=%s arch=%s", tj->id, R->spec->kind,
              R->spec->dataset, R->spec->arch);
    tjob_outcome o = run_snapshot(R);
    if (o != TJ_DONE || R->why[0]) return o;
    R->cache_max = tj->image_cache_bytes;
    if (R->cache_max && !(R->cache = calloc(R->nim, sizeof *R->cache))) {
        snprintf(tj->reason, sizeof tj->reason, "out of memory");
        return TJ_RETRY;
    }
    if (!strcmp(R->spec->kind, "audit")) return audit_run(R);
    if (split(R) || run_build_model(R)) return run_fail(R);
    char n_tr[16], n_va[16], ncls[16];
    snprintf(n_tr, sizeof n_tr, "%d", R->ntr);
    snprintf(n_va, sizeof n_va, "%d", R->nva);
    snprintf(ncls, sizeof ncls, "%d", R->nclass);
    const char *kv2[] = {"n_train", n_tr, "n_valid", n_va, "n_classes", ncls, NULL};
    job_update(R->r, tj->id, kv2);
    return strcmp(R->spec->kind, "lr_find") == 0 ? lr_find(R) : train(R);
}

void *tjob_run(void *arg) {
    tjob *tj = arg;
    run *R = calloc(1, sizeof *R);
    char err[512];
    if (!R) {
        tj->outcome = TJ_RETRY;
        snprintf(tj->reason, sizeof tj->reason, "out of memory");
        atomic_store(&tj->finished, 1);
        return NULL;
    }
    R->tj = tj;
    R->spec = tj->spec;
    pthread_mutex_init(&R->cache_mu, NULL);
    nn_model_init(&R->m, 3);
    snprintf(R->ckpt, sizeof R->ckpt, "%s/%s.ckpt", tj->ckpt_dir, tj->id);
    if (!(R->r = rstore_new(tj->redis_url, 5000, err, sizeof err))) {
        tj->outcome = TJ_RETRY;
        snprintf(tj->reason, sizeof tj->reason, "redis: %s", err);
    } else {
        tj->outcome = run_job(R);
    }
    if (R->have_learner) nn_learner_free(&R->L);
    nn_loader_free(R->tr);
    nn_loader_free(R->va);
    nn_model_free(&R->m);
    for (int i = 0; i < R->nclass; i++) free(R->classes[i]);
    free(R->classes);
    free(R->tr_idx), free(R->tr_lab), free(R->va_idx), free(R->va_lab);
    if (R->cache)
        for (size_t i = 0; i < R->nim; i++) free(R->cache[i].px);
    free(R->cache);
    pthread_mutex_destroy(&R->cache_mu);
    free(R->im);
    rstore_destroy(R->r);
    free(R);
    atomic_store(&tj->finished, 1);
    return NULL;
}
