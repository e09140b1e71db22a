/* dataset.h: a dataset's state in Redis: what became of each URL, the
 * counts per label and state, and the manifest of verified images.
 *
 * Built to fit Redis Cluster and to stay small (docs/operations.md, "Scale"): a
 * URL's id in Redis is the first 10 bytes of the SHA-256 of its text (20
 * hex digits, ds_url_key); its first byte picks one of 256 hash tags, its
 * first two bytes one of 65,536 buckets, so every hash stays small enough
 * for Redis's compact listpack encoding (up to 128 fields and 64-byte
 * values by default: 8 million URLs a dataset, more with
 * hash-max-listpack-entries raised), and the tags spread a dataset over a
 * cluster's nodes. TT is the first byte and TTBB the first two bytes of the
 * URL's (or source blob's) hash, in hex.
 *
 *   ursa:datasets                   SET of dataset names
 *   ursa:ds:<ds>:labels             HASH "l:<label>" -> id, "i:<id>" -> label
 *   ursa:ds:<ds>:lists              SET of blob keys: the URL lists as ingested
 *                                   ("url\tlabel\n" lines): the URL text lives
 *                                   there, not in Redis
 *   ursa:ds:{<ds>:TT}:u:TTBB        HASH URL key bytes 2..9 -> record (binary):
 *                                     byte 0     state | 16 if transient
 *                                     bytes 1-2  label id, big-endian
 *                                     verified:  jpeg blob (32 bytes), then the
 *                                                first 16 bytes of the source
 *                                                blob's hash (the image's id)
 *                                     with a reason: its length (1 byte), the
 *                                                reason, then the detail; the
 *                                                record is cut at 64 bytes
 *   ursa:ds:{<ds>:TT}:s:TTBB        HASH source hash bytes 2..9 -> URL key (10
 *                                   bytes) of the URL that brought those bytes
 *                                   first: finds duplicates
 *   ursa:ds:{<ds>:TT}:c             HASH the counts of tag TT's URLs: "total",
 *                                   "<label id>|<state>",
 *                                   "<label id>|<state>|<reason>" -> n
 *
 * Every change is one Lua script whose keys are all declared and share a
 * hash tag, so counts move with states atomically (on one node or a
 * cluster), and a replayed message changes nothing: states only move
 * forward (queued < downloaded < final) unless a retry resets them on
 * purpose. Whole-dataset reads walk the buckets in pipelined rounds. */
#ifndef URSA_DATASET_H
#define URSA_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "rstore.h"

#define DS_NAME_MAX 64

typedef enum {
    DS_QUEUED = 0,
    DS_DOWNLOADED,
    DS_VERIFIED,
    DS_DUPLICATE, /* the same bytes are already in the dataset under this label */
    DS_REJECTED,  /* not a usable image (or the same image under another label) */
    DS_FAILED,    /* could not be downloaded */
    DS__COUNT
} ds_state;

const char *ds_state_name(ds_state s);
/* 1 for verified, duplicate, rejected and failed. */
int ds_state_final(ds_state s);

/* 1 if name is 1..64 of [A-Za-z0-9._-]. */
int ds_name_valid(const char *name);
/* 1 if a label is 1..64 bytes of valid UTF-8 without control characters
 * (C0, DEL, C1), '|', '/', '\\' or a leading '.'. */
int ds_label_valid(const char *label);
/* sha256 hex of a URL, its key everywhere. */
void ds_url_hash(const char *url, char out[65]);
/* A URL's id in Redis: the first 20 hex digits of its hash. */
#define DS_KEY_HEX 20

/* One change for ds_apply(): a state move or a verified image. */
typedef enum { DS_OP_STATE = 0, DS_OP_IMAGE } ds_op_kind;

typedef struct {
    ds_op_kind kind;
    const char *ds, *url_hash;
    /* DS_OP_STATE (see ds_set_state) */
    ds_state state;
    const char *reason, *detail;
    int transient, force;
    /* DS_OP_IMAGE (see ds_add_image) */
    const char *src_blob, *jpeg_blob;
    /* results */
    int changed;       /* STATE: something moved */
    int already_final; /* the URL had a final state before: nothing was done
                          (an IMAGE replayed for a verified URL is not this) */
    ds_state outcome;  /* IMAGE: verified, duplicate or rejected */
    int replayed;      /* IMAGE: verified before, from the same bytes (a
                          message handled again): announce it, count it once */
    ursa_err err;      /* OK, or NOT_FOUND when the dataset lacks the URL */
} ds_op;

