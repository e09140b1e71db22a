/* ursa-crawler: URLs from ursa.crawl.requests become bytes in the blob store
 * and an ursa.images.downloaded message; failures become a final state with
 * a reason. Downloads run concurrently through common/net/fetch (libcurl
 * multi); each consumed message is held until its URL has its state in
 * Redis and its output is acknowledged, so a kill at any point loses
 * nothing and, since states only move forward, counts nothing twice. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "dataset.h"
#include "fetch.h"
#include "kq.h"
#include "log.h"
#include "msg.h"
#include "rstore.h"
#include "service.h"
#include "statedir.h"
#include "topics.h"
#include "util.h"

static const cfg_def crawler_defs[] = {
    {"crawler.max-attempts", CFG_INT, "3", 1, 100,
     "downloads of a URL that fails transiently (timeout, 429, 5xx) before it fails"},
    {"crawler.retry-ms", CFG_INT, "1000", 1, 3600000,
     "first wait before downloading again; doubles each attempt"},
    {NULL, 0, NULL, 0, 0, NULL}};

static const char usage[] =
    "usage: ursa-crawler [settings]\n"
    "Downloads the URLs of ursa.crawl.requests into the blob store. Transient\n"
    "failures are retried with backoff; every URL ends with a state in Redis.\n"
    "Private, loopback and link-local addresses are refused unless fetch.allow\n"
    "lists them. Stops cleanly on SIGTERM.\n\n";

typedef struct crawl crawl;

typedef struct task {
    crawl *cr;
    kq_job *job;
    Ursa__CrawlRequest *req; /* unpacked, owned */
    int attempt;
    int64_t due;  /* >0: waiting to start again at this time */
    struct task *next;
    /* a result that could not be recorded yet (Redis down): kept to retry */
    int have_result, ok, transient;
    char blob[65], reason[32], detail[256], content_type[128], final_url[1024];
    long status;
    uint64_t size;
} task;

struct crawl {
    const cfg *c;
    fetch_ctx *f;
    rstore *r;
    blob_store *bs;
    int max_attempts;
    int64_t retry_ms;
    int stopping;  /* after the loop: park every task, record nothing */
    task *waiting; /* retries and unrecorded results, checked by the tick */
    int nwaiting;
    uint64_t ok, failed, retried;
};

static void task_free(task *t) {
    ursa__crawl_request__free_unpacked(t->req, NULL);
    free(t);
}

static void wait_later(crawl *cr, task *t, int64_t delay) {
    t->due = util_mono_ms() + delay;
    t->next = cr->waiting;
    cr->waiting = t;
    cr->nwaiting++;
}

/* Records a task's result in Redis and Kafka; 0 when done (task freed), -1
 * when Redis is unavailable (the task waits to try again). */
static int finish(crawl *cr, task *t) {
    Ursa__CrawlRequest *q = t->req;
    const char *ds = q->header->dataset;
    ursa_err err;
    Ursa__Header h;
    char id[33];
    msg_header_init(&h, id, ds, NULL);
    if (t->ok) {
        err = ds_set_state(cr->r, ds, q->url_hash, DS_DOWNLOADED, "", "", 0, 0, NULL);
        if (err == URSA_ERR_UNAVAILABLE) return -1;
        Ursa__ImageDownloaded m = URSA__IMAGE_DOWNLOADED__INIT;
        m.header = &h;
        m.url = q->url;
        m.url_hash = q->url_hash;
        m.label = q->label;
        m.blob = t->blob;
        m.content_type = t->content_type;
        m.size = t->size;
        m.http_status = (uint32_t)t->status;
        m.final_url = t->final_url;
        void *buf;
        size_t len;
        if (msg_pack(&m.base, &buf, &len) == URSA_OK) {
            kq_job_produce(t->job, TOPIC_IMAGES_DOWNLOADED, t->blob, 64, buf, len);
            free(buf);
        }
        cr->ok++;
    } else {
        err = ds_set_state(cr->r, ds, q->url_hash, DS_FAILED, t->reason, t->detail,
                           t->transient, 0, NULL);
        if (err == URSA_ERR_UNAVAILABLE) return -1;
        Ursa__ImageRejected m = URSA__IMAGE_REJECTED__INIT;
        m.header = &h;
        m.url = q->url;
        m.url_hash = q->url_hash;
        m.label = q->label;
        m.stage = "crawler";
        m.reason = t->reason;
        m.detail = t->detail;
        m.transient = t->transient;
        void *buf;
        size_t len;
        if (msg_pack(&m.base, &buf, &len) == URSA_OK) {
            kq_job_produce(t->job, TOPIC_IMAGES_REJECTED, q->url_hash, strlen(q->url_hash), buf,
                           len);
            free(buf);
        }
        cr->failed++;
        char qd[300];
        ULOG_DEBUG("event=url_failed url_hash=%.12s reason=%s transient=%d detail=%s",
                   q->url_hash, t->reason, t->transient, ulog_quote(qd, sizeof qd, t->detail));
    }
    if (err && err != URSA_ERR_NOT_FOUND)
        ULOG_WARN("event=state_not_recorded url_hash=%.12s err=\"%s\"", q->url_hash,
                  ursa_err2str(err));
    kq_job_done(t->job);
    task_free(t);
    return 0;
}

