/* ursa-verifier: downloaded bytes become a verified, normalised JPEG in the
 * blob store and a manifest entry, or a rejection with its reason. The
 * checks are common/img's (the same as `ursa verify`). Handling is
 * idempotent: blobs are content-addressed and dataset states only move
 * forward, so a redelivered message changes nothing. Cleaning decisions
 * that Kafka lost before they were applied (a broker restart) are sent
 * again from Redis by a sweep, at start and every few seconds. */
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "dataset.h"
#include "dataset_edits.h"
#include "image.h"
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

static const char usage[] =
    "usage: ursa-verifier [settings]\n"
    "Checks every image of ursa.images.downloaded (JPEG, PNG, GIF, WebP; rejects\n"
    "empty, truncated, corrupt, non-images, bombs and tiny images), stores it as\n"
    "an RGB JPEG no larger than img.max-size and adds it to its dataset's\n"
    "manifest. Applies the cleaning decisions of ursa.dataset.edits (delete,\n"
    "relabel, restore; see `ursa clean`). Stops cleanly on SIGTERM.\n\n";

/* A checked image waiting for the group commit. */
typedef struct {
    kq_job *job;
    Ursa__ImageDownloaded *d; /* owned */
    int rejected;
    char reason[32], detail[200], key[65];
    int w, h;
} pending;

typedef struct {
    rstore *r;
    blob_store *bs;
    kq_producer *p;
    long long edit_resend_ms; /* pending edits this old are sent again */
    int64_t next_edit_sweep;
    img_opts o;
    size_t max_bytes;
    uint64_t verified, rejected, duplicates;
    int degraded; /* the last blob write failed */
    pending batch[DS_BATCH_ITEMS];
    ds_batch g; /* the group commit of batch[0..g.n) */
} verifier;

/* the verifier's own metrics (metrics.h), beside kq's */
static struct {
    metrics_series *verified, *edits, *pending;
    metrics_family *rejected;
} met;

static void register_metrics(void) {
    met.verified = metrics_plain_counter("images_verified_total",
                                         "Images verified, normalised and added to their dataset.");
    met.rejected = metrics_counter("images_rejected_total",
                                   "Images rejected, by reason (not_an_image, truncated, "
                                   "duplicate, label_conflict, ...).",
                                   "reason");
    met.edits =
        metrics_plain_counter("edits_total", "Cleaning decisions of ursa.dataset.edits handled.");
    met.pending =
        metrics_plain_gauge("images_pending", "Checked images waiting for the group commit.");
}

static ursa_err send_rejected(kq_job *job, const Ursa__ImageDownloaded *d, const char *reason,
                              const char *detail) {
    Ursa__Header h;
    char id[33];
    msg_header_init(&h, id, d->header->dataset, NULL);
    Ursa__ImageRejected m = URSA__IMAGE_REJECTED__INIT;
    m.header = &h;
    m.url = d->url;
    m.url_hash = d->url_hash;
    m.label = d->label;
    m.stage = "verifier";
    m.reason = (char *)reason;
    m.detail = (char *)detail;
    return msg_job_produce(job, TOPIC_IMAGES_REJECTED, d->url_hash, &m.base);
}

/* Checks one image and stores it; the Redis and Kafka side waits for the
 * group commit in flush(). */
