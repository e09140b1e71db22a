/* ursa-verifier: downloaded bytes become a verified, normalised JPEG in the
 * blob store and a manifest entry, or a rejection with its reason. The
 * checks are common/img's (the same as `ursa verify`). Handling is
 * idempotent: blobs are content-addressed and dataset states only move
 * forward, so a redelivered message changes nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "dataset.h"
#include "image.h"
#include "kq.h"
#include "log.h"
#include "msg.h"
#include "rstore.h"
#include "service.h"
#include "statedir.h"
#include "topics.h"
#include "util.h"

static const char usage[] =
    "usage: ursa-verifier [settings]\n"
    "Checks every image of ursa.images.downloaded (JPEG, PNG, GIF, WebP; rejects\n"
    "empty, truncated, corrupt, non-images, bombs and tiny images), stores it as\n"
    "an RGB JPEG no larger than img.max-size and adds it to its dataset's\n"
    "manifest. Stops cleanly on SIGTERM.\n\n";

typedef struct {
    rstore *r;
    blob_store *bs;
    img_opts o;
    size_t max_bytes;
    uint64_t verified, rejected, duplicates;
} verifier;

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
    void *buf;
    size_t len;
    ursa_err err = msg_pack(&m.base, &buf, &len);
    if (err) return err;
    err = kq_job_produce(job, TOPIC_IMAGES_REJECTED, d->url_hash, strlen(d->url_hash), buf, len);
    free(buf);
    return err;
}

static ursa_err verify_one(verifier *v, const Ursa__ImageDownloaded *d, kq_job *job,
                           char *reason, size_t rn) {
    const char *ds = d->header->dataset;
    ds_state st;
    ursa_err err = ds_get_state(v->r, ds, d->url_hash, &st);
    if (err == URSA_ERR_NOT_FOUND || (!err && ds_state_final(st))) return URSA_OK;
    if (err) {
        snprintf(reason, rn, "redis: %s", rstore_last_error(v->r));
        return err;
    }
    char *data = NULL;
    size_t len = 0;
    err = blob_get(v->bs, d->blob, v->max_bytes, &data, &len);
    if (err) {
        /* the crawler wrote it before announcing it: a missing blob means
         * a shared volume is not mounted or was damaged */
        snprintf(reason, rn, "source blob %.12s: %s", d->blob, ursa_err2str(err));
        return err == URSA_ERR_NOT_FOUND || err == URSA_ERR_IO ? URSA_ERR_UNAVAILABLE
                                                                : URSA_ERR_TRANSIENT;
    }
    uint8_t *jpeg = NULL;
    size_t jl = 0;
    int w = 0, h = 0;
    img_reject rej;
    err = img_verify((const uint8_t *)data, len, &v->o, &jpeg, &jl, &w, &h, &rej);
    free(data);
    if (err == URSA_ERR_INVALID) {
        err = ds_set_state(v->r, ds, d->url_hash, DS_REJECTED, rej.reason, rej.detail, 0, 0, NULL);
        if (err && err != URSA_ERR_NOT_FOUND) {
            snprintf(reason, rn, "redis: %s", rstore_last_error(v->r));
            return err;
        }
        v->rejected++;
        return send_rejected(job, d, rej.reason, rej.detail);
    }
    if (err) {
        snprintf(reason, rn, "verify: %s", ursa_err2str(err));
        return URSA_ERR_TRANSIENT; /* out of memory: maybe better next time */
    }
    char key[65];
    err = blob_put(v->bs, jpeg, jl, key);
    free(jpeg);
    if (err) {
        snprintf(reason, rn, "cannot write blob: %s", ursa_err2str(err));
        return URSA_ERR_UNAVAILABLE;
    }
    ds_state outcome;
    err = ds_add_image(v->r, ds, d->url_hash, d->blob, key, w, h, &outcome);
    if (err == URSA_ERR_NOT_FOUND) return URSA_OK;
    if (err) {
        snprintf(reason, rn, "redis: %s", rstore_last_error(v->r));
        return err;
    }
    if (outcome != DS_VERIFIED) {
        v->duplicates++;
        return send_rejected(job, d, outcome == DS_DUPLICATE ? "duplicate" : "label_conflict",
                             "same bytes as another URL of the dataset");
    }
    v->verified++;
    Ursa__Header hd;
    char id[33];
    msg_header_init(&hd, id, ds, NULL);
    Ursa__ImageVerified m = URSA__IMAGE_VERIFIED__INIT;
    m.header = &hd;
    m.url = d->url;
    m.url_hash = d->url_hash;
    m.label = d->label;
    m.source_blob = d->blob;
    m.blob = key;
    m.width = (uint32_t)w;
    m.height = (uint32_t)h;
    void *buf;
    size_t blen;
    if ((err = msg_pack(&m.base, &buf, &blen))) return err;
    err = kq_job_produce(job, TOPIC_IMAGES_VERIFIED, key, 64, buf, blen);
    free(buf);
    return err;
}

