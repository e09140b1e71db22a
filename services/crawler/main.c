/* ursa-crawler: URLs from ursa.crawl.requests become bytes in the blob store
 * and an ursa.images.downloaded message; failures become a final state with
 * a reason. When the blob store cannot be written (a full disk), the bytes
 * already downloaded are held in memory, fetching stops (the partitions are
 * paused, nothing is downloaded twice), the heartbeat says "degraded", and
 * the crawler goes on by itself once a write succeeds again. Downloads run
 * concurrently through common/io/fetch (libcurl multi) on the loop's
 * thread, on timers; blobs are written and made durable on another
 * (blob_syncer.h), since a slow disk must never hold the loop, and too many
 * downloads waiting for the disk pause intake, as a full disk does. Each
 * consumed message is held until its blob is durable, its URL has its
 * state in Redis and its output is acknowledged, so a kill at any point
 * loses nothing and, since states only move forward, counts nothing twice. */
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "blob_syncer.h"
#include "dataset.h"
#include "fetch.h"
#include "kq.h"
#include "log.h"
#include "metrics.h"
#include "msg.h"
#include "rstore.h"
#include "service.h"
#include "sha256.h"
#include "statedir.h"
#include "topics.h"
#include "util.h"

static const cfg_def crawler_defs[] = {
    {"crawler.max-attempts", CFG_INT, "3", 1, 100,
     "downloads of a URL that fails transiently (timeout, 429, 5xx) before it fails"},
    {"crawler.retry-ms", CFG_INT, "1000", 1, 3600000,
     "first wait before downloading again; doubles each attempt"},
    {"crawler.inline-max-bytes", CFG_INT, "-1", -1, 900000,
     "downloads up to this size go to the verifier inside their Kafka message instead of "
     "through the blob store; -1: 524288 when the blob store is an object store, else 0"},
    {"crawler.max-unsynced", CFG_INT, "512", 1, 100000,
     "downloads held in memory while the blob store writes them and makes them durable "
     "before intake pauses (a slow disk is backpressure); it resumes below half"},
    {NULL, 0, NULL, 0, 0, NULL}};

static const char usage[] =
    "usage: ursa-crawler [settings]\n"
    "Downloads the URLs of ursa.crawl.requests into the blob store. Transient\n"
    "failures are retried with backoff; every URL ends with a state in Redis.\n"
    "Private, loopback and link-local addresses are refused unless fetch.allow\n"
    "lists them. Stops cleanly on SIGTERM.\n\n";

typedef struct crawl crawl;

/* A gap this long between two runs of the network is a stall of the loop. */
enum { STALL_MS = 1000 };

typedef struct task {
    crawl *cr;
    kq_job *job;
    Ursa__CrawlRequest *req; /* unpacked, owned */
    int attempt;
    int64_t due;  /* >0: waiting to start again at this time */
    int64_t started; /* when its download began (util_mono_ms) */
    struct task *next;
    int ok, transient; /* the download's outcome */
    int inlined;       /* body goes in the message, not to the blob store */
    char *body;        /* downloaded bytes not yet stored (syncer, disk full), or inlined */
    size_t body_len;
    char blob[65], reason[32], detail[256], content_type[128], final_url[1024];
    long status;
    uint64_t size;
} task;

struct crawl {
    const cfg *c;
    kq_consumer *kc;
    fetch_ctx *f;
    rstore *r;
    blob_store *bs;
    int max_attempts;
    int64_t retry_ms;
    size_t inline_max; /* crawler.inline-max-bytes as resolved */
    int stopping;  /* after the loop: park every task, record nothing */
    task *waiting; /* downloads waiting to be tried again */
    int nwaiting;
    task *done, *done_tail; /* finished downloads waiting for the group commit */
    ds_batch batch; /* the group commit of the done list (blobs already durable) */
    /* downloads whose blobs the syncer writes and makes durable */
    blob_syncer *sy;
    int nsyncing;
    int max_unsynced; /* crawler.max-unsynced */
    int backlogged;   /* intake paused: too many wait for the disk */
    int intake_paused;
    uint64_t ok, failed, retried, replays_skipped;
    /* the blob store cannot be written: downloads held until it can */
    task *unwritten;
    int nunwritten;
    ursa_err degraded; /* OK, or why writes fail */
    int sync_degraded; /* the syncer's blob sync fails */
    int64_t degraded_since, write_retry_at, degraded_logged;
    char known[64][DS_NAME_MAX + 1]; /* datasets seen to exist (a ring) */
    int nknown, known_next;
    /* the loop itself stalled (a slow Redis or store held it): downloads
     * under way then may have timed out through no fault of their URL */
    int64_t ran_at, stall_end;
};