static ursa_err verify_one(verifier *v, Ursa__ImageDownloaded *d, kq_job *job, char *reason,
                           size_t rn) {
    char *data = NULL;
    size_t len = 0;
    pending *p = &v->batch[v->g.n];
    int wrote = 0; /* a blob written lazily: the batch must sync */
    memset(p, 0, sizeof *p);
    int inlined = d->data.len > 0; /* the bytes came in the message */
    ursa_err err = URSA_OK;
    if (inlined) {
        char got[65];
        sha256_hex(d->data.data, d->data.len, got);
        if (strcmp(got, d->blob) != 0) {
            snprintf(reason, rn, "the message's bytes do not hash to its blob %.12s", d->blob);
            return URSA_ERR_PERMANENT;
        }
        data = (char *)d->data.data;
        len = d->data.len;
        if (len > v->max_bytes) err = URSA_ERR_TOO_LARGE;
    } else {
        err = blob_get(v->bs, d->blob, v->max_bytes, &data, &len);
    }
    if (err == URSA_ERR_TOO_LARGE) { /* bigger than verifier.max-bytes: a verdict */
        p->rejected = 1;
        snprintf(p->reason, sizeof p->reason, "too_large");
        snprintf(p->detail, sizeof p->detail, "more than %zu bytes", v->max_bytes);
        goto queue;
    }
    if (err) {
        /* the crawler wrote it before announcing it: a missing or damaged
         * blob means a shared volume is not mounted or was damaged; I/O
         * errors wait for the disk, the rest are retried and then
         * dead-lettered (`ursa retry --pending` downloads them again) */
        snprintf(reason, rn, "source blob %.12s: %s", d->blob, ursa_err2str(err));
        return err == URSA_ERR_IO || err == URSA_ERR_UNAVAILABLE ? URSA_ERR_UNAVAILABLE
                                                                 : URSA_ERR_TRANSIENT;
    }
    uint8_t *jpeg = NULL;
    size_t jl = 0;
    img_reject rej;
    err = img_verify((const uint8_t *)data, len, &v->o, &jpeg, &jl, &p->w, &p->h, &rej);
    if (!inlined) { /* else they are the message's, and may be stored below */
        free(data);
        data = NULL;
    }
    if (err == URSA_ERR_INVALID) {
        p->rejected = 1;
        snprintf(p->reason, sizeof p->reason, "%s", rej.reason);
        snprintf(p->detail, sizeof p->detail, "%s", rej.detail);
    } else if (err) {
        snprintf(reason, rn, "verify: %s", ursa_err2str(err));
        return URSA_ERR_TRANSIENT; /* out of memory: maybe better next time */
    } else {
        /* no jpeg: the downloaded file is already normalised, and stored
         * unless it came in the message */
        if (jpeg) err = blob_put_lazy(v->bs, jpeg, jl, p->key), wrote = err == URSA_OK;
        else if (inlined) err = blob_put_lazy(v->bs, data, len, p->key), wrote = err == URSA_OK;
        else snprintf(p->key, sizeof p->key, "%s", d->blob);
        free(jpeg);
        if (err) {
            /* an outage: the loop retries this message (sleeping, taking
             * nothing new) until the disk takes it; the heartbeat says why */
            char why[400];
            if (err == URSA_ERR_NO_SPACE)
                snprintf(why, sizeof why, "blob store full (%llu bytes free)",
                         (unsigned long long)blob_store_free_bytes(v->bs));
            else
                blob_unwritable_why(v->bs, err, why, sizeof why);
            if (!v->degraded) ULOG_ERROR("event=degraded why=\"%s\"", why);
            v->degraded = 1;
            service_degraded(why);
            snprintf(reason, rn, "cannot write blob: %s", ursa_err2str(err));
            return err == URSA_ERR_NO_SPACE ? err : URSA_ERR_UNAVAILABLE;
        }
        /* degraded until the batch's blobs are stored: flush() says when */
    }
queue:
    p->job = job;
    p->d = d;
    kq_job_hold(job);
    ds_batch_add(&v->g, wrote);
    return URSA_OK;
}

