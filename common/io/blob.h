/* blob.h: the content-addressed blob store.
 *
 * A blob's key is the lowercase hex SHA-256 of its bytes, written once and
 * never changed; putting the same bytes twice is a no-op, which makes every
 * writer idempotent, and every read checks the bytes against the key. Two
 * backends sit behind this one API:
 *   - a local directory (the embedded default): <dir>/<k[0..1]>/<key>, 256
 *     directories (a million blobs is ~4,000 a directory, which ext4 indexes
 *     well, while a deeper fan-out made nearly every write of a small dataset
 *     create a directory), written through a temp file and a rename;
 *   - an S3-compatible object store (AWS S3, Ceph RGW, MinIO), for hosts that
 *     share no disk: objects <prefix>/<k[0..1]>/<key> of one bucket, path-style
 *     URLs, requests signed with libcurl's SigV4, connections reused, 5xx,
 *     429 and network errors retried with backoff (blob_s3.c).
 * A store may be used from several threads at once. */
#ifndef URSA_BLOB_H
#define URSA_BLOB_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct blob_store blob_store;

/* Opens (creating if needed) a store in the local directory dir. NULL on
 * failure with the reason in errstr. */
blob_store *blob_store_new(const char *dir, char *errstr, size_t errstr_size);

/* Where and how to reach an S3 bucket. Strings are borrowed for the call. */
typedef struct {
    const char *url;        /* s3://BUCKET[/PREFIX] */
    const char *endpoint;   /* http(s)://host[:port]; "" for AWS's of the region */
    const char *region;     /* signed into every request: "us-east-1" */
    const char *access_key; /* AWS_ACCESS_KEY_ID */
    const char *secret_key; /* AWS_SECRET_ACCESS_KEY */
    const char *session_token; /* AWS_SESSION_TOKEN, or NULL */
    int timeout_ms;   /* one request, whole */
    int retries;      /* tries after the first, for 5xx, 429 and network errors */
    int max_inflight; /* concurrent uploads of blob_put_lazy() */
} blob_s3_opts;

/* Opens a store in an S3 bucket, after checking that the bucket answers
 * with these credentials: a wrong key or secret, a missing bucket and an
 * unreachable endpoint each fail here with one line in errstr. */
blob_store *blob_store_new_s3(const blob_s3_opts *o, char *errstr, size_t errstr_size);

/* Fills the secret half of o from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
 * and AWS_SESSION_TOKEN, or from file (when not "" or NULL): an AWS
 * credentials file ([default] aws_access_key_id = ...) or KEY=VALUE lines
 * with the environment's names, readable by its owner alone (0600). The
 * strings are copied into buf (its lifetime is theirs). */
ursa_err blob_s3_credentials(blob_s3_opts *o, const char *file, char *buf, size_t bufsize,
                             char *errstr, size_t errstr_size);

void blob_store_destroy(blob_store *bs);

/* 1 for an object store, where every read and write is a network request. */
int blob_store_remote(const blob_store *bs);
/* "dir /path" or "s3://bucket/prefix at http://host:port": for logs. Borrowed. */
const char *blob_store_where(const blob_store *bs);

/* Keeps reserve bytes free on a local store's file system: a put that would
 * leave less fails with URSA_ERR_NO_SPACE, as on a full disk, so the disk
 * never fills to the last byte under Redis and the logs (blob.min-free-mb).
 * No effect on an object store. */
void blob_store_set_reserve(blob_store *bs, uint64_t reserve);
/* Bytes free for writing on a local store's file system (statvfs), or
 * UINT64_MAX when it cannot be read or the store is remote. */
uint64_t blob_store_free_bytes(blob_store *bs);

/* Stores data and writes its key to key[65]. Durable when it returns OK;
 * URSA_ERR_NO_SPACE when the disk is full (or under the reserve),
 * URSA_ERR_UNAVAILABLE when the object store could not be reached or
 * refused after its retries (blob_store_last_error() says why). */
ursa_err blob_put(blob_store *bs, const void *data, size_t len, char key[65]);

/* Stores data like blob_put() but without waiting: a local blob is visible
 * at once and survives the process being killed, and is durable against a
 * machine crash after the next blob_store_sync(); an object store uploads it
 * in the background (several at once), and it is stored once the next
 * blob_store_sync() returns OK. This is group commit: write many, sync once,
 * then record them elsewhere. The data is copied. URSA_ERR_UNAVAILABLE when
 * the object store is failing and max_inflight uploads already wait. */
