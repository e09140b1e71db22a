/* gc_cmd.c: `ursa gc`, the blob store's garbage collector.
 *
 * Blobs are content-addressed and shared, so none is deleted by what made
 * it (but a job's superseded checkpoint); a deleted dataset, job or model
 * leaves its blobs behind. gc marks every blob Redis refers to, then sweeps
 * the store's listing: a blob nothing refers to and last written at least
 * --older-than-hours ago (a week by default: Kafka's retention, so no
 * message still on its way can refer to it) is removed, its time looked at
 * again as it goes (blob_delete_if_old). A put of a blob that exists
 * counts as a write (the stores touch it), so bytes downloaded again after
 * the mark are kept.
 *
 * What refers to blobs, by owner:
 *   datasets (dataset.h)   each verified URL's JPEG and its download (by the
 *                          first 32 hex digits its record keeps), the URL lists
 *   jobs (jobs.h)          every field holding a blob key (snapshot,
 *                          checkpoint, folds, features, audit, interpretation,
 *                          model) and the spec's pretrained body
 *   models (registry.h)    every field holding a blob key (the model, its
 *                          interpretation) */
#include "gc_cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "conn.h"
#include "dataset.h"
#include "jobs.h"
#include "msg.h"
#include "registry.h"
#include "util.h"

const cfg_def gc_defs[] = {
    {"dry-run", CFG_BOOL, "false", 1, 0, "say what would be removed, and remove nothing"},
    {"older-than-hours", CFG_INT, "168", 0, 1e6,
     "remove only blobs last written at least this long ago (a week: Kafka's retention, so "
     "no message still on its way refers to one)"},
    {"force", CFG_BOOL, "false", 1, 0,
     "run even while URLs are being downloaded or verified, or jobs are queued or running"},
    {"output", CFG_STR, "text", 1, 0, "text or json (-o json)"},
    {NULL, 0, NULL, 0, 0, NULL}};

/* A growing array of fixed-width keys, sorted once marked. */
typedef struct {
    char (*k)[65];
    size_t n, cap;
    int oom;
} keyset;

static void add(keyset *s, const char *key, size_t len) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        char(*k)[65] = realloc(s->k, cap * sizeof *k);
        if (!k) {
            s->oom = 1;
            return;
        }
        s->k = k;
        s->cap = cap;
    }
    memcpy(s->k[s->n], key, len);
    s->k[s->n++][len] = '\0';
}

static int cmp_key(const void *a, const void *b) { return strcmp(a, b); }

static void sort(keyset *s) { qsort(s->k, s->n, sizeof *s->k, cmp_key); }

static int has(const keyset *s, const char *key) {
    return bsearch(key, s->k, s->n, sizeof *s->k, cmp_key) != NULL;
}

typedef struct {
    keyset keys;    /* whole keys */
    keyset sources; /* downloads, by their first 32 hex digits */
} marks;

static int mark_record(void *ctx, const ds_record *rec) {
    marks *m = ctx;
    if (rec->state != DS_VERIFIED) return 0;
    if (blob_key_valid(rec->jpeg)) add(&m->keys, rec->jpeg, 64);
    if (strlen(rec->src) == 32) add(&m->sources, rec->src, 32);
    return m->keys.oom || m->sources.oom;
}

/* Every value of a hash reply (name, value, ...) that is a blob key. */
static void mark_values(marks *m, const redisReply *h) {
    for (size_t i = 1; h && h->type == REDIS_REPLY_ARRAY && i < h->elements; i += 2) {
        const redisReply *v = h->element[i];
        if (v->type == REDIS_REPLY_STRING && v->len == 64 && blob_key_valid(v->str))
            add(&m->keys, v->str, 64);
    }
}

static ursa_err mark_datasets(rstore *r, marks *m, size_t *ndatasets) {
    redisReply *names = NULL;
    ursa_err err = ds_list(r, &names);
    for (size_t i = 0; !err && names->type == REDIS_REPLY_ARRAY && i < names->elements; i++) {
        const char *ds = names->element[i]->str;
        if (!ds_name_valid(ds)) continue;
        err = ds_scan(r, ds, mark_record, m);
        redisReply *lists = NULL;
        if (!err) err = ds_list_blobs(r, ds, &lists);
        for (size_t k = 0; !err && lists->type == REDIS_REPLY_ARRAY && k < lists->elements; k++)
            if (blob_key_valid(lists->element[k]->str)) add(&m->keys, lists->element[k]->str, 64);
        if (lists) freeReplyObject(lists);
        (*ndatasets)++;
    }
    if (names) freeReplyObject(names);
    return err;
}