/* the crawler's own metrics (metrics.h), beside kq's */
static struct {
    metrics_series *downloaded, *retries, *active, *waiting, *held, *syncing;
    metrics_family *failed;
} met;

static void register_metrics(void) {
    met.downloaded =
        metrics_plain_counter("urls_downloaded_total", "URLs downloaded and stored as blobs.");
    met.failed = metrics_counter(
        "urls_failed_total",
        "URLs that ended without a download, by reason (http_404, timeout, blocked_address, ...).",
        "reason");
    met.retries = metrics_plain_counter("download_retries_total",
                                        "Downloads tried again after a transient failure.");
    met.active = metrics_plain_gauge("downloads_active", "Downloads in progress.");
    met.waiting =
        metrics_plain_gauge("downloads_waiting", "Downloads waiting to be tried (again).");
    met.held = metrics_plain_gauge(
        "downloads_held_for_disk",
        "Downloaded bytes held in memory while the blob store cannot be written.");
    met.syncing = metrics_plain_gauge(
        "downloads_syncing",
        "Downloads whose blobs are being written and made durable (not yet recorded).");
}

static void task_free(task *t) {
    ursa__crawl_request__free_unpacked(t->req, NULL);
    free(t->body);
    free(t);
}

static void wait_later(crawl *cr, task *t, int64_t delay) {
    t->due = util_mono_ms() + delay;
    t->next = cr->waiting;
    cr->waiting = t;
    cr->nwaiting++;
}

/* Sends a recorded task's message downstream and lets its job go. */
static void announce(crawl *cr, task *t, const ds_op *o) {
    Ursa__CrawlRequest *q = t->req;
    Ursa__Header h;
    char id[33];
    msg_header_init(&h, id, q->header->dataset, NULL);
    if (!o || o->err == URSA_ERR_NOT_FOUND || o->already_final) {
        /* not recorded (its partition moved to another crawler), unknown to
         * the dataset, or already final: nothing to announce */
    } else if (t->ok) {
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
        if (t->inlined) {
            m.data.data = (uint8_t *)t->body;
            m.data.len = t->body_len;
        }
        msg_job_produce(t->job, TOPIC_IMAGES_DOWNLOADED, t->blob, &m.base);
        cr->ok++;
        metrics_add(met.downloaded, 1);
    } else {
        Ursa__ImageRejected m = URSA__IMAGE_REJECTED__INIT;
        m.header = &h;
        m.url = q->url;
        m.url_hash = q->url_hash;
        m.label = q->label;
        m.stage = "crawler";
        m.reason = t->reason;
        m.detail = t->detail;
        m.transient = t->transient;
        msg_job_produce(t->job, TOPIC_IMAGES_REJECTED, q->url_hash, &m.base);
        cr->failed++;
        metrics_add(metrics_with(met.failed, t->reason), 1);
    }
    if (o && o->err && o->err != URSA_ERR_NOT_FOUND)
        ULOG_WARN("event=state_not_recorded url_hash=%.12s err=\"%s\"", q->url_hash,
                  ursa_err2str(o->err));
    kq_job_done(t->job);
    task_free(t);
}

/* Group commit of finished downloads, whose blobs the syncer made durable:
 * one pipelined round trip records their states, then their messages go
 * out. If Redis is down the batch waits and is sent again (idempotent). */
static void flush(crawl *cr) {
    if (!cr->batch.n) return;
    ds_op *ops = calloc((size_t)cr->batch.n, sizeof *ops);
    if (!ops) return;
    size_t i = 0;
    for (task *t = cr->done; t; t = t->next) {
        if (kq_job_orphaned(t->job)) continue; /* the new owner records it */
        ds_op *o = &ops[i++];
        o->kind = DS_OP_STATE;
        o->ds = t->req->header->dataset;
        o->url_hash = t->req->url_hash;
        o->state = t->ok ? DS_DOWNLOADED : DS_FAILED;
        o->reason = t->ok ? "" : t->reason;
        o->detail = t->ok ? "" : t->detail;
        o->transient = !t->ok && t->transient;
    }
    ursa_err err = ds_batch_commit(&cr->batch, cr->r, cr->bs, ops, i);
    if (err) {
        free(ops);
        return;
    }
    task *t = cr->done;
    cr->done = cr->done_tail = NULL;
    for (i = 0; t;) {
        task *next = t->next;
        announce(cr, t, kq_job_orphaned(t->job) ? NULL : &ops[i++]);
        t = next;
    }
    free(ops);
}

