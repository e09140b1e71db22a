/* blob_syncer.h: blob writes and syncs on a thread of their own.
 *
 * A daemon whose loop times other work (the crawler's downloads run on
 * libcurl timers) must never wait for a disk there: on a slow disk one
 * syncfs took seconds, and so can a file's creation while the journal
 * commits; every download in flight timed out. The loop hands a blob's
 * bytes to the syncer and goes on; the thread writes what has come
 * (blob_put_lazy), makes it durable with one blob_store_sync(), and hands
 * each put back through blob_syncer_collect(), so the loop acknowledges its
 * work only once its blob is durable. A put that fails (a full disk) comes
 * back with its error and its bytes; a sync that fails is tried again every
 * second, its puts held until it succeeds. */
#ifndef URSA_BLOB_SYNCER_H
#define URSA_BLOB_SYNCER_H

#include <stddef.h>
#include <stdint.h>

#include "blob.h"

typedef struct blob_syncer blob_syncer;

/* Starts the thread over bs (borrowed: it must outlive the syncer). NULL on
 * failure with the reason in errstr. */
blob_syncer *blob_syncer_new(blob_store *bs, char *errstr, size_t errstr_size);

/* Queues data (len bytes, malloc'd; the syncer takes ownership until it
 * hands it back) to be stored and made durable; opaque comes back with it.
 * URSA_ERR_NOMEM, and data stays the caller's, when it cannot be queued. */
ursa_err blob_syncer_put(blob_syncer *sy, void *data, size_t len, void *opaque);

/* What a finished put hands back: err OK when the blob is durable, else
 * the put's error (URSA_ERR_NO_SPACE, URSA_ERR_IO, ...; URSA_ERR_SHUTDOWN
 * for a put never tried); data is the caller's again either way. */
typedef void (*blob_syncer_done_cb)(void *ctx, void *opaque, ursa_err err, void *data,
                                    size_t len);
/* Calls cb for each put finished since the last call; returns how many.
 * Durable puts come back in the order they were put; a failed one may
 * come back before the durable ones of its batch (their sync is still to
 * come). Call it from one thread. */
int blob_syncer_collect(blob_syncer *sy, blob_syncer_done_cb cb, void *ctx);

/* Stops the thread, after the write or sync it may be in (as long as the
 * disk takes), hands every put not yet collected to cb (finished or not:
 * URSA_ERR_SHUTDOWN) and frees the syncer. NULL is a no-op. */
void blob_syncer_destroy(blob_syncer *sy, blob_syncer_done_cb cb, void *ctx);

/* Puts handed over and not yet collected. */
int blob_syncer_pending(blob_syncer *sy);

/* URSA_OK while syncs succeed; else the last failed sync's error and
 * *since_ms (util_mono_ms) when the failures began. */
ursa_err blob_syncer_failing(blob_syncer *sy, int64_t *since_ms);

/* Where the time goes: syncs done and failed, the time in writes and in
 * syncs, the longest sync. */
typedef struct {
    uint64_t puts, syncs, failures;
    uint64_t write_ms, sync_ms, max_sync_ms;
} blob_syncer_stats;
void blob_syncer_get_stats(blob_syncer *sy, blob_syncer_stats *out);

#endif