static void on_fetched(void *opaque, const fetch_result *r);

static void start(crawl *cr, task *t) {
    t->attempt++;
    if (fetch_start(cr->f, t->req->url, on_fetched, t) != URSA_OK) {
        t->attempt--;
        wait_later(cr, t, 100);
    }
}

static void on_fetched(void *opaque, const fetch_result *r) {
    task *t = opaque;
    crawl *cr = t->cr;
    if (cr->stopping) { /* cancelled at exit: its message comes again later */
        wait_later(cr, t, 0);
        return;
    }
    if (!r->ok && r->transient && t->attempt < cr->max_attempts) {
        cr->retried++;
        wait_later(cr, t, util_backoff_ms(t->attempt, cr->retry_ms, cr->retry_ms * 60));
        return;
    }
    t->have_result = 1;
    t->ok = r->ok;
    t->transient = r->transient;
    t->status = r->http_status;
    snprintf(t->reason, sizeof t->reason, "%s", r->ok ? "" : r->reason);
    snprintf(t->detail, sizeof t->detail, "%s", r->ok ? "" : r->detail);
    snprintf(t->content_type, sizeof t->content_type, "%s", r->content_type ? r->content_type : "");
    snprintf(t->final_url, sizeof t->final_url, "%s", r->final_url ? r->final_url : "");
    if (r->ok) {
        t->size = r->len;
        if (blob_put(cr->bs, r->body, r->len, t->blob) != URSA_OK) {
            ULOG_ERROR("event=blob_write_failed url_hash=%.12s", t->req->url_hash);
            t->have_result = 0; /* download again later rather than lose it */
            wait_later(cr, t, 1000);
            return;
        }
    }
    if (finish(cr, t) < 0) wait_later(cr, t, 1000);
}

/* The loop's background work: due retries, then the network. */
static int tick(void *opaque, int timeout_ms) {
    crawl *cr = opaque;
    int64_t now = util_mono_ms();
    task **pp = &cr->waiting;
    while (*pp) {
        task *t = *pp;
        if (t->due > now) {
            pp = &t->next;
            continue;
        }
        *pp = t->next;
        cr->nwaiting--;
        if (t->have_result) {
            if (finish(cr, t) < 0) wait_later(cr, t, 1000);
        } else {
            start(cr, t);
        }
    }
    int active = fetch_run(cr->f, cr->nwaiting && timeout_ms > 50 ? 50 : timeout_ms);
    return active + cr->nwaiting;
}