/* A finished task joins the group commit; wrote_blob when it wrote one. */
static void done_push(crawl *cr, task *t, int wrote_blob) {
    t->next = NULL;
    if (cr->done_tail) cr->done_tail->next = t;
    else cr->done = t;
    cr->done_tail = t;
    ds_batch_add(&cr->batch, wrote_blob);
}

static void on_fetched(void *opaque, const fetch_result *r);
static void degrade(crawl *cr, ursa_err err);

/* Pauses intake while the blob store cannot be written or too many
 * downloads wait for it; restarts it when neither holds. */
static void intake_update(crawl *cr) {
    int pause = cr->degraded || cr->backlogged;
    if (pause == cr->intake_paused) return;
    cr->intake_paused = pause;
    kq_consumer_pause_intake(cr->kc, pause);
}

/* Keeps a download whose blob could not be written (newest first). */
static void hold(crawl *cr, task *t) {
    t->next = cr->unwritten;
    cr->unwritten = t;
    cr->nunwritten++;
}

/* Hands a download's bytes (t->body) to the syncer; they come back in
 * on_stored. */
static void store(crawl *cr, task *t) {
    if (blob_syncer_put(cr->sy, t->body, t->body_len, t) != URSA_OK) {
        hold(cr, t);
        degrade(cr, URSA_ERR_NOMEM);
        return;
    }
    t->body = NULL; /* now the syncer's */
    cr->nsyncing++;
}

/* The syncer is done with a download: durable (err OK), it joins the group
 * commit; not written (a full disk), its bytes are held. */
static void on_stored(void *ctx, void *opaque, ursa_err err, void *data, size_t len) {
    crawl *cr = ctx;
    task *t = opaque;
    cr->nsyncing--;
    if (cr->stopping) { /* not recorded: its message comes again */
        free(data);
        kq_job_done(t->job);
        task_free(t);
        return;
    }
    if (!err) {
        free(data);
        done_push(cr, t, 0);
        return;
    }
    t->body = data;
    t->body_len = len;
    hold(cr, t);
    degrade(cr, err);
}

static void start(crawl *cr, task *t) {
    if (cr->degraded) { /* nothing is fetched that could not be stored */
        wait_later(cr, t, 1000);
        return;
    }
    t->attempt++;
    t->started = util_mono_ms();
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
    if (!r->ok && r->transient && t->started < cr->stall_end) {
        /* our loop stalled while it ran: its timers are ours, not the URL's */
        t->attempt--;
        metrics_add(met.retries, 1);
        wait_later(cr, t, 0);
        return;
    }
    if (!r->ok && r->transient && t->attempt < cr->max_attempts) {
        cr->retried++;
        metrics_add(met.retries, 1);
        ULOG_DEBUG("event=download_retry url_hash=%.12s attempt=%d reason=%s detail=\"%s\"",
                   t->req->url_hash, t->attempt, r->reason, r->detail);
        wait_later(cr, t, util_backoff_ms(t->attempt, cr->retry_ms, cr->retry_ms * 60));
        return;
    }
    t->ok = r->ok;
    t->transient = r->transient;
    t->status = r->http_status;
    snprintf(t->reason, sizeof t->reason, "%s", r->ok ? "" : r->reason);
    snprintf(t->detail, sizeof t->detail, "%s", r->ok ? "" : r->detail);
    snprintf(t->content_type, sizeof t->content_type, "%s", r->content_type ? r->content_type : "");
    snprintf(t->final_url, sizeof t->final_url, "%s", r->final_url ? r->final_url : "");
    if (r->ok && r->len && r->len <= cr->inline_max) {
        /* an object store costs a request a blob each way: small bytes ride
         * in the message, and the verifier stores only what it keeps */
        t->size = r->len;
        if (!(t->body = malloc(r->len ? r->len : 1))) {
            wait_later(cr, t, 1000);
            return;
        }
        memcpy(t->body, r->body, r->len);
        t->body_len = r->len;
        t->inlined = 1;
        sha256_hex(r->body, r->len, t->blob);
        done_push(cr, t, 0);
        return;
    }
    if (r->ok) { /* the bytes are kept until stored: never downloaded twice */
        t->size = r->len;
        if (!(t->body = malloc(r->len ? r->len : 1))) {
            wait_later(cr, t, 1000); /* out of memory: download again later */
            return;
        }
        memcpy(t->body, r->body, r->len);
        t->body_len = r->len;
        sha256_hex(r->body, r->len, t->blob);
        if (cr->degraded) {
            hold(cr, t);
            degrade(cr, cr->degraded);
        } else {
            store(cr, t);
        }
        return;
    }
    done_push(cr, t, 0);
}