ursa_err blob_put_lazy(blob_store *bs, const void *data, size_t len, char key[65]);

/* Makes every blob written so far durable: a local store fsyncs the files
 * its lazy puts wrote since the last sync and their directories (not the
 * whole file system: other processes' dirty data is not waited for); an
 * object store waits for its uploads. Blocks for as long as the disk takes:
 * a daemon calls it where nothing is timed (blob_syncer.h runs it on a
 * thread of its own). A blob that fails is not dropped: a local one is
 * synced again by the next call, an upload is tried again in the
 * background, and this returns URSA_ERR_UNAVAILABLE (remote) or
 * URSA_ERR_IO (local) until a later call finds all stored. */
ursa_err blob_store_sync(blob_store *bs);

/* Reads a blob into a new buffer the caller frees, checking its hash:
 * URSA_ERR_NOT_FOUND, URSA_ERR_TOO_LARGE (over max), URSA_ERR_CORRUPT (the
 * bytes do not hash to key: refused, and named in the log),
 * URSA_ERR_UNAVAILABLE (the object store could not be reached). */
ursa_err blob_get(blob_store *bs, const char *key, size_t max, char **data,
                  size_t *len);

/* Removes a blob that its writer alone references (a training job's
 * superseded checkpoint); a blob that is not there is no error. Content
 * addressing makes any shared blob unsafe to delete: only for blobs whose
 * bytes are unique to one writer. */
ursa_err blob_delete(blob_store *bs, const char *key);

/* Every blob in the store, in no set order: fn gets its key, size and when
 * it was last written (ms since the epoch; a put of a blob that exists
 * counts as a write: the directory store touches the file, the object
 * store writes the object again) and returns nonzero to stop. Files or
 * objects that are not blobs are left out. For `ursa gc`. */
typedef int blob_list_fn(void *ctx, const char *key, uint64_t size, int64_t mtime_ms);
ursa_err blob_list(blob_store *bs, blob_list_fn *fn, void *ctx);

/* When the blob was last written (ms since the epoch): URSA_ERR_NOT_FOUND
 * when it is not there. */
ursa_err blob_mtime(blob_store *bs, const char *key, int64_t *mtime_ms);

/* Deletes a blob unless it was written after cutoff_ms (then *kept is 1):
 * for `ursa gc`. The directory store decides and deletes in one step a
 * put cannot come between (the file is renamed aside, its time read, then
 * it is removed or put back); on an object store a put in the
 * milliseconds between the look and the DELETE is not seen. A blob not
 * there is no error. */
ursa_err blob_delete_if_old(blob_store *bs, const char *key, int64_t cutoff_ms, int *kept);

/* 1 if a blob with this key is stored, 0 if not (or the store is down). */
int blob_exists(blob_store *bs, const char *key);

/* Where the blob is (whether or not it exists): its file path, or its
 * s3://bucket/key URL. */
ursa_err blob_path(blob_store *bs, const char *key, char *out, size_t size);

/* 1 if key is 64 lowercase hex characters. */
int blob_key_valid(const char *key);

/* Whether the store answers now, for /readyz: a local directory's file
 * system can be read; an object store's bucket answers one listing (one
 * try) and no upload is failing. Else the reason in why. */
ursa_err blob_store_ping(blob_store *bs, char *why, size_t size);

/* The last failed request (thread-safe copy into out; "" if none). */
void blob_store_last_error(blob_store *bs, char *out, size_t size);

/* Why a put failed with err, for a daemon's degraded status: "blob store
 * s3://b/ at http://h:p unreachable: <the last failed request>" or "blob
 * store unwritable (<err>)". */
void blob_unwritable_why(blob_store *bs, ursa_err err, char *out, size_t size);

/* What the store has done since it was opened: requests to an object store,
 * their failures and retries, bytes each way and the time spent. For
 * /metrics. */
typedef struct {
    uint64_t requests, errors, retries, corrupt;
    uint64_t bytes_in, bytes_out;
    uint64_t latency_us; /* summed over requests */
} blob_stats;
void blob_store_stats(const blob_store *bs, blob_stats *out);

#endif