static ursa_err mark_jobs(rstore *r, marks *m, size_t *njobs) {
    redisReply *ids = NULL;
    ursa_err err = job_list(r, &ids);
    for (size_t i = 0; !err && ids->type == REDIS_REPLY_ARRAY && i < ids->elements; i++) {
        redisReply *h = NULL;
        err = job_get_all(r, ids->element[i]->str, &h);
        if (err == URSA_ERR_NOT_FOUND) { /* deleted meanwhile */
            err = URSA_OK;
            continue;
        }
        if (err) break;
        mark_values(m, h);
        for (size_t k = 0; h->type == REDIS_REPLY_ARRAY && k + 1 < h->elements; k += 2) {
            if (strcmp(h->element[k]->str, "spec")) continue;
            const redisReply *v = h->element[k + 1];
            Ursa__TrainJob *j = ursa__train_job__unpack(NULL, v->len, (const uint8_t *)v->str);
            if (j && blob_key_valid(j->pretrained_blob)) add(&m->keys, j->pretrained_blob, 64);
            if (j) ursa__train_job__free_unpacked(j, NULL);
        }
        freeReplyObject(h);
        (*njobs)++;
    }
    if (ids) freeReplyObject(ids);
    return err;
}

static ursa_err mark_models(rstore *r, marks *m, size_t *nmodels) {
    redisReply *ids = NULL;
    ursa_err err = registry_list(r, "", 0, 0, &ids);
    for (size_t i = 0; !err && ids->type == REDIS_REPLY_ARRAY && i < ids->elements; i++) {
        redisReply *h = NULL;
        err = registry_get(r, ids->element[i]->str, &h);
        if (err == URSA_ERR_NOT_FOUND) {
            err = URSA_OK;
            continue;
        }
        if (err) break;
        mark_values(m, h);
        freeReplyObject(h);
        (*nmodels)++;
    }
    if (ids) freeReplyObject(ids);
    return err;
}

/* What the sweep found. */
typedef struct {
    const marks *m;
    int64_t cutoff_ms;
    keyset garbage;
    uint64_t garbage_bytes, kept, kept_bytes, recent, recent_bytes;
} sweep;

static int on_blob(void *ctx, const char *key, uint64_t size, int64_t mtime_ms) {
    sweep *w = ctx;
    char src[33];
    memcpy(src, key, 32);
    src[32] = '\0';
    if (has(&w->m->keys, key) || has(&w->m->sources, src)) {
        w->kept++;
        w->kept_bytes += size;
    } else if (mtime_ms > w->cutoff_ms) {
        w->recent++;
        w->recent_bytes += size;
    } else {
        add(&w->garbage, key, 64);
        w->garbage_bytes += size;
    }
    return w->garbage.oom;
}

/* Nothing in flight may refer to a blob Redis does not know of yet: no URL
 * between ingest and its final state, no job queued or running. Prints
 * what there is; 1 when something is, -1 on an error. */
static int busy(rstore *r) {
    redisReply *names = NULL, *ids = NULL;
    int n = 0;
    if (ds_list(r, &names)) return -1;
    for (size_t i = 0; names->type == REDIS_REPLY_ARRAY && i < names->elements; i++) {
        ds_count *c = NULL;
        size_t nc = 0;
        long long total = 0, final = 0;
        if (ds_counts_read(r, names->element[i]->str, &c, &nc, &total)) {
            freeReplyObject(names);
            return -1;
        }
        for (size_t k = 0; k < nc; k++)
            if (!c[k].reason[0] && ds_state_final(c[k].state)) final += c[k].n;
        free(c);
        if (total > final) {
            fprintf(stderr, "ursa gc: %lld URLs of dataset %s are still being downloaded or "
                            "verified\n", total - final, names->element[i]->str);
            n++;
        }
    }
    freeReplyObject(names);
    if (job_list_active(r, &ids)) return -1;
    if (ids->type == REDIS_REPLY_ARRAY && ids->elements) {
        fprintf(stderr, "ursa gc: %zu jobs are queued or running (the first: %s)\n", ids->elements,
                ids->element[0]->str);
        n++;
    }
    freeReplyObject(ids);
    return n > 0;
}

static double mb(uint64_t b) { return (double)b / 1048576.0; }