/* Applies n changes in one pipelined round trip. Returns
 * URSA_ERR_UNAVAILABLE when Redis is down (nothing is known to be applied;
 * sending the same ops again is safe) and fills each op's results else. */
ursa_err ds_apply(rstore *r, ds_op *ops, size_t n);

/* Adds URLs (pipelined); a URL already in the dataset is left alone.
 * added[i] is set to 1 for the new ones. The list itself is stored first
 * as a blob in bs (the URL text's only home, see ds_urls_find). */
struct blob_store;
ursa_err ds_add_urls(rstore *r, struct blob_store *bs, const char *ds, size_t n,
                     const char *const *urls, const char *const *labels, int *added);

/* Moves a URL to state s with a reason (may be "") and detail. Forward only
 * unless force. *changed (may be NULL) says whether anything moved. */
ursa_err ds_set_state(rstore *r, const char *ds, const char *url_hash, ds_state s,
                      const char *reason, const char *detail, int transient,
                      int force, int *changed);

/* A URL's state: URSA_ERR_NOT_FOUND when the dataset lacks it. */
ursa_err ds_url_state(rstore *r, const char *ds, const char *url_hash, ds_state *s);

/* Records a verified image: the URL becomes verified, or duplicate (same
 * source bytes already under its label), or rejected with reason
 * label_conflict (same bytes under another label). *outcome gets that
 * state. */
ursa_err ds_add_image(rstore *r, const char *ds, const char *url_hash,
                      const char *src_blob, const char *jpeg_blob, ds_state *outcome);

/* ---- group commit ----------------------------------------------------------------- */

/* How the crawler and the verifier record finished work: items gather for
 * up to DS_BATCH_MS or DS_BATCH_ITEMS, then one blob sync makes their blobs
 * durable and one pipelined round trip records their states; their
 * messages go out only after that. When either step fails the batch waits a
 * second and goes again, which is safe (ds_apply is idempotent). */
enum { DS_BATCH_ITEMS = 256, DS_BATCH_MS = 20 };
typedef struct {
    int n;              /* items waiting */
    int blobs_unsynced; /* a blob was written since the last sync */
    int64_t first_ms;   /* when the oldest waiting item came */
    int64_t retry_at;   /* after a failure: not before this */
    int64_t sync_logged_ms; /* when a failed blob sync was last logged */
} ds_batch;

/* One more item (wrote_blob: it wrote a blob lazily). */
void ds_batch_add(ds_batch *g, int wrote_blob);
/* 1 when the batch should be committed now. */
int ds_batch_due(const ds_batch *g);
/* Syncs the blobs and applies ops (the batch's items that still count).
 * On OK the batch is empty and each op has its result; else nothing is
 * known to be recorded, the failure is logged, and the batch waits:
 * URSA_ERR_IO when the blob store did not take the blobs (a disk or an
 * object store down: the daemon says it is degraded), else Redis's error. */
ursa_err ds_batch_commit(ds_batch *g, rstore *r, struct blob_store *bs, ds_op *ops, size_t n);

/* ---- whole-dataset reads ------------------------------------------------------- */

/* One URL as Redis holds it. */
typedef struct {
    char key[DS_KEY_HEX + 1]; /* the URL's id (ds_url_hash's first 20 digits) */
    ds_state state;
    int transient;
    char label[72];
    char reason[32], detail[64]; /* duplicate, rejected, failed */
    char src[33], jpeg[65];      /* verified */
} ds_record;

/* Calls fn for every URL of the dataset, bucket by bucket (pipelined, a few
 * thousand buckets a round trip); fn returns nonzero to stop early. */
typedef int ds_scan_fn(void *opaque, const ds_record *rec);
ursa_err ds_scan(rstore *r, const char *ds, ds_scan_fn *fn, void *opaque);