/* The blob store cannot be written: stop taking work, say so, and try
 * again every second (write_held). Logs once, then every 30 s. */
static void degrade(crawl *cr, ursa_err err) {
    uint64_t free_b = blob_store_free_bytes(cr->bs);
    char why[400];
    if (err == URSA_ERR_NO_SPACE)
        snprintf(why, sizeof why, "blob store full (%llu bytes free)",
                 (unsigned long long)free_b);
    else
        blob_unwritable_why(cr->bs, err, why, sizeof why);
    int64_t now = util_mono_ms();
    if (!cr->degraded) {
        cr->degraded = err;
        cr->degraded_since = now;
        cr->write_retry_at = now + 1000;
        intake_update(cr);
        service_degraded(why);
        ULOG_ERROR("event=degraded why=\"%s\" err=\"%s\" note=\"fetching paused; held "
                   "downloads are written when space comes back\"",
                   why, ursa_err2str(err));
        cr->degraded_logged = now;
    } else if (now - cr->degraded_logged >= 30000) {
        ULOG_WARN("event=still_degraded why=\"%s\" held=%d for_ms=%lld", why,
                  cr->nunwritten, (long long)(now - cr->degraded_since));
        cr->degraded_logged = now;
        service_degraded(why);
    }
}

/* Hands the held downloads to the syncer again, oldest first, every second
 * while none are out (they fail fast on a full disk); once all come back
 * stored, the crawler takes work again (held_stored). */
static void write_held(crawl *cr) {
    int64_t now = util_mono_ms();
    if (!cr->degraded || cr->nsyncing || now < cr->write_retry_at) return;
    cr->write_retry_at = now + 1000;
    task *rev = NULL; /* the list is newest first */
    while (cr->unwritten) {
        task *t = cr->unwritten;
        cr->unwritten = t->next;
        t->next = rev;
        rev = t;
    }
    cr->nunwritten = 0;
    while (rev) {
        task *t = rev;
        rev = t->next;
        store(cr, t);
    }
}

/* Every held download is stored again: the degraded state is over. */
static void held_stored(crawl *cr) {
    if (!cr->degraded || cr->nunwritten || cr->nsyncing) return;
    ULOG_INFO("event=degraded_over held_written=yes for_ms=%lld",
              (long long)(util_mono_ms() - cr->degraded_since));
    cr->degraded = URSA_OK;
    if (!cr->sync_degraded) service_degraded(NULL);
    intake_update(cr);
}

/* The syncer's failing syncs: degraded while they last (the downloads wait
 * for them, held in memory); too many waiting pause intake. */
static void sync_health(crawl *cr) {
    int64_t since;
    ursa_err err = blob_syncer_failing(cr->sy, &since);
    if (err && !cr->sync_degraded) {
        char why[400];
        blob_unwritable_why(cr->bs, err, why, sizeof why);
        ULOG_ERROR("event=degraded why=\"%s\" note=\"blob sync fails; downloads wait for it\"",
                   why);
        cr->sync_degraded = 1;
        if (!cr->degraded) service_degraded(why);
    } else if (!err && cr->sync_degraded) {
        ULOG_INFO("event=degraded_over");
        cr->sync_degraded = 0;
        if (!cr->degraded) service_degraded(NULL);
    }
    int waiting = cr->nsyncing + cr->batch.n;
    if (!cr->backlogged && waiting >= cr->max_unsynced) {
        cr->backlogged = 1;
        ULOG_WARN("event=intake_paused waiting=%d max_unsynced=%d note=\"the blob store is "
                  "slower than the downloads\"", waiting, cr->max_unsynced);
    } else if (cr->backlogged && waiting <= cr->max_unsynced / 2) {
        cr->backlogged = 0;
        ULOG_INFO("event=intake_resumed waiting=%d", waiting);
    }
    intake_update(cr);
}