/* Sends one committed image's message and lets its job go. */
static void announce(verifier *v, pending *p, const ds_op *o) {
    Ursa__ImageDownloaded *d = p->d;
    if (!o || o->err == URSA_ERR_NOT_FOUND || o->already_final) {
        /* not recorded (partition moved), unknown URL, or already final */
    } else if (o->err) {
        ULOG_WARN("event=state_not_recorded url_hash=%.12s err=\"%s\"", d->url_hash,
                  ursa_err2str(o->err));
    } else if (p->rejected) {
        v->rejected++;
        metrics_add(metrics_with(met.rejected, p->reason), 1);
        send_rejected(p->job, d, p->reason, p->detail);
    } else if (o->outcome != DS_VERIFIED) {
        const char *why = o->outcome == DS_DUPLICATE ? "duplicate" : "label_conflict";
        v->duplicates++;
        metrics_add(metrics_with(met.rejected, why), 1);
        send_rejected(p->job, d, why, "same bytes as another URL of the dataset");
    } else {
        if (!o->replayed) { /* a message handled again is announced again, counted once */
            v->verified++;
            metrics_add(met.verified, 1);
        }
        Ursa__Header hd;
        char id[33];
        msg_header_init(&hd, id, d->header->dataset, NULL);
        Ursa__ImageVerified m = URSA__IMAGE_VERIFIED__INIT;
        m.header = &hd;
        m.url = d->url;
        m.url_hash = d->url_hash;
        m.label = d->label;
        m.source_blob = d->blob;
        m.blob = p->key;
        m.width = (uint32_t)p->w;
        m.height = (uint32_t)p->h;
        msg_job_produce(p->job, TOPIC_IMAGES_VERIFIED, p->key, &m.base);
    }
    kq_job_done(p->job);
    ursa__image_downloaded__free_unpacked(d, NULL);
    p->d = NULL;
}

/* Group commit: one syncfs for the new JPEGs, one pipelined round trip for
 * the manifest and the states, then the messages. If Redis is down the
 * batch waits (holding its jobs) and is sent again, which is idempotent. */
static void flush(verifier *v) {
    if (!v->g.n || util_mono_ms() < v->g.retry_at) return;
    ds_op ops[DS_BATCH_ITEMS];
    memset(ops, 0, sizeof ops);
    int nops = 0, n = v->g.n;
    for (int i = 0; i < n; i++) {
        pending *p = &v->batch[i];
        if (kq_job_orphaned(p->job)) continue; /* the new owner records it */
        ds_op *o = &ops[nops++];
        o->ds = p->d->header->dataset;
        o->url_hash = p->d->url_hash;
        if (p->rejected) {
            o->kind = DS_OP_STATE;
            o->state = DS_REJECTED;
            o->reason = p->reason;
            o->detail = p->detail;
        } else {
            o->kind = DS_OP_IMAGE;
            o->src_blob = p->d->blob;
            o->jpeg_blob = p->key;
        }
    }
    ursa_err err = ds_batch_commit(&v->g, v->r, v->bs, ops, (size_t)nops);
    if (err == URSA_ERR_IO) { /* the blobs are not stored yet: say so, keep the batch */
        char why[400];
        blob_unwritable_why(v->bs, URSA_ERR_UNAVAILABLE, why, sizeof why);
        if (!v->degraded) ULOG_ERROR("event=degraded why=\"%s\"", why);
        v->degraded = 1;
        service_degraded(why);
    }
    if (err) return;
    if (v->degraded) {
        ULOG_INFO("event=degraded_over");
        v->degraded = 0;
        service_degraded(NULL);
    }
    for (int i = 0, k = 0; i < n; i++)
        announce(v, &v->batch[i], kq_job_orphaned(v->batch[i].job) ? NULL : &ops[k++]);
}

/* Sends again the edits of every dataset that are still pending
 * edit_resend_ms after they were sent: their message was lost. */
static void sweep_edits(verifier *v) {
    redisReply *names = NULL;
    if (ds_list(v->r, &names)) return;
    for (size_t i = 0; names->type == REDIS_REPLY_ARRAY && i < names->elements; i++) {
        const char *ds = names->element[i]->str;
        size_t n = 0;
        if (!ds_name_valid(ds)) continue;
        if (ds_edits_resend(v->r, v->p, ds, v->edit_resend_ms, &n) == URSA_OK && n)
            ULOG_WARN("event=edits_sent_again dataset=%s edits=%zu note=\"not applied %lld s "
                      "after they were sent: their messages were lost\"",
                      ds, n, v->edit_resend_ms / 1000);
    }
    freeReplyObject(names);
}