/* The dataset's counters summed over its tags, with label names. */
typedef struct {
    char label[72]; /* "" for the total */
    ds_state state;
    char reason[32]; /* "" for a state's count */
    long long n;
} ds_count;
ursa_err ds_counts_read(rstore *r, const char *ds, ds_count **out, size_t *n,
                        long long *total);

/* Finds the text of URLs by key in the dataset's lists: urls[i] gets a
 * malloc'd copy of the URL whose key is keys[i] (NULL when not found, a
 * list blob being lost). Each list is read once. */
ursa_err ds_urls_find(rstore *r, struct blob_store *bs, const char *ds, size_t n,
                      const char *const *keys, char **urls);

/* Which URL brought each verified image: (image id, URL key) pairs sorted
 * by image id, for ds_urls_find; the caller frees *out. */
typedef struct {
    char src[33];
    char key[DS_KEY_HEX + 1];
} ds_image_url;
ursa_err ds_image_urls(rstore *r, const char *ds, ds_image_url **out, size_t *n);
/* The pair of an image id in ds_image_urls' result, or NULL. */
const ds_image_url *ds_image_url_find(const ds_image_url *v, size_t n, const char *src);

/* One verified image by its id (32 hex digits of its source hash), found
 * through the source index in two round trips: its URL's record, with the
 * label the URL was ingested under. URSA_ERR_NOT_FOUND when the dataset
 * has no such verified image. */
ursa_err ds_image_get(rstore *r, const char *ds, const char *image, ds_record *rec);

/* ---- manifests: what a training job reads ---------------------------------- */

/* One verified image. */
typedef struct {
    char src[65];   /* first 32 hex digits of the sha256 of the bytes as
                       downloaded: the image's identity */
    char jpeg[65];  /* the normalised JPEG in the blob store */
    char label[72];
    unsigned char edit; /* the decision in force (dataset_edits.h): 0, or
                           ED_RELABEL (label is the new one), or ED_DELETE
                           (only from ds_manifest_read_ex with keep_deleted) */
} ds_image;

/* 1 in *exists if some URL of the dataset was ingested under the label. */
ursa_err ds_label_exists(rstore *r, const char *ds, const char *label, int *exists);

/* Every dataset's name (a set reply: an array of strings). */
ursa_err ds_list(rstore *r, redisReply **names);

/* The blob keys of the URL lists ingested into the dataset (a set reply). */
ursa_err ds_list_blobs(rstore *r, const char *ds, redisReply **keys);

/* Deletes the dataset's keys of this module (its URLs, counts, labels and
 * lists) and takes it out of ursa:datasets; *removed gets the keys
 * removed (0: nothing was there). Its edits and audits (ds_edits_delete),
 * models (registry_delete) and blobs are their owners' to delete. A URL
 * message still in flight for it finds no URL and changes nothing. Safe
 * to repeat after a failure. */
ursa_err ds_delete(rstore *r, const char *ds, long long *removed);

/* 1 if the dataset was ever ingested into. */
ursa_err ds_exists(rstore *r, const char *ds, int *exists);

/* The verified images of a dataset now as edited (dataset_edits.h):
 * deleted images left out, relabelled ones under their new label; sorted by
 * source blob; the caller frees *out. */
ursa_err ds_manifest_read(rstore *r, const char *ds, ds_image **out, size_t *n);
/* The same, keeping deleted images (marked) when keep_deleted; *edit_seq
 * (may be NULL) gets the edit sequence read before the edits: every edit up
 * to it is in the result. */
ursa_err ds_manifest_read_ex(rstore *r, const char *ds, int keep_deleted, ds_image **out,
                             size_t *n, long long *edit_seq);

/* A manifest as text, "src\tlabel\tjpeg\n" a line (a training job's
 * snapshot, kept as a blob), and back. */
char *ds_manifest_tsv(const ds_image *im, size_t n, size_t *len);
ursa_err ds_manifest_parse(const char *tsv, size_t len, ds_image **out, size_t *n);

/* 1 if the image belongs to the validation set: decided by its content
 * hash and the seed alone, so an image keeps its side when the dataset
 * grows or is cleaned. */
int ds_in_valid(const char *src_blob, uint64_t seed, double valid_pct);

#endif
