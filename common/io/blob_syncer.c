/* blob_syncer.c: blob writes and syncs on their own thread; see
 * blob_syncer.h. Puts move through three lists under one mutex: queued (to
 * write), then done (written and synced, or failed) for the caller to
 * collect; the thread holds its batch privately meanwhile. */
#include "blob_syncer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "util.h"

typedef struct item {
    void *data, *opaque;
    size_t len;
    ursa_err err;
    struct item *next;
} item;

typedef struct {
    item *head, *tail;
} item_list;

struct blob_syncer {
    blob_store *bs; /* borrowed */
    pthread_t th;
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;  /* a put or stop */
    int stop;
    item_list queued, done;
    int pending; /* put and not collected */
    ursa_err failing;
    int64_t failing_since, slow_logged;
    blob_syncer_stats st;
};

static void list_append(item_list *l, item *it) {
    it->next = NULL;
    if (l->tail) l->tail->next = it;
    else l->head = it;
    l->tail = it;
}

static void list_concat(item_list *l, item_list *more) {
    if (!more->head) return;
    if (l->tail) l->tail->next = more->head;
    else l->head = more->head;
    l->tail = more->tail;
    more->head = more->tail = NULL;
}

/* waits on cv for up to ms (mu held) */
static void wait_ms(blob_syncer *sy, int64_t ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&sy->cv, &sy->mu, &ts);
}

/* Writes a batch, then syncs it until the sync succeeds (or stop); the
 * failed puts go to done at once, the written ones after their sync. */
static void run_batch(blob_syncer *sy, item_list *batch) {
    item_list written = {0}, failed = {0};
    int64_t t0 = util_mono_ms();
    int n = 0;
    while (batch->head) {
        item *it = batch->head;
        batch->head = it->next;
        char key[65];
        it->err = blob_put_lazy(sy->bs, it->data, it->len, key);
        list_append(it->err ? &failed : &written, it);
        n++;
    }
    batch->tail = NULL;
    int64_t t1 = util_mono_ms();
    pthread_mutex_lock(&sy->mu);
    sy->st.puts += (uint64_t)n;
    sy->st.write_ms += (uint64_t)(t1 - t0);
    list_concat(&sy->done, &failed);
    while (written.head) {
        pthread_mutex_unlock(&sy->mu);
        t0 = util_mono_ms();
        ursa_err err = blob_store_sync(sy->bs);
        int64_t now = util_mono_ms(), ms = now - t0;
        pthread_mutex_lock(&sy->mu);
        sy->st.syncs++;
        sy->st.sync_ms += (uint64_t)ms;
        if ((uint64_t)ms > sy->st.max_sync_ms) sy->st.max_sync_ms = (uint64_t)ms;
        if (ms >= 1000 && now - sy->slow_logged >= 30000) { /* once, then every 30 s */
            ULOG_WARN("event=blob_sync_slow ms=%lld blobs=%d store=\"%s\" note=\"finished work "
                      "waits for the disk; intake pauses if too much waits\"",
                      (long long)ms, n, blob_store_where(sy->bs));
            sy->slow_logged = now;
        }
        if (!err) {
            sy->failing = URSA_OK;
            list_concat(&sy->done, &written);
            break;
        }
        sy->st.failures++;
        if (!sy->failing) sy->failing_since = now;
        sy->failing = err;
        if (sy->stop) { /* never durable: back to the caller as not tried */
            for (item *it = written.head; it; it = it->next) it->err = URSA_ERR_SHUTDOWN;
            list_concat(&sy->done, &written);
            break;
        }
        wait_ms(sy, 1000);
    }
    pthread_mutex_unlock(&sy->mu);
}