static ursa_err handle(void *opaque, const kq_msg *m, kq_job *job, char *reason, size_t rn) {
    crawl *cr = opaque;
    Ursa__CrawlRequest *q = ursa__crawl_request__unpack(NULL, m->len, m->value);
    if (!q) {
        snprintf(reason, rn, "not a CrawlRequest protobuf");
        return URSA_ERR_PERMANENT;
    }
    if (msg_check_header(q->header, reason, rn) || !ds_name_valid(q->header->dataset) ||
        strlen(q->url_hash) != 64 || !*q->url) {
        if (!*reason) snprintf(reason, rn, "CrawlRequest without dataset, url or url_hash");
        ursa__crawl_request__free_unpacked(q, NULL);
        return URSA_ERR_PERMANENT;
    }
    ds_state st;
    ursa_err err = ds_get_state(cr->r, q->header->dataset, q->url_hash, &st);
    if (err == URSA_ERR_NOT_FOUND || (!err && ds_state_final(st))) {
        /* unknown to the dataset (deleted?) or already final: nothing to do */
        ursa__crawl_request__free_unpacked(q, NULL);
        return URSA_OK;
    }
    if (err) {
        snprintf(reason, rn, "redis: %s", rstore_last_error(cr->r));
        ursa__crawl_request__free_unpacked(q, NULL);
        return err;
    }
    task *t = calloc(1, sizeof *t);
    if (!t) {
        ursa__crawl_request__free_unpacked(q, NULL);
        return URSA_ERR_UNAVAILABLE;
    }
    t->cr = cr;
    t->job = job;
    t->req = q;
    kq_job_hold(job);
    start(cr, t);
    return URSA_OK;
}

static volatile sig_atomic_t run = 1;

int main(int argc, char **argv) {
    const cfg_def *const tables[] = {cfg_defs_base, cfg_defs_kafka, cfg_defs_redis,
                                     cfg_defs_blob, fetch_cfg_defs, crawler_defs, NULL};
    cfg *c;
    int argi, rc = service_setup("crawler", usage, tables, argc, argv, &c, &argi);
    if (rc >= 0) return rc;
    service_signals(&run);
    char bs[512], url[600], dir[4096], err[512];
    if (statedir_kafka_bootstrap(c, bs, sizeof bs, err, sizeof err) ||
        statedir_redis_url(c, url, sizeof url, err, sizeof err) ||
        statedir_blob_dir(c, dir, sizeof dir)) {
        fprintf(stderr, "ursa-crawler: %s\n", err);
        cfg_destroy(c);
        return 2;
    }
    crawl cr = {0};
    cr.c = c;
    cr.max_attempts = (int)cfg_int(c, "crawler.max-attempts");
    cr.retry_ms = cfg_int(c, "crawler.retry-ms");
    fetch_opts fo = fetch_opts_from_cfg(c);
    rc = 1;
    kq_producer *p = NULL;
    kq_consumer *kc = NULL;
    if (!(cr.f = fetch_new(&fo, err, sizeof err)) ||
        !(cr.r = rstore_new(url, (int)cfg_int(c, "redis.timeout-ms"), err, sizeof err)) ||
        !(cr.bs = blob_store_new(dir, err, sizeof err)) ||
        !(p = kq_producer_new(c, bs, err, sizeof err))) {
        ULOG_ERROR("event=start_failed err=\"%s\"", err);
        goto out;
    }
    const char *topics[] = {TOPIC_CRAWL_REQUESTS, NULL};
    if (!(kc = kq_consumer_new(c, bs, "ursa-crawler", topics, p, handle, &cr, err, sizeof err))) {
        ULOG_ERROR("event=start_failed err=\"%s\"", err);
        goto out;
    }
    kq_consumer_set_tick(kc, tick, &cr);
    ULOG_INFO("event=started kafka=%s redis=%s blobs=%s max_inflight=%d allow=\"%s\"", bs, url,
              dir, fo.max_total, fo.allow);
    rc = kq_consumer_run(kc, &run) == URSA_OK ? 0 : 1;
    ULOG_INFO("event=stopped downloaded=%llu failed=%llu retried=%llu",
              (unsigned long long)cr.ok, (unsigned long long)cr.failed,
              (unsigned long long)cr.retried);
out:
    /* Whatever is still unfinished was not stored: its messages come again. */
    kq_consumer_destroy(kc);
    cr.stopping = 1;
    fetch_destroy(cr.f);
    while (cr.waiting) {
        task *t = cr.waiting;
        cr.waiting = t->next;
        kq_job_done(t->job);
        task_free(t);
    }
    kq_producer_destroy(p);
    rstore_destroy(cr.r);
    blob_store_destroy(cr.bs);
    cfg_destroy(c);
    return rc;
}
