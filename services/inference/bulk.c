/* bulk.c: ursa.classify.requests in, ursa.classify.results out, on the
 * main thread's consumer loop. At least once and idempotent by request id:
 * the first result is kept in Redis (a week) and sent again for a replay,
 * and when two instances race, the stored one wins. An image comes from
 * the blob store or a URL (the same SSRF guard, cap and timeouts as
 * classify-url); the model's absence or a full queue is not the request's
 * fault, so it is retried (URSA_ERR_UNAVAILABLE), never dead-lettered. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "classify_results.h"
#include "data.h"
#include "jobs.h"
#include "msg.h"
#include "server.h"
#include "topics.h"
#include "util.h"

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
    } else if (q->url[0]) {
        if (fetch_url(s, q->url, NULL, NULL, &data, &len, why, sizeof why) != 200) {
            free(data);
            data = NULL;
        }
    } else {
        snprintf(why, sizeof why, "the request has neither url nor blob");
    }
    verdict v;
    memset(&v, 0, sizeof v);
    int st = 422;
    if (data) st = classify_wait(s, data, len, (int)q->top_k, &v);
    else snprintf(v.why, sizeof v.why, "%s", why);
    free(data);
    if (st == 503) { /* no model, or busy: not the request's fault */
        snprintf(reason, rn, "%s", v.why);
        verdict_free(&v);
        ursa__classify_request__free_unpacked(q, NULL);
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
    ursa__classify_request__free_unpacked(q, NULL);
    return ret;
}

int bulk_tick(void *opaque, int timeout_ms) {
    bulk *bk = opaque;
    if (service_beat_due()) {
        served *m = batcher_current(bk->s->b);
        const char *kv[] = {"model", m ? served_id(m) : "-", NULL};
        service_beat(bk->r, kv);
        served_release(m);
    }
    if (timeout_ms > 0) util_sleep_ms(timeout_ms < 50 ? timeout_ms : 50);
    return 0;
}
