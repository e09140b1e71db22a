/* bulk.c: ursa.classify.requests in, ursa.classify.results out, on the
 * main thread's consumer loop. At least once and idempotent by request id:
 * the first result is kept in Redis (a week) and sent again for a replay,
 * and when two instances race, the stored one wins. An image comes from
 * the blob store, or from a URL (the same SSRF guard, cap and timeouts as
 * classify-url): the download runs on bulk's own download thread with
 * every other one at once, the job held (kq_job_hold), and bulk_tick
 * classifies what came back, so one slow URL never holds up the requests
 * behind it. The model's absence or a full queue is not the request's
 * fault, so it is retried (URSA_ERR_UNAVAILABLE, or again by the tick),
 * never dead-lettered. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "classify_results.h"
#include "data.h"
#include "jobs.h"
#include "log.h"
#include "msg.h"
#include "server.h"
#include "topics.h"
#include "util.h"

/* a request whose image is downloading, or waiting to be classified */
struct bulk_item {
    bulk *bk;
    kq_job *job;
    Ursa__ClassifyRequest *q;
    int status; /* the download's */
    uint8_t *data;
    size_t len;
    char why[512];
    int64_t retry_at;
    int tries;
    struct bulk_item *next;
};

static void item_free(bulk_item *it) {
    free(it->data);
    ursa__classify_request__free_unpacked(it->q, NULL);
    free(it);
}

/* Classifies the image (data, or why there is none) and records and sends
 * the result: OK, or the error (URSA_ERR_UNAVAILABLE: try again later). */
static ursa_err finish(bulk *bk, kq_job *job, const Ursa__ClassifyRequest *q,
                       const uint8_t *data, size_t len, const char *why, char *reason,
                       size_t rn) {
    server *s = bk->s;
    ursa_err ret = URSA_OK;
    verdict v;
    memset(&v, 0, sizeof v);
    int st = 422;
    if (data) st = classify_wait(s, data, len, (int)q->top_k, &v);
    else snprintf(v.why, sizeof v.why, "%s", why);
    if (st == 503) { /* no model, or busy: not the request's fault */
        snprintf(reason, rn, "%s", v.why);
        verdict_free(&v);
        return URSA_ERR_UNAVAILABLE;
    }
    Ursa__Header h;
    char hid[33];
    msg_header_init(&h, hid, s->dataset, NULL);
    Ursa__ClassifyResult res = URSA__CLASSIFY_RESULT__INIT;
    res.header = &h;
    res.request_id = q->request_id;
    res.model_id = v.m ? (char *)served_id(v.m) : "";
    res.error = st == 200 ? "" : v.why;
    Ursa__Prediction *preds = calloc((size_t)v.k + 1, sizeof *preds);
    Ursa__Prediction **pp = calloc((size_t)v.k + 1, sizeof *pp);
    char (*labels)[32] = calloc((size_t)v.k + 1, 32);
    if (preds && pp && labels) {
        for (int k = 0; k < v.k; k++) {
            ursa__prediction__init(&preds[k]);
            preds[k].label = (char *)nn_class_name(served_meta(v.m), v.order[k], labels[k], 32);
            preds[k].prob = v.probs[v.order[k]];
            pp[k] = &preds[k];
        }
        res.n_predictions = (size_t)v.k;
        res.predictions = pp;
    } else {
        ret = URSA_ERR_TRANSIENT;
        snprintf(reason, rn, "out of memory");
    }
    void *buf = NULL;
    size_t blen = 0;
    if (ret == URSA_OK) ret = msg_pack(&res.base, &buf, &blen);
    if (ret == URSA_OK &&
        cresult_put(bk->r, q->request_id, buf, blen) != URSA_OK) {
        snprintf(reason, rn, "Redis: %s", rstore_last_error(bk->r));
        ret = URSA_ERR_UNAVAILABLE;
    }
    if (ret == URSA_OK) { /* the stored answer wins a race with another instance */
        redisReply *again = NULL;
        if (cresult_get(bk->r, q->request_id, &again) == URSA_OK &&
            again->type == REDIS_REPLY_STRING)
            ret = kq_job_produce(job, TOPIC_CLASSIFY_RESULTS, q->request_id,
                                 strlen(q->request_id), again->str, again->len);
        if (again) freeReplyObject(again);
    }
    free(buf);
    free(labels);
    free(preds);
    free(pp);
    verdict_free(&v);
    return ret;
}