static ursa_err handle(void *opaque, const kq_msg *m, kq_job *job, char *reason, size_t rn) {
    verifier *v = opaque;
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
            err = verify_one(v, d, job, reason, rn);
        }
    } else {
        err = URSA_ERR_PERMANENT;
    }
    ursa__image_downloaded__free_unpacked(d, NULL);
    return err;
}

static volatile sig_atomic_t run = 1;

int main(int argc, char **argv) {
    static const cfg_def verifier_defs[] = {
        {"verifier.max-bytes", CFG_INT, "50000000", 1024, 4e9, "largest source blob read"},
        {NULL, 0, NULL, 0, 0, NULL}};
    const cfg_def *const tables[] = {cfg_defs_base, cfg_defs_kafka, cfg_defs_redis, cfg_defs_blob,
                                     img_cfg_defs, verifier_defs, NULL};
    cfg *c;
    int argi, rc = service_setup("verifier", usage, tables, argc, argv, &c, &argi);
    if (rc >= 0) return rc;
    service_signals(&run);
    char bs[512], url[600], dir[4096], err[512];
    if (statedir_kafka_bootstrap(c, bs, sizeof bs, err, sizeof err) ||
        statedir_redis_url(c, url, sizeof url, err, sizeof err) ||
        statedir_blob_dir(c, dir, sizeof dir)) {
        fprintf(stderr, "ursa-verifier: %s\n", err);
        cfg_destroy(c);
        return 2;
    }
    verifier v = {0};
    v.o = img_opts_from_cfg(c);
    v.max_bytes = (size_t)cfg_int(c, "verifier.max-bytes");
    rc = 1;
    kq_producer *p = NULL;
    kq_consumer *kc = NULL;
    if (!(v.r = rstore_new(url, (int)cfg_int(c, "redis.timeout-ms"), err, sizeof err)) ||
        !(v.bs = blob_store_new(dir, err, sizeof err)) ||
        !(p = kq_producer_new(c, bs, err, sizeof err))) {
        ULOG_ERROR("event=start_failed err=\"%s\"", err);
        goto out;
    }
    const char *topics[] = {TOPIC_IMAGES_DOWNLOADED, NULL};
    if (!(kc = kq_consumer_new(c, bs, "ursa-verifier", topics, p, handle, &v, err, sizeof err))) {
        ULOG_ERROR("event=start_failed err=\"%s\"", err);
        goto out;
    }
    ULOG_INFO("event=started kafka=%s redis=%s blobs=%s max_size=%d min_side=%d", bs, url, dir,
              v.o.max_size, v.o.min_side);
    rc = kq_consumer_run(kc, &run) == URSA_OK ? 0 : 1;
    ULOG_INFO("event=stopped verified=%llu rejected=%llu duplicates=%llu",
              (unsigned long long)v.verified, (unsigned long long)v.rejected,
              (unsigned long long)v.duplicates);
out:
    kq_consumer_destroy(kc);
    kq_producer_destroy(p);
    rstore_destroy(v.r);
    blob_store_destroy(v.bs);
    cfg_destroy(c);
    return rc;
}