static int tick(void *opaque, int timeout_ms) {
    verifier *v = opaque;
    int64_t now = util_mono_ms();
    if (now >= v->next_edit_sweep) {
        v->next_edit_sweep = now + 5000;
        sweep_edits(v);
    }
    if (service_beat_due()) {
        char ok[24], rej[24], dup[24];
        snprintf(ok, sizeof ok, "%llu", (unsigned long long)v->verified);
        snprintf(rej, sizeof rej, "%llu", (unsigned long long)v->rejected);
        snprintf(dup, sizeof dup, "%llu", (unsigned long long)v->duplicates);
        const char *kv[] = {"verified", ok, "rejected", rej, "duplicates", dup, NULL};
        service_beat(v->r, kv);
    }
    metrics_set(met.pending, v->g.n);
    if (ds_batch_due(&v->g)) flush(v);
    else if (v->g.n && timeout_ms > 0)
        util_sleep_ms(timeout_ms < DS_BATCH_MS ? timeout_ms : DS_BATCH_MS);
    return v->g.n;
}

/* Checks an edit against the dataset (the keys of other hash tags than
 * the edits', read before the script: a verified image, its given label
 * and the dataset's classes never change once there). NULL, or why the
 * edit is refused; URSA_ERR_UNAVAILABLE in *err when Redis failed. */
static const char *edit_against_state(verifier *v, const char *ds, const ds_edit *e, char *why,
                                      size_t wn, ursa_err *err) {
    ds_record rec;
    *err = ds_image_get(v->r, ds, e->image, &rec);
    if (*err == URSA_ERR_NOT_FOUND) {
        *err = URSA_OK;
        snprintf(why, wn, "image %s is no verified image of dataset %s", e->image, ds);
        return why;
    }
    if (*err) return NULL;
    if (strcmp(e->from, rec.label)) {
        snprintf(why, wn, "the label before, \"%s\", is not the image's given label \"%s\"",
                 e->from, rec.label);
        return why;
    }
    int known = 1;
    if (e->op == ED_RELABEL && (*err = ds_label_exists(v->r, ds, e->to, &known))) return NULL;
    if (!known) {
        /* a class no URL was ingested under would be a class of one or a
         * few images, which training cannot split: new classes come with
         * their images (ursa ingest) */
        snprintf(why, wn, "the new label \"%s\" is no class of dataset %s", e->to, ds);
        return why;
    }
    return NULL;
}

/* Dead-letters an edit that will never apply: recorded as refused (for
 * the sender waiting on it) and no more pending, when its dataset exists;
 * an unknown dataset gets no key. */
static ursa_err refuse_edit(verifier *v, const char *ds, int ds_known, const ds_edit *e,
                            const char *why, char *reason, size_t rn) {
    int recorded = 0;
    if (ds_known) {
        if (ds_edit_refuse(v->r, ds, e->msg_id, why, &recorded)) {
            snprintf(reason, rn, "refusing an edit: Redis: %s", rstore_last_error(v->r));
            return URSA_ERR_UNAVAILABLE;
        }
        if (!recorded) return URSA_OK; /* applied before: a replay, nothing to refuse */
    } else if (ds_name_valid(ds)) {
        ds_edit_forget(v->r, ds, e->msg_id); /* deletes, never creates, a key */
    }
    char q[400];
    ULOG_WARN("event=edit_refused dataset=%s image=%.32s op=%s msg=%s why=%s",
              ds_name_valid(ds) ? ds : "-", e->image,
              ed_op_name(e->op), e->msg_id, ulog_quote(q, sizeof q, why));
    snprintf(reason, rn, "edit refused: %s", why);
    return URSA_ERR_PERMANENT;
}

/* A cleaning decision of ursa.dataset.edits: checked against state, then
 * applied once per message id (dataset_edits.h), so a redelivery changes
 * nothing twice, or refused: dead-lettered with the reason when it is
 * wrong, recorded (not dead-lettered) when it lost a race to a concurrent
 * edit of the same image. */