/* on bulk's download thread */
static void bulk_fetched(void *arg, int status, uint8_t *data, size_t len, const char *why) {
    bulk_item *it = arg;
    bulk *bk = it->bk;
    it->status = status;
    it->data = status == 200 ? data : NULL;
    if (status != 200) free(data);
    it->len = len;
    snprintf(it->why, sizeof it->why, "%s", why);
    pthread_mutex_lock(&bk->mu);
    it->next = bk->ready;
    bk->ready = it;
    pthread_cond_signal(&bk->cv);
    pthread_mutex_unlock(&bk->mu);
}

ursa_err bulk_on_request(void *opaque, const kq_msg *msg, kq_job *job, char *reason, size_t rn) {
    bulk *bk = opaque;
    server *s = bk->s;
    Ursa__ClassifyRequest *q = ursa__classify_request__unpack(NULL, msg->len, msg->value);
    if (!q) {
        snprintf(reason, rn, "not a ClassifyRequest protobuf");
        return URSA_ERR_PERMANENT;
    }
    ursa_err ret = URSA_OK;
    if (!job_id_valid(q->request_id) ||
        (q->dataset[0] && *s->dataset && strcmp(q->dataset, s->dataset))) {
        snprintf(reason, rn, "bad request id, or dataset %s is not served here", q->dataset);
        ursa__classify_request__free_unpacked(q, NULL);
        return URSA_ERR_PERMANENT;
    }
    redisReply *rep = NULL;
    if (cresult_get(bk->r, q->request_id, &rep) != URSA_OK) {
        snprintf(reason, rn, "Redis: %s", rstore_last_error(bk->r));
        ursa__classify_request__free_unpacked(q, NULL);
        return URSA_ERR_UNAVAILABLE;
    }
    if (rep->type == REDIS_REPLY_STRING) { /* answered before: the same answer again */
        ret = kq_job_produce(job, TOPIC_CLASSIFY_RESULTS, q->request_id, strlen(q->request_id),
                             rep->str, rep->len);
        freeReplyObject(rep);
        ursa__classify_request__free_unpacked(q, NULL);
        return ret;
    }
    freeReplyObject(rep);
    if (q->url[0]) { /* downloaded with the others, classified by bulk_tick */
        served *m = batcher_current(s->b);
        served_release(m);
        if (!m) {
            snprintf(reason, rn, "no model loaded yet");
            ursa__classify_request__free_unpacked(q, NULL);
            return URSA_ERR_UNAVAILABLE;
        }
        bulk_item *it = calloc(1, sizeof *it);
        if (!it) {
            snprintf(reason, rn, "out of memory");
            ursa__classify_request__free_unpacked(q, NULL);
            return URSA_ERR_UNAVAILABLE;
        }
        it->bk = bk;
        it->job = job;
        it->q = q;
        if (downloads_start(bk->dl, q->url, NULL, NULL, bulk_fetched, it)) {
            snprintf(reason, rn, "busy: %d downloads in flight", downloads_count(bk->dl));
            free(it);
            ursa__classify_request__free_unpacked(q, NULL);
            return URSA_ERR_UNAVAILABLE;
        }
        kq_job_hold(job); /* the tick runs only after this returns */
        bk->held++;
        return URSA_OK;
    }
    /* the image */
    uint8_t *data = NULL;
    size_t len = 0;
    char why[512] = "";
    if (q->blob[0]) {
        char *b = NULL;
        ursa_err e = blob_key_valid(q->blob) ? blob_get(s->bs, q->blob, s->max_body, &b, &len)
                                             : URSA_ERR_INVALID;
        if (e) snprintf(why, sizeof why, "blob %.12s: %s", q->blob, ursa_err2str(e));
        data = (uint8_t *)b;
    } else {
        snprintf(why, sizeof why, "the request has neither url nor blob");
    }
    ret = finish(bk, job, q, data, len, why, reason, rn);
    free(data);
    ursa__classify_request__free_unpacked(q, NULL);
    return ret;
}

