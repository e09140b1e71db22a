/* batcher.c: served models and dynamic batching; see batcher.h. */
#include "batcher.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data.h"
#include "log.h"

struct served {
    atomic_int refs;
    char id[160];
    nn_model m; /* fused for inference */
    nn_exec **e; /* one per instance: only that batching thread runs it */
    int ninst;
    int nclass;
    unsigned tta; /* NN_TTA_*: each image's probabilities the mean of its views' */
};

/* The test-time augmentation a model was trained and validated with: its
 * metadata's "tta=" line (ursa train --tta), else none. */
static unsigned model_tta(const nn_meta *mt) {
    unsigned t = NN_TTA_OFF;
    for (const char *l = mt->extra; l && *l;) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) : strlen(l);
        char v[24];
        if (n > 4 && n - 4 < sizeof v && !strncmp(l, "tta=", 4)) {
            memcpy(v, l + 4, n - 4);
            v[n - 4] = '\0';
            if (nn_tta_parse(v, &t)) t = NN_TTA_OFF; /* unknown: none */
        }
        l = e ? e + 1 : l + n;
    }
    return t;
}

served *served_load(const uint8_t *onnx, size_t len, const char *id, int max_batch, int instances,
                    const char *tta, char *err, size_t errlen) {
    nn_model raw;
    unsigned mode = NN_TTA_OFF;
    if (tta && strcmp(tta, "model") && nn_tta_parse(tta, &mode)) {
        snprintf(err, errlen, "inference.tta %s: model, off, flip, shift or flip+shift", tta);
        return NULL;
    }
    if (nn_onnx_load_mem(onnx, len, &raw, err, errlen) != URSA_OK) return NULL;
    served *s = calloc(1, sizeof *s);
    if (!s || nn_fuse_for_inference(&raw, &s->m) != URSA_OK) {
        nn_model_free(&raw);
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    nn_model_free(&raw);
    int size = s->m.meta.size, oh = 0, ow = 0;
    atomic_init(&s->refs, 1);
    s->ninst = instances < 1 ? 1 : instances;
    if (!(s->e = calloc((size_t)s->ninst, sizeof(nn_exec *)))) {
        snprintf(err, errlen, "out of memory");
        served_release(s);
        return NULL;
    }
    for (int i = 0; i < s->ninst; i++) {
        char why[400];
        ursa_err e = nn_exec_new_err(&s->m, max_batch, size, size, 0, &s->e[i], why, sizeof why);
        if (e != URSA_OK) {
            if (e == URSA_ERR_NOMEM) snprintf(err, errlen, "out of memory");
            else snprintf(err, errlen, "the model does not run on %dx%d inputs: %s", size, size, why);
            served_release(s);
            return NULL;
        }
        /* the instances share the cores */
        nn_exec_set_threads(s->e[i], nn_threads() / s->ninst);
    }
    nn_value(s->e[0], s->m.out, NULL, &oh, &ow);
    if (oh * ow != 1) {
        snprintf(err, errlen, "the model's output is a %dx%d map, not class scores", oh, ow);
        served_release(s);
        return NULL;
    }
    s->nclass = nn_out_size(&s->m);
    s->tta = tta && !strcmp(tta, "model") ? model_tta(&s->m.meta) : mode;
    snprintf(s->id, sizeof s->id, "%s", id);
    return s;
}

void served_release(served *s) {
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
    for (int i = 0; s->e && i < s->ninst; i++) nn_exec_free(s->e[i]);
    free(s->e);
    nn_model_free(&s->m);
    free(s);
}

static served *served_ref(served *s) {
    if (s) atomic_fetch_add(&s->refs, 1);
    return s;
}

const char *served_id(const served *s) { return s->id; }
const nn_meta *served_meta(const served *s) { return &s->m.meta; }
int served_in_c(const served *s) { return s->m.in_c; }
int served_nclass(const served *s) { return s->nclass; }
unsigned served_tta(const served *s) { return s->tta; }

/* ---- the queue ------------------------------------------------------------------- */

typedef struct req {
    served *m;
    const float *x;
    float *probs;
    void (*cb)(void *arg, ursa_err err); /* called when done (outside the lock) */
    int (*gone)(void *arg);               /* nonzero: nobody waits for it any more */
    void *arg;
    int64_t t_ns;
    struct req *next;
} req;

struct batcher {
    batcher_opts o;
    pthread_mutex_t mu;
    pthread_cond_t work;
    req *head, *tail;
    int queued, stop;
    int arriving; /* requests being decoded: worth waiting for */
    served *cur;
    struct instance {
        batcher *b;
        int idx;
        pthread_t th;
        float *x; /* max_batch inputs of the largest model seen */
        size_t xcap;
    } *inst;
    int ninst, started;
    batcher_stats st;
};

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int hist_bucket(int n) {
    int b = 0;
    for (int lim = 1; b < 7 && n > lim; lim *= 2) b++;
    return b;
}

/* Takes up to max_batch queued requests of the head's model. */
static int take(batcher *b, req **out) {
    int n = 0;
    served *m = b->head->m;
    for (req **pp = &b->head; *pp && n < b->o.max_batch;) {
        req *r = *pp;
        if (r->m != m) {
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        out[n++] = r;
    }
    b->tail = NULL;
    for (req *r = b->head; r; r = r->next) b->tail = r;
    b->queued -= n;
    return n;
}

static void *loop(void *arg) {
    struct instance *in = arg;
    batcher *b = in->b;
    /* this thread's share of the cores, for the engine's own threads */
    nn_set_threads(nn_threads() / b->ninst);
    req **batch = malloc(sizeof(req *) * (size_t)b->o.max_batch);
    pthread_mutex_lock(&b->mu);
    while (batch) {
        while (!b->head && !b->stop) pthread_cond_wait(&b->work, &b->mu);
        if (!b->head) break; /* stopping, nothing left */
        /* wait for more, up to max_delay after the oldest request, but only
         * while more are on their way: an idle server answers at once */
        int64_t until = b->head->t_ns + (int64_t)b->o.max_delay_us * 1000;
        while (!b->stop && b->head && b->queued < b->o.max_batch && b->arriving > 0 &&
               now_ns() < until) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t wait = until - now_ns();
            if (wait <= 0) break;
            ts.tv_sec += wait / 1000000000;
            ts.tv_nsec += wait % 1000000000;
            if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
            pthread_cond_timedwait(&b->work, &b->mu, &ts);
        }
        if (!b->head) continue; /* another instance took them while this one waited */
        int n = take(b, batch);
        pthread_mutex_unlock(&b->mu);
        /* what nobody waits for any more is not run (a flood of clients
         * that left would otherwise hold up the ones still waiting) */
        int kept = 0;
        for (int i = 0; i < n; i++) {
            if (batch[i]->gone && batch[i]->gone(batch[i]->arg)) {
                served *rm = batch[i]->m;
                batch[i]->cb(batch[i]->arg, URSA_ERR_TIMEOUT);
                served_release(rm);
                free(batch[i]);
            } else {
                batch[kept++] = batch[i];
            }
        }
        if (kept < n) {
            pthread_mutex_lock(&b->mu);
            b->st.dropped += (uint64_t)(n - kept);
            if (!kept) continue;
            pthread_mutex_unlock(&b->mu);
            n = kept;
        }
        served *m = batch[0]->m;
        const nn_meta *mt = &m->m.meta;
        size_t per = (size_t)m->m.in_c * mt->size * mt->size;
        ursa_err err = URSA_OK;
        if (per * (size_t)n > in->xcap) {
            float *nx = realloc(in->x, sizeof(float) * per * (size_t)b->o.max_batch);
            if (nx) in->x = nx, in->xcap = per * (size_t)b->o.max_batch;
            else err = URSA_ERR_NOMEM;
        }
        /* an executor is one thread's: a model loaded for fewer instances
         * than run here (a caller's mistake) is refused, not shared */
        if (!err && in->idx >= m->ninst) err = URSA_ERR_INVALID;
        if (!err) {
            int nv = nn_tta_views(m->tta), c = m->nclass;
            for (int v = 0; v < nv && !err; v++) { /* a batch a view: the executor's size */
                for (int i = 0; i < n; i++)
                    if (m->tta) nn_tta_view(batch[i]->x, m->m.in_c, mt->size, mt->size, m->tta, v,
                                            in->x + per * i);
                    else memcpy(in->x + per * i, batch[i]->x, sizeof(float) * per);
                float *o = (float *)nn_forward(m->e[in->idx], in->x, n);
                if (!o) {
                    err = URSA_ERR_NOMEM;
                    break;
                }
                nn_softmax(o, n, c);
                for (int i = 0; i < n; i++) {
                    float *p = batch[i]->probs;
                    const float *q = o + (size_t)i * c;
                    if (nv == 1) memcpy(p, q, sizeof(float) * c);
                    else
                        for (int j = 0; j < c; j++) p[j] = (v ? p[j] : 0) + q[j] / (float)nv;
                }
            }
        }
        for (int i = 0; i < n; i++) { /* each request's answer, on this thread */
            served *rm = batch[i]->m;
            batch[i]->cb(batch[i]->arg, err);
            served_release(rm);
            free(batch[i]);
        }
        pthread_mutex_lock(&b->mu);
        b->st.batches++;
        b->st.images += (uint64_t)n;
        b->st.batch_hist[hist_bucket(n)]++;
    }
    /* stopping: fail what is left (the first instance out does) */
    req *left = b->head;
    b->head = b->tail = NULL;
    b->queued = 0;
    pthread_mutex_unlock(&b->mu);
    while (left) {
        req *r = left;
        left = r->next;
        r->cb(r->arg, URSA_ERR_SHUTDOWN);
        served_release(r->m);
        free(r);
    }
    free(batch);
    return NULL;
}

batcher *batcher_new(const batcher_opts *o) {
    batcher *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->o = *o;
    if (b->o.max_batch < 1) b->o.max_batch = 1;
    b->ninst = b->o.instances < 1 ? 1 : b->o.instances;
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->work, &ca);
    pthread_condattr_destroy(&ca);
    if (!(b->inst = calloc((size_t)b->ninst, sizeof *b->inst))) {
        batcher_free(b);
        return NULL;
    }
    for (int i = 0; i < b->ninst; i++) {
        b->inst[i].b = b;
        b->inst[i].idx = i;
        if (pthread_create(&b->inst[i].th, NULL, loop, &b->inst[i]) != 0) {
            batcher_free(b);
            return NULL;
        }
        b->started++;
    }
    return b;
}

