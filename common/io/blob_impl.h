/* blob_impl.h: what a blob store backend provides (blob.c dispatches to it).
 * Private to common/io/blob*.c; callers use blob.h. */
#ifndef URSA_BLOB_IMPL_H
#define URSA_BLOB_IMPL_H

#include <stdatomic.h>

#include "blob.h"

typedef struct {
    /* Stores data under key (its SHA-256, already computed); durable: wait
     * for the medium, else visible at once (local) or after the next sync
     * (remote). Putting a key that exists changes no byte, but counts as a
     * write for its time (see blob_list). */
    ursa_err (*put)(void *self, const char *key, const void *data, size_t len, int durable);
    ursa_err (*get)(void *self, const char *key, size_t max, char **data, size_t *len);
    int (*exists)(void *self, const char *key);
    ursa_err (*sync)(void *self);
    ursa_err (*del)(void *self, const char *key); /* absent: OK */
    /* "<dir>/ab/<key>" or "s3://bucket/prefix/ab/<key>" */
    ursa_err (*locate)(void *self, const char *key, char *out, size_t size);
    uint64_t (*free_bytes)(void *self);
    ursa_err (*ping)(void *self, char *why, size_t n);
    void (*destroy)(void *self);
    ursa_err (*list)(void *self, blob_list_fn *fn, void *ctx);
    ursa_err (*mtime)(void *self, const char *key, int64_t *mtime_ms);
    /* Deletes key unless written after cutoff_ms, in one step a put cannot
     * come between (*kept 1 when it was newer); NULL: blob.c looks at the
     * time, then deletes. */
    ursa_err (*del_if_old)(void *self, const char *key, int64_t cutoff_ms, int *kept);
} blob_backend;

struct blob_store {
    const blob_backend *be;
    void *self;
    int remote;
    char where[600];      /* for logs and errors */
    uint64_t reserve;     /* local only: see blob_store_set_reserve */
    uint64_t free_seen;   /* free bytes at the last look */
    int64_t free_seen_ms; /* when: looked at most every 200 ms */
    blob_stats st;        /* counted by the backends, atomically */
    _Atomic int err_seq;  /* bumped with every new last error */
    char last_err[512];   /* written under err_mu */
    void *err_mu;         /* pthread_mutex_t *, allocated by blob.c */
};

/* Backends report a failed request here (thread-safe); it names bucket and
 * key, and blob_store_last_error() shows it. */
void blob_note_error(blob_store *bs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The directory backend: <dir>/<k[0..1]>/<key>. */
ursa_err blob_local_open(blob_store *bs, const char *dir, char *errstr, size_t n);
/* The S3 backend; checks the bucket answers before it returns. */
ursa_err blob_s3_open(blob_store *bs, const blob_s3_opts *o, char *errstr, size_t n);

#endif