/* Classifies what the downloads brought; what cannot be finished now (no
 * model, a full queue, Redis away) waits 500 ms and is tried again. */
static void finish_ready(bulk *bk) {
    pthread_mutex_lock(&bk->mu);
    bulk_item *in = bk->ready;
    bk->ready = NULL;
    pthread_mutex_unlock(&bk->mu);
    while (in) {
        bulk_item *it = in;
        in = it->next;
        it->next = bk->waiting;
        bk->waiting = it;
    }
    int64_t now = util_mono_ms();
    for (bulk_item **pp = &bk->waiting; *pp;) {
        bulk_item *it = *pp;
        if (it->retry_at > now) {
            pp = &it->next;
            continue;
        }
        char reason[512] = "";
        ursa_err e = kq_job_orphaned(it->job)
                         ? URSA_OK /* its new owner handles it */
                         : finish(bk, it->job, it->q, it->data, it->len, it->why, reason,
                                  sizeof reason);
        if (e != URSA_OK) {
            if (it->tries++ % 20 == 0)
                ULOG_WARN("event=bulk_retry request=%s err=\"%s\" tries=%d", it->q->request_id,
                          reason[0] ? reason : ursa_err2str(e), it->tries);
            it->retry_at = now + 500;
            pp = &it->next;
            continue;
        }
        *pp = it->next;
        kq_job_done(it->job);
        bk->held--;
        item_free(it);
    }
}

int bulk_tick(void *opaque, int timeout_ms) {
    bulk *bk = opaque;
    if (service_beat_due()) {
        served *m = batcher_current(bk->s->b);
        const char *kv[] = {"model", m ? served_id(m) : "-", NULL};
        service_beat(bk->r, kv);
        served_release(m);
    }
    if (bk->dl) finish_ready(bk);
    if (timeout_ms > 0) {
        int ms = timeout_ms < 50 ? timeout_ms : 50;
        pthread_mutex_lock(&bk->mu);
        if (!bk->ready) { /* a download that ends wakes the loop */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += (long)ms * 1000000L;
            if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&bk->cv, &bk->mu, &until);
        }
        pthread_mutex_unlock(&bk->mu);
    }
    return bk->held;
}

int bulk_init(bulk *bk, server *s, rstore *r, int max_downloads, char *err, size_t n) {
    memset(bk, 0, sizeof *bk);
    bk->s = s;
    bk->r = r;
    pthread_mutex_init(&bk->mu, NULL);
    pthread_cond_init(&bk->cv, NULL);
    if (!(bk->dl = downloads_new(&s->fo, s->max_body, max_downloads, err, n))) return -1;
    return 0;
}

void bulk_stop(bulk *bk) {
    /* after the consumer loop: the jobs held are its to forget (their
     * messages come again); what is in flight ends as cancelled */
    downloads_free(bk->dl);
    bk->dl = NULL;
    bulk_item *lists[2] = {bk->ready, bk->waiting};
    for (int i = 0; i < 2; i++)
        while (lists[i]) {
            bulk_item *it = lists[i];
            lists[i] = it->next;
            item_free(it);
        }
    bk->ready = bk->waiting = NULL;
    pthread_mutex_destroy(&bk->mu);
    pthread_cond_destroy(&bk->cv);
}
