/* downloads.c: the images classify-url and bulk requests name, downloaded
 * by one thread with libcurl's multi interface (fetch.h), so a download
 * that waits on a slow server holds a socket, never a thread; see
 * server.h. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server.h"
#include "util.h"

typedef struct dl_item {
    struct downloads *d;
    char *url;
    int (*gone)(void *);
    void *garg;
    dl_done_fn *cb;
    void *arg;
    struct dl_item *next, *prev; /* the inbox, then the list in flight */
} dl_item;

struct downloads {
    fetch_ctx *fc;
    int max;
    pthread_t th;
    int started;
    atomic_int stop;
    pthread_mutex_t mu; /* inbox and count */
    dl_item *inbox;
    int count;          /* queued and in flight */
    dl_item *flying;    /* the thread's own */
};

static void unlink_flying(downloads *d, dl_item *it) {
    if (it->prev) it->prev->next = it->next;
    else d->flying = it->next;
    if (it->next) it->next->prev = it->prev;
}

static void item_end(dl_item *it, int status, uint8_t *data, size_t len, const char *why) {
    downloads *d = it->d;
    it->cb(it->arg, status, data, len, why);
    pthread_mutex_lock(&d->mu);
    d->count--;
    pthread_mutex_unlock(&d->mu);
    free(it->url);
    free(it);
}

/* fetch_run's callback: on the thread */
static void on_fetched(void *opaque, const fetch_result *r) {
    dl_item *it = opaque;
    downloads *d = it->d;
    unlink_flying(d, it);
    char why[512];
    if (!strcmp(r->reason ? r->reason : "", "cancelled")) {
        item_end(it, 503, NULL, 0,
                 atomic_load(&d->stop) ? "the server is stopping" : "the client went away");
        return;
    }
    if (!r->ok) {
        snprintf(why, sizeof why, "cannot fetch the URL: %s (%s)", r->reason,
                 r->detail ? r->detail : "");
        item_end(it, !strcmp(r->reason, "too_large") ? 413 : 422, NULL, 0, why);
        return;
    }
    uint8_t *data = malloc(r->len ? r->len : 1);
    if (!data) {
        item_end(it, 503, NULL, 0, "out of memory");
        return;
    }
    memcpy(data, r->body, r->len);
    item_end(it, 200, data, r->len, "");
}

static void *loop(void *arg) {
    downloads *d = arg;
    int64_t checked = util_mono_ms();
    while (!atomic_load(&d->stop)) {
        pthread_mutex_lock(&d->mu);
        dl_item *in = d->inbox;
        d->inbox = NULL;
        pthread_mutex_unlock(&d->mu);
        while (in) { /* the inbox is newest first: start the oldest first */
            dl_item *it = in, *prev = NULL;
            while (it->next) prev = it, it = it->next;
            if (prev) prev->next = NULL;
            else in = NULL;
            it->next = d->flying;
            it->prev = NULL;
            if (d->flying) d->flying->prev = it;
            d->flying = it;
            if (fetch_start(d->fc, it->url, on_fetched, it) != URSA_OK) {
                unlink_flying(d, it);
                item_end(it, 503, NULL, 0, "cannot start the download");
            }
        }
        fetch_run(d->fc, 100);
        int64_t now = util_mono_ms();
        if (now - checked >= 100) { /* the clients that left: their downloads end now */
            checked = now;
            for (dl_item *it = d->flying, *nx; it; it = nx) {
                nx = it->next;
                if (it->gone && it->gone(it->garg)) fetch_cancel(d->fc, it);
            }
        }
    }
    return NULL;
}

downloads *downloads_new(const fetch_opts *fo, size_t max_body, int max, char *err, size_t n) {
    downloads *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, n, "out of memory");
        return NULL;
    }
    fetch_opts o = *fo;
    o.max_bytes = max_body;
    if (o.max_total > max) o.max_total = max;
    d->max = max;
    pthread_mutex_init(&d->mu, NULL);
    if (!(d->fc = fetch_new(&o, err, n))) {
        downloads_free(d);
        return NULL;
    }
    if (pthread_create(&d->th, NULL, loop, d)) {
        snprintf(err, n, "cannot start the download thread");
        downloads_free(d);
        return NULL;
    }
    d->started = 1;
    return d;
}

void downloads_free(downloads *d) {
    if (!d) return;
    atomic_store(&d->stop, 1);
    if (d->started) {
        fetch_wakeup(d->fc);
        pthread_join(d->th, NULL);
    }
    /* what is in flight ends as cancelled ("the server is stopping") */
    if (d->fc) fetch_destroy(d->fc);
    d->fc = NULL;
    pthread_mutex_lock(&d->mu);
    dl_item *left = d->inbox;
    d->inbox = NULL;
    pthread_mutex_unlock(&d->mu);
    while (left) { /* queued after the thread's last look */
        dl_item *it = left;
        left = it->next;
        item_end(it, 503, NULL, 0, "the server is stopping");
    }
    pthread_mutex_destroy(&d->mu);
    free(d);
}

int downloads_start(downloads *d, const char *url, int (*gone)(void *), void *garg,
                    dl_done_fn *cb, void *arg) {
    dl_item *it = calloc(1, sizeof *it);
    if (!it || !(it->url = strdup(url))) {
        free(it);
        return -1;
    }
    it->d = d;
    it->gone = gone;
    it->garg = garg;
    it->cb = cb;
    it->arg = arg;
    pthread_mutex_lock(&d->mu);
    int ok = d->count < d->max && !atomic_load(&d->stop);
    if (ok) {
        d->count++;
        it->next = d->inbox;
        d->inbox = it;
    }
    pthread_mutex_unlock(&d->mu);
    if (!ok) {
        free(it->url);
        free(it);
        return -1;
    }
    fetch_wakeup(d->fc);
    return 0;
}

int downloads_count(downloads *d) {
    pthread_mutex_lock(&d->mu);
    int n = d->count;
    pthread_mutex_unlock(&d->mu);
    return n;
}