int batcher_instances(const batcher *b) { return b->ninst; }

void batcher_free(batcher *b) {
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->stop = 1;
    pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < b->started; i++) {
        pthread_join(b->inst[i].th, NULL);
        free(b->inst[i].x);
    }
    free(b->inst);
    served_release(b->cur);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->work);
    free(b);
}

void batcher_swap(batcher *b, served *s) {
    pthread_mutex_lock(&b->mu);
    served *old = b->cur;
    b->cur = s;
    pthread_mutex_unlock(&b->mu);
    served_release(old); /* freed once its queued requests are done */
}

served *batcher_current(batcher *b) {
    pthread_mutex_lock(&b->mu);
    served *s = served_ref(b->cur);
    pthread_mutex_unlock(&b->mu);
    return s;
}

void batcher_arriving(batcher *b, int delta) {
    pthread_mutex_lock(&b->mu);
    b->arriving += delta;
    if (delta < 0) pthread_cond_signal(&b->work); /* one fewer to wait for */
    pthread_mutex_unlock(&b->mu);
}

ursa_err batcher_submit(batcher *b, served *m, const float *x, float *probs,
                        void (*done)(void *arg, ursa_err err), int (*gone)(void *arg),
                        void *arg) {
    req *r = calloc(1, sizeof *r);
    pthread_mutex_lock(&b->mu);
    b->arriving--; /* announced by batcher_arriving(b, 1) */
    if (!r || b->queued >= b->o.max_queue || b->stop) {
        b->st.rejected++;
        pthread_mutex_unlock(&b->mu);
        free(r);
        return URSA_ERR_UNAVAILABLE;
    }
    r->m = served_ref(m);
    r->x = x;
    r->probs = probs;
    r->cb = done;
    r->gone = gone;
    r->arg = arg;
    r->t_ns = now_ns();
    if (b->tail) b->tail->next = r;
    else b->head = r;
    b->tail = r;
    b->queued++;
    pthread_cond_signal(&b->work);
    pthread_mutex_unlock(&b->mu);
    return URSA_OK;
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    ursa_err err;
} waiter;

static void wake(void *arg, ursa_err err) {
    waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->err = err;
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

ursa_err batcher_run(batcher *b, served *m, const float *x, float *probs) {
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, URSA_OK};
    ursa_err e = batcher_submit(b, m, x, probs, wake, NULL, &w);
    if (e == URSA_OK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        e = w.err;
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return e;
}

void batcher_get_stats(batcher *b, batcher_stats *st) {
    pthread_mutex_lock(&b->mu);
    *st = b->st;
    st->queued = b->queued;
    pthread_mutex_unlock(&b->mu);
}