static ursa_err apply_edit(verifier *v, const kq_msg *m, char *reason, size_t rn) {
    Ursa__DatasetEdit *d = ursa__dataset_edit__unpack(NULL, m->len, m->value);
    if (!d) {
        snprintf(reason, rn, "not a DatasetEdit protobuf");
        return URSA_ERR_PERMANENT;
    }
    ursa_err err = msg_check_header(d->header, reason, rn);
    if (err) {
        ursa__dataset_edit__free_unpacked(d, NULL);
        return URSA_ERR_PERMANENT;
    }
    const char *ds = d->header->dataset;
    ds_edit e = {0};
    e.ts_ms = d->header->ts_ms;
    e.op = ed_op_parse(d->op);
    snprintf(e.msg_id, sizeof e.msg_id, "%s", d->header->id);
    char why[300];
    const char *problem = strlen(d->image) > 32 || strlen(d->label) > 64 ||
                                  strlen(d->new_label) > 64 || strlen(d->base_label) > 64
                              ? "a field is too long"
                              : NULL;
    snprintf(e.image, sizeof e.image, "%s", d->image);
    snprintf(e.from, sizeof e.from, "%s", d->label);
    snprintf(e.to, sizeof e.to, "%s", d->new_label);
    snprintf(e.author, sizeof e.author, "%s", d->author);
    snprintf(e.reason, sizeof e.reason, "%s", d->reason);
    snprintf(e.base_to, sizeof e.base_to, "%s", d->base_label);
    if (!problem && ed_base_parse(d->base_op, &e.base_op))
        problem = "it does not say the decision in force it was made against (base_op none, "
                  "delete or relabel; a sender older than the check?)";
    if (!problem) problem = ds_edit_problem(ds, &e);
    int known = 0;
    if (ds_name_valid(ds) && ds_exists(v->r, ds, &known)) {
        snprintf(reason, rn, "checking an edit: Redis: %s", rstore_last_error(v->r));
        err = URSA_ERR_UNAVAILABLE;
    } else if (problem) {
        snprintf(why, sizeof why, "bad edit: %s", problem);
        err = refuse_edit(v, ds, known, &e, why, reason, rn);
    } else if (!known) {
        snprintf(why, sizeof why, "dataset %s does not exist", ds);
        err = refuse_edit(v, ds, 0, &e, why, reason, rn);
    } else if ((problem = edit_against_state(v, ds, &e, why, sizeof why, &err))) {
        err = refuse_edit(v, ds, 1, &e, problem, reason, rn);
    } else if (err) {
        snprintf(reason, rn, "checking an edit: Redis: %s", rstore_last_error(v->r));
        err = URSA_ERR_UNAVAILABLE;
    } else {
        int applied = 0;
        long long seq = 0;
        ds_edit_refusal ref;
        err = ds_edit_apply(v->r, ds, &e, &applied, &seq, &ref);
        if (err) {
            snprintf(reason, rn, "applying an edit: Redis: %s", rstore_last_error(v->r));
            err = URSA_ERR_UNAVAILABLE;
        } else if (applied < 0) {
            /* lost a race, or refused before: the sender reads why per
             * image; a conflict is no broken message, so no dead letter */
            char q[400];
            ds_edit_refusal_text(&e, &ref, why, sizeof why);
            ULOG_WARN("event=edit_refused dataset=%s image=%s op=%s msg=%s why=%s", ds, e.image,
                      ed_op_name(e.op), e.msg_id, ulog_quote(q, sizeof q, why));
        } else {
            char q[300];
            metrics_add(met.edits, 1);
            ULOG_INFO("event=edit dataset=%s seq=%lld image=%s op=%s to=%s applied=%d", ds, seq,
                      e.image, ed_op_name(e.op), ulog_quote(q, sizeof q, e.to), applied);
        }
    }
    ursa__dataset_edit__free_unpacked(d, NULL);
    return err;
}

