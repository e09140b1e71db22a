/* dataset.h: a dataset's state in Redis: its URLs, what became of each, the
 * counts per label and state, and the manifest of verified images.
 *
 *   ursa:datasets                 SET of dataset names
 *   ursa:ds:<ds>:url    HASH url_hash -> URL
 *   ursa:ds:<ds>:label  HASH url_hash -> label
 *   ursa:ds:<ds>:state  HASH url_hash -> queued | downloaded | verified |
 *                                         duplicate | rejected | failed
 *   ursa:ds:<ds>:reason HASH url_hash -> why (for the last four)
 *   ursa:ds:<ds>:detail HASH url_hash -> human-readable detail
 *   ursa:ds:<ds>:transient SET url_hash of failures a retry could fix
 *   ursa:ds:<ds>:count  HASH "total", "<label>|<state>", "<label>|<state>|<reason>" -> n
 *   ursa:ds:<ds>:images HASH source blob -> "label\tjpeg blob\tW\tH\turl_hash"
 *
 * Every change is one Lua script, so counts move with states atomically and
 * a replayed message changes nothing: states only move forward (queued <
 * downloaded < final) unless a retry resets them on purpose. */
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
/* 1 if a label is 1..64 printable characters without '|', '/', tab or
 * leading '.'. */
int ds_label_valid(const char *label);
/* sha256 hex of a URL, its key everywhere. */
void ds_url_hash(const char *url, char out[65]);

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
    int w, h;
    /* results */
    int changed;       /* STATE: something moved */
    int already_final; /* the URL had a final state before: nothing was done
                          (an IMAGE replayed for a verified URL is not this) */
    ds_state outcome;  /* IMAGE: verified, duplicate or rejected */
    ursa_err err;      /* OK, or NOT_FOUND when the dataset lacks the URL */
} ds_op;

/* Applies n changes in one pipelined round trip. Returns
 * URSA_ERR_UNAVAILABLE when Redis is down (nothing is known to be applied;
 * sending the same ops again is safe) and fills each op's results else. */
ursa_err ds_apply(rstore *r, ds_op *ops, size_t n);

/* Adds URLs (pipelined); a URL already in the dataset is left alone.
 * added[i] is set to 1 for the new ones. */
ursa_err ds_add_urls(rstore *r, const char *ds, size_t n, const char *const *urls,
                     const char *const *labels, int *added);

/* Moves a URL to state s with a reason (may be "") and detail. Forward only
 * unless force. *changed (may be NULL) says whether anything moved. */
ursa_err ds_set_state(rstore *r, const char *ds, const char *url_hash, ds_state s,
                      const char *reason, const char *detail, int transient,
                      int force, int *changed);

/* Records a verified image: the URL becomes verified, or duplicate (same
 * source bytes already under its label), or rejected with reason
 * label_conflict (same bytes under another label). *outcome gets that
 * state. */
ursa_err ds_add_image(rstore *r, const char *ds, const char *url_hash,
                      const char *src_blob, const char *jpeg_blob, int w, int h,
                      ds_state *outcome);

/* ---- manifests: what a training job reads ---------------------------------- */

/* One verified image. */
typedef struct {
    char src[65];   /* sha256 of the bytes as downloaded: the image's identity */
    char jpeg[65];  /* the normalised JPEG in the blob store */
    char label[72];
} ds_image;

/* 1 if the dataset was ever ingested into. */
ursa_err ds_exists(rstore *r, const char *ds, int *exists);

/* The verified images of a dataset now, sorted by source blob; the caller
 * frees *out. */
ursa_err ds_manifest_read(rstore *r, const char *ds, ds_image **out, size_t *n);

/* A manifest as text, "src\tlabel\tjpeg\n" a line (a training job's
 * snapshot, kept as a blob), and back. */
char *ds_manifest_tsv(const ds_image *im, size_t n, size_t *len);
ursa_err ds_manifest_parse(const char *tsv, size_t len, ds_image **out, size_t *n);

/* 1 if the image belongs to the validation set: decided by its content
 * hash and the seed alone, so an image keeps its side when the dataset
 * grows or is cleaned. */
int ds_in_valid(const char *src_blob, uint64_t seed, double valid_pct);

#endif
