/* run.c: the context one job runs in, shared by the kinds of job (train.c,
 * audit.c): its record in Redis, progress and failure, the snapshot and its
 * classes, decoded images, the model, the learner, checkpoints and the
 * stages of a fit; see run.h. */
#include "run.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataset.h"
#include "learner.h"
#include "log.h"
#include "metrics.h"
#include "msg.h"
#include "rstore.h"
#include "topics.h"
#include "util.h"

/* ---- the job's record: progress, failure ---------------------------------------------- */

/* the running job's progress on /metrics */
static struct {
    metrics_series *epoch, *epochs, *step, *steps, *progress;
} met;

void run_register_metrics(void) {
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

/* ---- a full disk: the job waits for space ---------------------------------------------- */

/* what the running job waits for, for the daemon's health (one job a
 * worker runs at a time) */
static pthread_mutex_t waiting_mu = PTHREAD_MUTEX_INITIALIZER;
static char waiting_why[700];

int tjob_waiting(char *why, size_t n) {
    pthread_mutex_lock(&waiting_mu);
    int w = waiting_why[0] != '\0';
    snprintf(why, n, "%s", waiting_why);
    pthread_mutex_unlock(&waiting_mu);
    return w;
}

static void set_waiting(const char *why) {
    pthread_mutex_lock(&waiting_mu);
    snprintf(waiting_why, sizeof waiting_why, "%s", why);
    pthread_mutex_unlock(&waiting_mu);
}

/* Reads the job's cancel flag: a cancelled job stops (best effort: the next
 * check reads it again). */
static void read_cancel(run *R) {
    redisReply *rep = NULL;
    if (job_get_field(R->r, R->tj->id, "cancel", &rep) == URSA_OK) {
        if (rep->type == REDIS_REPLY_STRING && !strcmp(rep->str, "1")) {
            R->cancelled = 1;
            R->tj->stop = 1;
        }
        freeReplyObject(rep);
    }
}

/* 1 if the job was asked to stop (a shutdown) or cancelled while it waits. */
static int wait_stopped(run *R) {
    if (atomic_load(&R->tj->stop)) return 1;
    read_cancel(R);
    return R->cancelled;
}

ursa_err run_store(run *R, const char *what, run_store_fn store, void *ctx, char *err,
                   size_t n) {
    ursa_err e = store(R, ctx, err, n);
    if (e != URSA_ERR_NO_SPACE) return e;
    /* Redoing the work later costs CPU and finds the disk as full: the job
     * keeps what it has and waits, as a crawler keeps its downloads */
    char waiting[600], why[700], beat[24];
    snprintf(waiting, sizeof waiting, "waiting for space to store %s: %s", what, err);
    snprintf(why, sizeof why, "job %s %s", R->tj->id, waiting);
    int64_t t0 = util_mono_ms(), logged = t0;
    ULOG_ERROR("event=job_paused job=%s waiting_for=\"%s\" err=\"%s\" retry_ms=%d "
               "note=\"the job waits in memory; it goes on when space comes back\"",
               R->tj->id, what, err, R->tj->space_retry_ms);
    set_waiting(why);
    snprintf(beat, sizeof beat, "%lld", (long long)util_now_ms());
    const char *kv[] = {"waiting", waiting, "beat_ms", beat, NULL};
    job_update(R->r, R->tj->id, kv); /* best effort: the log and the health say it too */
    int tries = 1;
    while (e == URSA_ERR_NO_SPACE) {
        for (int slept = 0; slept < R->tj->space_retry_ms && !atomic_load(&R->tj->stop);
             slept += 100)
            util_sleep_ms(100);
        if (wait_stopped(R)) {
            e = URSA_ERR_SHUTDOWN;
            break;
        }
        snprintf(beat, sizeof beat, "%lld", (long long)util_now_ms());
        const char *bk[] = {"beat_ms", beat, NULL};
        job_update(R->r, R->tj->id, bk);
        e = store(R, ctx, err, n);
        tries++;
        int64_t now = util_mono_ms();
        if (e == URSA_ERR_NO_SPACE && now - logged >= 30000) {
            ULOG_WARN("event=job_still_paused job=%s waiting_for=\"%s\" for_ms=%lld tries=%d",
                      R->tj->id, what, (long long)(now - t0), tries);
            logged = now;
        }
    }
    set_waiting("");
    job_del_field(R->r, R->tj->id, "waiting");
    ULOG_INFO("event=job_resumed job=%s stored=\"%s\" waited_ms=%lld tries=%d err=\"%s\"",
              R->tj->id, what, (long long)(util_mono_ms() - t0), tries, ursa_err2str(e));
    return e;
}

ursa_err run_store_blob(run *R, void *ctx, char *err, size_t n) {
    run_blob *b = ctx;
    ursa_err e = blob_put(R->tj->bs, b->data, b->len, b->key);
    if (e) {
        if (e == URSA_ERR_NO_SPACE)
            snprintf(err, n, "blob store full (%llu bytes free)",
                     (unsigned long long)blob_store_free_bytes(R->tj->bs));
        else
            blob_unwritable_why(R->tj->bs, e, err, n);
    }
    return e;
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
        char serr[512];
        run_blob rb = {tsv, len, key};
        ursa_err se = tsv ? run_store(R, "the dataset's snapshot", run_store_blob, &rb, serr,
                                      sizeof serr)
                          : URSA_ERR_NOMEM;
        if (se == URSA_ERR_SHUTDOWN) {
            free(tsv);
            if (R->cancelled) return run_cancelled(R);
            snprintf(R->tj->reason, sizeof R->tj->reason, "stopped while waiting for space");
            return TJ_STOPPED;
        }
        if (se) {
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
    read_cancel(R);
}

static ursa_err ckpt_store(run *R, void *ctx, char *err, size_t n) {
    (void)ctx;
    return run_ckpt_save(R, err, n);
}

static void on_epoch(void *ctx, const nn_epoch_row *row) {
    run *R = ctx;
    job_row w = {(int)(R->epoch_base + R->pos.done),
                 R->audit ? R->fold + 1 : (int)R->pos.stage + 1, row->epoch, row->train_loss,
                 row->valid_loss, row->error_rate, row->seconds};
    if (job_row_put(R->r, R->tj->id, &w))
        ULOG_WARN("event=row_not_recorded job=%s epoch=%d", R->tj->id, w.n);
    R->pos.done++;
    show_progress(R, 0, 1);
    R->pos.epoch = (uint32_t)row->epoch + 1;
    if (R->pos.epoch >= R->epochs[R->pos.stage]) {
        R->pos.stage++;
        R->pos.epoch = 0;
    }
    char err[512], what[64];
    R->pos.magic = POS_MAGIC;
    snprintf(what, sizeof what, "the checkpoint of epoch %u", R->epoch_base + R->pos.done);
    ursa_err ce = run_store(R, what, ckpt_store, NULL, err, sizeof err);
    if (ce == URSA_ERR_SHUTDOWN) return; /* the learner stops at its next batch */
    if (ce) ULOG_ERROR("event=checkpoint_failed job=%s err=\"%s\"", R->tj->id, err);
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
    ursa_err le = e ? URSA_ERR_NOMEM : nn_learner_init(&R->L, &R->m, R->tr, R->va, bs);
    if (le == URSA_ERR_TOO_LARGE) {
        snprintf(R->why, sizeof R->why,
                 "%s at %u px, batch %d, needs more memory than nn.max-exec-mb (%zu) allows: "
                 "a smaller batch, or raise it", s->arch, s->size, bs,
                 nn_limits_get().exec_bytes >> 20);
        return -1;
    }
    if (le == URSA_ERR_INVALID) {
        snprintf(R->why, sizeof R->why, "the model does not run on %u px images", s->size);
        return -1;
    }
    if (le) {
        snprintf(R->why, sizeof R->why, "out of memory for %s at %u px, batch %d", s->arch,
                 s->size, bs);
        return -1;
    }
    R->have_learner = 1;
    R->L.opt.wd = (float)s->weight_decay;
    R->L.label_smoothing = (float)s->label_smoothing;
    if (nn_tta_parse(s->tta ? s->tta : "", &R->L.tta)) R->L.tta = NN_TTA_OFF; /* job_problem checked */
    R->L.stop = &R->tj->stop; /* a shutdown, or a cancel seen by on_batch */
    R->L.ctx = R;
    R->L.on_batch = on_batch;
    R->L.on_epoch = on_epoch;
    return 0;
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
        ursa_err e = nn_fit_one_cycle_from(&R->L, (int)R->epochs[stage], (int)R->pos.epoch,
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

run *run_new(tjob *tj) {
    run *R = calloc(1, sizeof *R);
    if (!R) return NULL;
    R->tj = tj;
    R->spec = tj->spec;
    for (size_t i = 0; i < R->spec->n_stages && i < RUN_STAGES_MAX; i++)
        R->epochs[i] = R->spec->stages[i]->epochs;
    pthread_mutex_init(&R->cache_mu, NULL);
    nn_model_init(&R->m, 3);
    snprintf(R->ckpt, sizeof R->ckpt, "%s/%s.ckpt", tj->ckpt_dir, tj->id);
    return R;
}

void run_learner_down(run *R) {
    if (R->have_learner) nn_learner_free(&R->L);
    R->have_learner = 0;
    nn_loader_free(R->tr);
    nn_loader_free(R->va);
    R->tr = R->va = NULL;
}

void run_free(run *R) {
    run_learner_down(R);
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
}