int gc_cmd(const cfg *c, int argc, char **argv) {
    (void)argv;
    int json = cli_json(c, "gc");
    if (json < 0) return 2;
    if (argc) {
        fprintf(stderr, "usage: ursa gc [--dry-run] [--older-than-hours H] [--force]\n");
        return 2;
    }
    int dry = cfg_bool(c, "dry-run"), rc = 1;
    long long hours = cfg_int(c, "older-than-hours");
    rstore *r = cli_redis(c);
    blob_store *bs = r ? cli_blobs(c) : NULL;
    marks m = {{0}, {0}};
    sweep w = {0};
    if (!r || !bs) goto out;
    if (!cfg_bool(c, "force")) {
        int b = busy(r);
        if (b < 0) {
            fprintf(stderr, "ursa gc: %s\n", rstore_last_error(r));
            goto out;
        }
        if (b) {
            fprintf(stderr, "ursa gc: nothing done: wait for them, or give --force (blobs "
                            "written in the last %lld hours are kept either way)\n", hours);
            goto out;
        }
    }
    /* the cutoff before the mark: a blob written after it is recent */
    w.cutoff_ms = util_now_ms() - hours * 3600 * 1000;
    size_t nds = 0, njobs = 0, nmodels = 0;
    ursa_err err = mark_datasets(r, &m, &nds);
    if (!err) err = mark_jobs(r, &m, &njobs);
    if (!err) err = mark_models(r, &m, &nmodels);
    if (err || m.keys.oom || m.sources.oom) {
        fprintf(stderr, "ursa gc: reading what refers to blobs: %s\n",
                err ? rstore_last_error(r) : "out of memory");
        goto out;
    }
    sort(&m.keys);
    sort(&m.sources);
    w.m = &m;
    if ((err = blob_list(bs, on_blob, &w)) || w.garbage.oom) {
        char why[512];
        blob_store_last_error(bs, why, sizeof why);
        fprintf(stderr, "ursa gc: listing the blob store: %s\n",
                err ? (why[0] ? why : ursa_err2str(err)) : "out of memory");
        goto out;
    }
    uint64_t removed = 0, failed = 0, rewritten = 0;
    if (!dry) {
        for (size_t i = 0; i < w.garbage.n; i++) {
            int kept = 0;
            if (blob_delete_if_old(bs, w.garbage.k[i], w.cutoff_ms, &kept)) {
                failed++;
                continue;
            }
            if (kept) { /* written again since the listing */
                rewritten++;
                continue;
            }
            removed++;
            if (!json && removed % 1000 == 0)
                fprintf(stderr, "ursa gc: %llu of %zu removed\n", (unsigned long long)removed,
                        w.garbage.n);
        }
    }
    if (json) {
        printf("{\"dry_run\": %s, \"older_than_hours\": %lld, \"datasets\": %zu, \"jobs\": %zu, "
               "\"models\": %zu, \"referenced\": %llu, \"referenced_bytes\": %llu, "
               "\"recent\": %llu, \"recent_bytes\": %llu, \"unreferenced\": %zu, "
               "\"unreferenced_bytes\": %llu, \"removed\": %llu, \"failed\": %llu, "
               "\"written_again\": %llu, \"blobs\": [",
               dry ? "true" : "false", hours, nds, njobs, nmodels,
               (unsigned long long)w.kept, (unsigned long long)w.kept_bytes,
               (unsigned long long)w.recent, (unsigned long long)w.recent_bytes, w.garbage.n,
               (unsigned long long)w.garbage_bytes, (unsigned long long)removed,
               (unsigned long long)failed, (unsigned long long)rewritten);
        for (size_t i = 0; dry && i < w.garbage.n; i++)
            printf("%s\"%s\"", i ? ", " : "", w.garbage.k[i]);
        printf("]}\n");
    } else {
        printf("referenced by %zu datasets, %zu jobs and %zu models: %llu blobs (%.1f MB), kept\n",
               nds, njobs, nmodels, (unsigned long long)w.kept, mb(w.kept_bytes));
        printf("written in the last %lld hours: %llu blobs (%.1f MB), kept\n", hours,
               (unsigned long long)w.recent, mb(w.recent_bytes));
        printf("unreferenced: %zu blobs (%.1f MB)", w.garbage.n, mb(w.garbage_bytes));
        if (dry) printf(", none removed (--dry-run)\n");
        else printf(", %llu removed\n", (unsigned long long)removed);
        if (dry)
            for (size_t i = 0; i < w.garbage.n && i < 20; i++) printf("  %s\n", w.garbage.k[i]);
        if (dry && w.garbage.n > 20) printf("  ... and %zu more (-o json lists all)\n", w.garbage.n - 20);
        if (rewritten) printf("%llu written again since the listing, kept\n",
                              (unsigned long long)rewritten);
        if (failed) printf("%llu could not be removed (see the blob store)\n",
                           (unsigned long long)failed);
    }
    rc = failed ? 1 : 0;
out:
    free(m.keys.k);
    free(m.sources.k);
    free(w.garbage.k);
    blob_store_destroy(bs);
    rstore_destroy(r);
    return rc;
}
