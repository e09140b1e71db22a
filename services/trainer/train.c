/* train.c: the training job (stages of one-cycle on a seeded split, then
 * the model exported, registered and announced) and the lr_find job; see
 * train.h. */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "learner.h"
#include "log.h"
#include "msg.h"
#include "registry.h"
#include "rstore.h"
#include "topics.h"
#include "util.h"

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

/* The classes, the seeded split into training and validation images, and
 * the checks a dataset must pass. 0, or -1 with R->why set. */
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

/* The split, the model and the data's counts in the job; 0, or -1 with
 * R->why set. */
static int prepare(run *R) {
    if (split(R) || run_build_model(R)) return -1;
    char n_tr[16], n_va[16], ncls[16];
    snprintf(n_tr, sizeof n_tr, "%d", R->ntr);
    snprintf(n_va, sizeof n_va, "%d", R->nva);
    snprintf(ncls, sizeof ncls, "%d", R->nclass);
    const char *kv[] = {"n_train", n_tr, "n_valid", n_va, "n_classes", ncls, NULL};
    job_update(R->r, R->tj->id, kv);
    return 0;
}

static int by_loss(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The validation set through the model as served (BN folded), worst loss
 * first, each image's probabilities the mean of its views under the job's
 * test-time augmentation (R->L.tta); sets *err and *loss. 0, -1 on a
 * failure, -2 when the job was stopped or cancelled while it waited for
 * space to store them. */
static int interpret(run *R, char *key, double *err_rate, double *vloss) {
    nn_model f;
    nn_exec *e = NULL;
    int nv = nn_tta_views(R->L.tta), bs = R->L.bs, size = R->m.meta.size, c = R->nclass;
    int per_batch = bs / nv > 0 ? bs / nv : 1; /* images a batch, each its nv views */
    if (nn_fuse_for_inference(&R->m, &f) != URSA_OK) return -1;
    size_t per = (size_t)3 * size * size;
    float *x = malloc(sizeof(float) * per * (size_t)per_batch * nv);
    float *one = malloc(sizeof(float) * per); /* an image before its views */
    int *which = malloc(sizeof(int) * (size_t)per_batch);
    struct row {
        double loss;
        int i, pred;
        float p;
    } *rows = calloc((size_t)R->nva, sizeof *rows);
    int nrows = 0, wrong = 0, rc = -1;
    double tl = 0;
    if (!x || !one || !which || !rows ||
        nn_exec_new(&f, per_batch * nv, size, size, 0, &e) != URSA_OK)
        goto out;
    for (int v = 0; v < R->nva;) {
        int n = 0;
        for (; v < R->nva && n < per_batch; v++) {
            img_rgb im;
            if (run_load_image(R, R->va_idx[v], &im)) continue;
            nn_preprocess(&im, &f.meta, 3, one);
            img_free(&im);
            nn_tta_expand(one, 3, size, size, R->L.tta, x + per * nv * n);
            which[n++] = v;
        }
        if (!n) continue;
        float *o = (float *)nn_forward(e, x, n * nv);
        nn_softmax(o, n * nv, c);
        nn_tta_mean(o, n, nv, c);
        for (int j = 0; j < n; j++) {
            const float *p = o + (size_t)j * c;
            int best = 0, y = R->va_lab[which[j]];
            for (int q = 1; q < c; q++)
                if (p[q] > p[best]) best = q;
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
    run_blob rb = {buf, len, key};
    char serr[512];
    ursa_err se = run_store(R, "the results (validation losses)", run_store_blob, &rb, serr,
                            sizeof serr);
    rc = se == URSA_OK ? 0 : se == URSA_ERR_SHUTDOWN ? -2 : -1;
    free(buf);
    *err_rate = (double)wrong / nrows;
    *vloss = tl / nrows;
out:
    nn_exec_free(e);
    nn_model_free(&f);
    free(x);
    free(one);
    free(which);
    free(rows);
    return rc;
}

/* Stopped or cancelled while it waited for space (run_store). */
static tjob_outcome stopped_waiting(run *R) {
    if (R->cancelled) return run_cancelled(R);
    snprintf(R->tj->reason, sizeof R->tj->reason, "stopped while waiting for space");
    return TJ_STOPPED;
}

/* Exports, registers and announces the model, then ends the job. */
static tjob_outcome publish(run *R) {
    const Ursa__TrainJob *s = R->spec;
    char model_id[160], interp[65], blob[65];
    double err_rate = 0, vloss = 0;
    job_model_id(s->dataset, R->tj->id, model_id, sizeof model_id);
    int ir = interpret(R, interp, &err_rate, &vloss);
    if (ir == -2) return stopped_waiting(R);
    if (ir) {
        snprintf(R->tj->reason, sizeof R->tj->reason, "cannot interpret or store the results");
        return TJ_RETRY;
    }
    free(R->m.meta.extra);
    char extra[1024];
    snprintf(extra, sizeof extra,
             "model=%s\ndataset=%s\njob=%s\narch=%s\nerror_rate=%.6f\nvalid_loss=%.6f\n"
             "n_train=%d\nn_valid=%d\n%s%s%s",
             model_id, s->dataset, R->tj->id, s->arch, err_rate, vloss, R->ntr, R->nva,
             R->L.tta ? "tta=" : "", R->L.tta ? nn_tta_name(R->L.tta) : "", R->L.tta ? "\n" : "");
    R->m.meta.extra = strdup(extra);
    uint8_t *onnx = NULL;
    size_t olen = 0;
    char err[512] = "";
    ursa_err pe = nn_onnx_save_mem(&R->m, &onnx, &olen, err, sizeof err);
    if (pe == URSA_OK) {
        run_blob rb = {onnx, olen, blob};
        pe = run_store(R, "the model", run_store_blob, &rb, err, sizeof err);
    }
    if (pe == URSA_ERR_SHUTDOWN) {
        free(onnx);
        return stopped_waiting(R);
    }
    if (pe != URSA_OK) {
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

tjob_outcome train_run(run *R) {
    const Ursa__TrainJob *s = R->spec;
    if (prepare(R)) return run_fail(R);
    for (size_t i = 0; i < s->n_stages; i++) R->total_epochs += (int)R->epochs[i];
    tjob_outcome o;
    if (run_fit_stages(R, &o)) return o;
    return publish(R);
}

tjob_outcome train_lr_find(run *R) {
    if (prepare(R)) return run_fail(R);
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