static void *syncer_main(void *arg) {
    blob_syncer *sy = arg;
    pthread_mutex_lock(&sy->mu);
    while (!sy->stop) {
        if (!sy->queued.head) {
            pthread_cond_wait(&sy->cv, &sy->mu);
            continue;
        }
        item_list batch = sy->queued; /* everything that came: one sync */
        sy->queued.head = sy->queued.tail = NULL;
        pthread_mutex_unlock(&sy->mu);
        run_batch(sy, &batch);
        pthread_mutex_lock(&sy->mu);
    }
    pthread_mutex_unlock(&sy->mu);
    return NULL;
}

blob_syncer *blob_syncer_new(blob_store *bs, char *errstr, size_t n) {
    blob_syncer *sy = calloc(1, sizeof *sy);
    if (!sy) {
        if (errstr) snprintf(errstr, n, "out of memory");
        return NULL;
    }
    sy->bs = bs;
    pthread_mutex_init(&sy->mu, NULL);
    pthread_cond_init(&sy->cv, NULL);
    if (pthread_create(&sy->th, NULL, syncer_main, sy) != 0) {
        if (errstr) snprintf(errstr, n, "cannot start the blob sync thread");
        pthread_cond_destroy(&sy->cv);
        pthread_mutex_destroy(&sy->mu);
        free(sy);
        return NULL;
    }
    return sy;
}

ursa_err blob_syncer_put(blob_syncer *sy, void *data, size_t len, void *opaque) {
    item *it = calloc(1, sizeof *it);
    if (!it) return URSA_ERR_NOMEM;
    it->data = data;
    it->len = len;
    it->opaque = opaque;
    pthread_mutex_lock(&sy->mu);
    list_append(&sy->queued, it);
    sy->pending++;
    pthread_cond_signal(&sy->cv);
    pthread_mutex_unlock(&sy->mu);
    return URSA_OK;
}

/* hands every item of l to cb, freeing the items; returns how many */
static int hand_back(item *head, blob_syncer_done_cb cb, void *ctx) {
    int n = 0;
    while (head) {
        item *it = head;
        head = it->next;
        cb(ctx, it->opaque, it->err, it->data, it->len);
        free(it);
        n++;
    }
    return n;
}

int blob_syncer_collect(blob_syncer *sy, blob_syncer_done_cb cb, void *ctx) {
    pthread_mutex_lock(&sy->mu);
    item *head = sy->done.head;
    sy->done.head = sy->done.tail = NULL;
    pthread_mutex_unlock(&sy->mu);
    int n = hand_back(head, cb, ctx); /* outside the lock: cb may put again */
    pthread_mutex_lock(&sy->mu);
    sy->pending -= n;
    pthread_mutex_unlock(&sy->mu);
    return n;
}

void blob_syncer_destroy(blob_syncer *sy, blob_syncer_done_cb cb, void *ctx) {
    if (!sy) return;
    pthread_mutex_lock(&sy->mu);
    sy->stop = 1;
    pthread_cond_signal(&sy->cv);
    pthread_mutex_unlock(&sy->mu);
    pthread_join(sy->th, NULL);
    for (item *it = sy->queued.head; it; it = it->next) it->err = URSA_ERR_SHUTDOWN;
    hand_back(sy->done.head, cb, ctx);
    hand_back(sy->queued.head, cb, ctx);
    pthread_cond_destroy(&sy->cv);
    pthread_mutex_destroy(&sy->mu);
    free(sy);
}

int blob_syncer_pending(blob_syncer *sy) {
    pthread_mutex_lock(&sy->mu);
    int n = sy->pending;
    pthread_mutex_unlock(&sy->mu);
    return n;
}

ursa_err blob_syncer_failing(blob_syncer *sy, int64_t *since_ms) {
    pthread_mutex_lock(&sy->mu);
    ursa_err err = sy->failing;
    if (since_ms) *since_ms = sy->failing_since;
    pthread_mutex_unlock(&sy->mu);
    return err;
}

void blob_syncer_get_stats(blob_syncer *sy, blob_syncer_stats *out) {
    pthread_mutex_lock(&sy->mu);
    *out = sy->st;
    pthread_mutex_unlock(&sy->mu);
}