static ursa_err handle(void *opaque, const kq_msg *m, kq_job *job, char *reason, size_t rn) {
    verifier *v = opaque;
    if (!strcmp(m->topic, TOPIC_DATASET_EDITS)) return apply_edit(v, m, reason, rn);
    Ursa__ImageDownloaded *d = ursa__image_downloaded__unpack(NULL, m->len, m->value);
    if (!d) {
        snprintf(reason, rn, "not an ImageDownloaded protobuf");
        return URSA_ERR_PERMANENT;
    }
    ursa_err err;
    if ((err = msg_check_header(d->header, reason, rn)) == URSA_OK) {
        if (!ds_name_valid(d->header->dataset) || strlen(d->url_hash) != 64 ||
            !blob_key_valid(d->blob)) {
            snprintf(reason, rn, "ImageDownloaded without dataset, url_hash or blob");
            err = URSA_ERR_PERMANENT;
        } else {
            if (v->g.n == DS_BATCH_ITEMS) flush(v); /* make room */
            if (v->g.n == DS_BATCH_ITEMS) {          /* Redis is down: kq waits and retries */
                snprintf(reason, rn, "batch full, Redis unavailable: %s", rstore_last_error(v->r));
                err = URSA_ERR_UNAVAILABLE;
            } else {
                err = verify_one(v, d, job, reason, rn);
                if (err == URSA_OK) return URSA_OK; /* d now belongs to the batch */
            }
        }
    } else {
        err = URSA_ERR_PERMANENT;
    }
    ursa__image_downloaded__free_unpacked(d, NULL);
    return err;
}

static atomic_int run = 1;

int main(int argc, char **argv) {
    static const cfg_def verifier_defs[] = {
        {"verifier.max-bytes", CFG_INT, "50000000", 1024, 4e9, "largest source blob read"},
        {"verifier.edit-resend-ms", CFG_INT, "30000", 1000, 86400000,
         "cleaning decisions sent this long ago and still not applied are sent again "
         "(Kafka lost them: an embedded broker's restart), at most this often"},
        {NULL, 0, NULL, 0, 0, NULL}};
    const cfg_def *const tables[] = {cfg_defs_base, cfg_defs_kafka, cfg_defs_redis, cfg_defs_blob,
                                     img_cfg_defs, verifier_defs, NULL};
    cfg *c;
    int argi, rc = service_setup("verifier", 0, usage, tables, argc, argv, &c, &argi);
    if (rc >= 0) return rc;
    register_metrics();
    service_signals(&run);
    static verifier v; /* holds a batch of FLUSH_ITEMS: keep it off the stack */
    service_conns sc;
    kq_consumer *kc = NULL;
    char err[512];
    if (service_connect(c, "ursa-verifier", &sc, &rc)) goto out;
    v.r = sc.r;
    v.bs = sc.bs;
    v.o = img_opts_from_cfg(c);
    v.max_bytes = (size_t)cfg_int(c, "verifier.max-bytes");
    v.p = sc.p;
    v.edit_resend_ms = cfg_int(c, "verifier.edit-resend-ms");
    rc = 1;
    const char *topics[] = {TOPIC_IMAGES_DOWNLOADED, TOPIC_DATASET_EDITS, NULL};
    if (!(kc = kq_consumer_new(c, sc.a.kafka, "ursa-verifier", topics, sc.p, handle, &v, err,
                               sizeof err))) {
        ULOG_ERROR("event=start_failed err=\"%s\"", err);
        goto out;
    }
    kq_consumer_set_tick(kc, tick, &v);
    ULOG_INFO("event=started kafka=%s redis=%s blobs=%s max_size=%d min_side=%d", sc.a.kafka,
              sc.a.redis_shown, sc.a.blobs, v.o.max_size, v.o.min_side);
    rc = kq_consumer_run(kc, &run) == URSA_OK ? 0 : 1;
    ULOG_INFO("event=stopped verified=%llu rejected=%llu duplicates=%llu",
              (unsigned long long)v.verified, (unsigned long long)v.rejected,
              (unsigned long long)v.duplicates);
out:
    kq_consumer_destroy(kc);
    for (int i = 0; i < v.g.n; i++) { /* unrecorded: their messages come again */
        kq_job_done(v.batch[i].job);
        ursa__image_downloaded__free_unpacked(v.batch[i].d, NULL);
    }
    service_disconnect(&sc);
    cfg_destroy(c);
    return rc;
}
