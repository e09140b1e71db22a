/* blob.h: the content-addressed blob store.
 *
 * A blob's key is the lowercase hex SHA-256 of its bytes; it lives at
 * <dir>/<k[0..1]>/<key> (256 directories: a million blobs is ~4,000 a
 * directory, which ext4 indexes well, while a deeper fan-out made nearly
 * every write of a small dataset create a directory), written once through
 * a temp file and a rename, never changed afterwards. Putting the same bytes twice is a no-op,
 * which makes every writer idempotent. The directory may be shared between
 * processes and machines (a shared volume in docker-compose). */
#ifndef URSA_BLOB_H
#define URSA_BLOB_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct blob_store blob_store;

/* Opens (creating if needed) the store rooted at dir. NULL on failure with
 * the reason in errstr. */
blob_store *blob_store_new(const char *dir, char *errstr, size_t errstr_size);
void blob_store_destroy(blob_store *bs);

/* Keeps reserve bytes free on the store's file system: a put that would
 * leave less fails with URSA_ERR_NO_SPACE, as on a full disk, so the disk
 * never fills to the last byte under Redis and the logs (blob.min-free-mb;
 * 0 by default here). */
void blob_store_set_reserve(blob_store *bs, uint64_t reserve);
/* Bytes free for writing on the store's file system (statvfs), or
 * UINT64_MAX when it cannot be read. */
uint64_t blob_store_free_bytes(blob_store *bs);

/* Stores data and writes its key to key[65]. Durable when it returns OK;
 * URSA_ERR_NO_SPACE when the disk is full (or under the reserve). */
ursa_err blob_put(blob_store *bs, const void *data, size_t len, char key[65]);

/* Stores data like blob_put() but without waiting for the disk: the blob
 * is visible at once and survives the process being killed, and is durable
 * against a machine crash after the next blob_store_sync(). This is group
 * commit: write many, sync once, then record them elsewhere. */
ursa_err blob_put_lazy(blob_store *bs, const void *data, size_t len, char key[65]);

/* Makes every blob written so far durable (one syncfs of the store's file
 * system). */
ursa_err blob_store_sync(blob_store *bs);

/* Reads a blob into a new buffer the caller frees, checking its hash:
 * URSA_ERR_NOT_FOUND, URSA_ERR_TOO_LARGE (over max), URSA_ERR_CORRUPT. */
ursa_err blob_get(blob_store *bs, const char *key, size_t max, char **data,
                  size_t *len);

/* 1 if a blob with this key is stored. */
int blob_exists(blob_store *bs, const char *key);

/* The blob's file path (whether or not it exists). */
ursa_err blob_path(blob_store *bs, const char *key, char *out, size_t size);

/* 1 if key is 64 lowercase hex characters. */
int blob_key_valid(const char *key);

#endif