/* The loop's background work: due retries, the network, the group commit. */
static int tick(void *opaque, int timeout_ms) {
    crawl *cr = opaque;
    blob_syncer_collect(cr->sy, on_stored, cr);
    held_stored(cr);
    write_held(cr);
    sync_health(cr);
    int64_t now = util_mono_ms();
    task **pp = &cr->waiting;
    while (*pp && !cr->degraded) {
        task *t = *pp;
        if (t->due > now) {
            pp = &t->next;
            continue;
        }
        *pp = t->next;
        cr->nwaiting--;
        start(cr, t);
    }
    if (cr->batch.n && timeout_ms > DS_BATCH_MS) timeout_ms = DS_BATCH_MS;
    if (cr->nwaiting && timeout_ms > 50) timeout_ms = 50;
    if (cr->nsyncing && timeout_ms > DS_BATCH_MS) timeout_ms = DS_BATCH_MS;
    now = util_mono_ms();
    if (cr->ran_at && now - cr->ran_at > STALL_MS) { /* since the network last ran */
        cr->stall_end = now;
        ULOG_WARN("event=loop_stalled ms=%lld note=\"downloads under way then that fail "
                  "transiently are tried again, not counted\"", (long long)(now - cr->ran_at));
    }
    int active = fetch_run(cr->f, timeout_ms);
    cr->ran_at = util_mono_ms();
    if (ds_batch_due(&cr->batch)) flush(cr);
    metrics_set(met.active, active);
    metrics_set(met.waiting, cr->nwaiting);
    metrics_set(met.held, cr->nunwritten);
    metrics_set(met.syncing, cr->nsyncing);
    if (service_beat_due()) {
        char ok[24], failed[24], inflight[16];
        snprintf(ok, sizeof ok, "%llu", (unsigned long long)cr->ok);
        snprintf(failed, sizeof failed, "%llu", (unsigned long long)cr->failed);
        snprintf(inflight, sizeof inflight, "%d", active);
        char held[16], syncing[16];
        snprintf(held, sizeof held, "%d", cr->nunwritten);
        snprintf(syncing, sizeof syncing, "%d", cr->nsyncing);
        const char *kv[] = {"downloaded", ok, "failed", failed, "in_flight", inflight,
                            "held_for_disk", held, "syncing", syncing, NULL};
        service_beat(cr->r, kv);
    }
    if (cr->degraded && timeout_ms > 0 && !active && !cr->batch.n && !cr->nsyncing)
        util_sleep_ms(timeout_ms > 100 ? 100 : timeout_ms); /* nothing to do but wait */
    return active + cr->batch.n + cr->nsyncing + (cr->degraded ? 0 : cr->nwaiting);
}

/* A request is checked against state before anything is fetched: its
 * url_hash must be its URL's, and its dataset one that exists (kept in a
 * small ring once seen: a round trip per message is not harmless, a
 * dataset is rarely removed). URSA_ERR_PERMANENT with the reason (a dead
 * letter), UNAVAILABLE while Redis cannot say. */
static ursa_err request_check(crawl *cr, const Ursa__CrawlRequest *q, char *reason, size_t rn) {
    char h[65];
    ds_url_hash(q->url, h);
    if (strcmp(h, q->url_hash)) {
        snprintf(reason, rn, "url_hash %.16s... is not the sha256 of the URL (%.16s...)",
                 q->url_hash, h);
        return URSA_ERR_PERMANENT;
    }
    const char *ds = q->header->dataset;
    for (int i = 0; i < cr->nknown; i++)
        if (!strcmp(cr->known[i], ds)) return URSA_OK;
    int exists = 0;
    if (ds_exists(cr->r, ds, &exists)) {
        snprintf(reason, rn, "cannot check dataset %s: %s", ds, rstore_last_error(cr->r));
        return URSA_ERR_UNAVAILABLE;
    }
    if (!exists) {
        snprintf(reason, rn, "unknown dataset %s", ds);
        return URSA_ERR_PERMANENT;
    }
    snprintf(cr->known[cr->known_next], sizeof cr->known[0], "%s", ds);
    cr->known_next = (cr->known_next + 1) % 64;
    if (cr->nknown < 64) cr->nknown++;
    return URSA_OK;
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
    ursa_err ce = request_check(cr, q, reason, rn);
    if (ce) {
        ULOG_WARN("event=request_refused url_hash=%.12s dataset=%s reason=\"%s\"", q->url_hash,
                  q->header->dataset, reason);
        ursa__crawl_request__free_unpacked(q, NULL);
        return ce;
    }
    /* A request seen again (a rebalance after a failed commit hands out the
     * backlog again, as many times as the commit fails) is looked up first:
     * a URL with a final state is not downloaded again. A first delivery is
     * not: a round trip per message is not free, and states only move
     * forward, so a replay from elsewhere (a crashed crawler's) is harmless. */
    ds_state st;
    if (m->replay && ds_url_state(cr->r, q->header->dataset, q->url_hash, &st) == URSA_OK &&
        ds_state_final(st)) {
        cr->replays_skipped++;
        ursa__crawl_request__free_unpacked(q, NULL);
        return URSA_OK;
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

static atomic_int run = 1;

int main(int argc, char **argv) {
    const cfg_def *const tables[] = {cfg_defs_base, cfg_defs_kafka, cfg_defs_redis,
                                     cfg_defs_blob, fetch_cfg_defs, crawler_defs, NULL};
    cfg *c;
    int argi, rc = service_setup("crawler", 0, usage, tables, argc, argv, &c, &argi);
    if (rc >= 0) return rc;
    register_metrics();
    service_signals(&run);
    service_conns sc;
    crawl cr = {0};
    kq_consumer *kc = NULL;
    char err[512];
    fetch_opts fo = fetch_opts_from_cfg(c);
    if (service_connect(c, "ursa-crawler", &sc, &rc)) goto out;
    cr.c = c;
    cr.r = sc.r;
    cr.bs = sc.bs;
    cr.max_attempts = (int)cfg_int(c, "crawler.max-attempts");
    cr.retry_ms = cfg_int(c, "crawler.retry-ms");
    long long im = cfg_int(c, "crawler.inline-max-bytes");
    cr.inline_max = im >= 0 ? (size_t)im : blob_store_remote(sc.bs) ? 524288 : 0;
    cr.max_unsynced = (int)cfg_int(c, "crawler.max-unsynced");
    rc = 1;
    if (!(cr.sy = blob_syncer_new(sc.bs, err, sizeof err))) {
        fprintf(stderr, "ursa-crawler: %s\n", err);
        goto out;
    }
    if (!(cr.f = fetch_new(&fo, err, sizeof err))) {
        fprintf(stderr, "ursa-crawler: %s\n", err);
        goto out;
    }
    const char *topics[] = {TOPIC_CRAWL_REQUESTS, NULL};
    if (!(kc = kq_consumer_new(c, sc.a.kafka, "ursa-crawler", topics, sc.p, handle, &cr, err,
                               sizeof err))) {
        ULOG_ERROR("event=start_failed err=\"%s\"", err);
        goto out;
    }
    cr.kc = kc;
    kq_consumer_set_tick(kc, tick, &cr);
    ULOG_INFO("event=started kafka=%s redis=%s blobs=\"%s\" inline_max=%zu max_inflight=%d "
              "allow=\"%s\"", sc.a.kafka, sc.a.redis_shown, blob_store_where(sc.bs), cr.inline_max,
              fo.max_total, fo.allow);
    rc = kq_consumer_run(kc, &run) == URSA_OK ? 0 : 1;
    blob_syncer_stats ss;
    blob_syncer_get_stats(cr.sy, &ss);
    ULOG_INFO("event=stopped downloaded=%llu failed=%llu retried=%llu replays_skipped=%llu "
              "blob_puts=%llu blob_write_ms=%llu blob_syncs=%llu blob_sync_ms=%llu "
              "blob_sync_max_ms=%llu",
              (unsigned long long)cr.ok, (unsigned long long)cr.failed,
              (unsigned long long)cr.retried, (unsigned long long)cr.replays_skipped,
              (unsigned long long)ss.puts, (unsigned long long)ss.write_ms,
              (unsigned long long)ss.syncs, (unsigned long long)ss.sync_ms,
              (unsigned long long)ss.max_sync_ms);
out:
    /* Whatever is still unfinished was not stored: its messages come again. */
    kq_consumer_destroy(kc);
    cr.stopping = 1;
    fetch_destroy(cr.f);
    blob_syncer_destroy(cr.sy, on_stored, &cr);
    while (cr.waiting) {
        task *t = cr.waiting;
        cr.waiting = t->next;
        kq_job_done(t->job);
        task_free(t);
    }
    while (cr.done) {
        task *t = cr.done;
        cr.done = t->next;
        kq_job_done(t->job);
        task_free(t);
    }
    while (cr.unwritten) {
        task *t = cr.unwritten;
        cr.unwritten = t->next;
        kq_job_done(t->job);
        task_free(t);
    }
    service_disconnect(&sc);
    cfg_destroy(c);
    return rc;
}
