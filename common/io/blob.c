/* blob.c: the blob store's one API over its backends (blob_local.c,
 * blob_s3.c); see blob.h. Hashing, the key check and the reserve live here,
 * so every backend is content-addressed the same way. */
#include "blob_impl.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sha256.h"
#include "util.h"

static blob_store *store_alloc(void) {
    blob_store *bs = calloc(1, sizeof *bs);
    pthread_mutex_t *mu = malloc(sizeof *mu);
    if (!bs || !mu) {
        free(bs);
        free(mu);
        return NULL;
    }
    pthread_mutex_init(mu, NULL);
    bs->err_mu = mu;
    return bs;
}

static void store_free(blob_store *bs) {
    if (!bs) return;
    if (bs->err_mu) pthread_mutex_destroy(bs->err_mu);
    free(bs->err_mu);
    free(bs);
}

blob_store *blob_store_new(const char *dir, char *errstr, size_t n) {
    blob_store *bs = store_alloc();
    if (!bs) {
        if (errstr) snprintf(errstr, n, "out of memory");
        return NULL;
    }
    if (blob_local_open(bs, dir, errstr, n) != URSA_OK) {
        store_free(bs);
        return NULL;
    }
    return bs;
}

blob_store *blob_store_new_s3(const blob_s3_opts *o, char *errstr, size_t n) {
    blob_store *bs = store_alloc();
    if (!bs) {
        if (errstr) snprintf(errstr, n, "out of memory");
        return NULL;
    }
    if (blob_s3_open(bs, o, errstr, n) != URSA_OK) {
        store_free(bs);
        return NULL;
    }
    bs->remote = 1;
    return bs;
}

void blob_store_destroy(blob_store *bs) {
    if (!bs) return;
    if (bs->be) bs->be->destroy(bs->self);
    store_free(bs);
}

int blob_store_remote(const blob_store *bs) { return bs->remote; }
const char *blob_store_where(const blob_store *bs) { return bs->where; }

void blob_note_error(blob_store *bs, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(bs->err_mu);
    snprintf(bs->last_err, sizeof bs->last_err, "%s", msg);
    pthread_mutex_unlock(bs->err_mu);
    atomic_fetch_add(&bs->err_seq, 1);
}

ursa_err blob_store_ping(blob_store *bs, char *why, size_t size) {
    why[0] = '\0';
    return bs->be->ping(bs->self, why, size);
}

void blob_store_last_error(blob_store *bs, char *out, size_t size) {
    pthread_mutex_lock(bs->err_mu);
    snprintf(out, size, "%s", bs->last_err);
    pthread_mutex_unlock(bs->err_mu);
}

void blob_unwritable_why(blob_store *bs, ursa_err err, char *out, size_t size) {
    if (!bs->remote) {
        snprintf(out, size, "blob store unwritable (%s)", ursa_err2str(err));
        return;
    }
    char last[512];
    blob_store_last_error(bs, last, sizeof last);
    snprintf(out, size, "blob store %s unreachable: %s", bs->where, last[0] ? last : ursa_err2str(err));
}

void blob_store_stats(const blob_store *bs, blob_stats *o) {
    o->requests = __atomic_load_n(&bs->st.requests, __ATOMIC_RELAXED);
    o->errors = __atomic_load_n(&bs->st.errors, __ATOMIC_RELAXED);
    o->retries = __atomic_load_n(&bs->st.retries, __ATOMIC_RELAXED);
    o->corrupt = __atomic_load_n(&bs->st.corrupt, __ATOMIC_RELAXED);
    o->bytes_in = __atomic_load_n(&bs->st.bytes_in, __ATOMIC_RELAXED);
    o->bytes_out = __atomic_load_n(&bs->st.bytes_out, __ATOMIC_RELAXED);
    o->latency_us = __atomic_load_n(&bs->st.latency_us, __ATOMIC_RELAXED);
}

void blob_store_set_reserve(blob_store *bs, uint64_t reserve) {
    if (!bs->remote) bs->reserve = reserve;
}

/* no cache: a daemon may ask while its blob_syncer's thread writes */
uint64_t blob_store_free_bytes(blob_store *bs) { return bs->be->free_bytes(bs->self); }

/* 1 when writing len more bytes would eat into the reserve (free space
 * looked at every 200 ms at most). */
static int under_reserve(blob_store *bs, size_t len) {
    if (!bs->reserve) return 0;
    if (!bs->free_seen_ms || util_mono_ms() - bs->free_seen_ms >= 200 ||
        bs->free_seen < bs->reserve + len) {
        bs->free_seen = blob_store_free_bytes(bs);
        bs->free_seen_ms = util_mono_ms();
    }
    if (bs->free_seen < bs->reserve + len) return 1;
    bs->free_seen -= len; /* until the next look */
    return 0;
}

int blob_key_valid(const char *key) {
    if (!key || strlen(key) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!((key[i] >= '0' && key[i] <= '9') || (key[i] >= 'a' && key[i] <= 'f')))
            return 0;
    return 1;
}

ursa_err blob_path(blob_store *bs, const char *key, char *out, size_t size) {
    if (!blob_key_valid(key)) return URSA_ERR_INVALID;
    return bs->be->locate(bs->self, key, out, size);
}

ursa_err blob_list(blob_store *bs, blob_list_fn *fn, void *ctx) {
    return bs->be->list(bs->self, fn, ctx);
}

ursa_err blob_mtime(blob_store *bs, const char *key, int64_t *mtime_ms) {
    if (!blob_key_valid(key)) return URSA_ERR_INVALID;
    return bs->be->mtime(bs->self, key, mtime_ms);
}

ursa_err blob_delete_if_old(blob_store *bs, const char *key, int64_t cutoff_ms, int *kept) {
    *kept = 0;
    if (!blob_key_valid(key)) return URSA_ERR_INVALID;
    if (bs->be->del_if_old) return bs->be->del_if_old(bs->self, key, cutoff_ms, kept);
    int64_t t = 0;
    ursa_err e = bs->be->mtime(bs->self, key, &t);
    if (e == URSA_ERR_NOT_FOUND) return URSA_OK;
    if (e) return e;
    if (t > cutoff_ms) {
        *kept = 1;
        return URSA_OK;
    }
    return bs->be->del(bs->self, key);
}

int blob_exists(blob_store *bs, const char *key) {
    return blob_key_valid(key) && bs->be->exists(bs->self, key);
}

static ursa_err put(blob_store *bs, const void *data, size_t len, char key[65], int durable) {
    sha256_hex(data, len, key);
    /* a blob already there is no write (its time is touched): it succeeds
     * on a full disk too */
    if (bs->reserve && bs->be->exists(bs->self, key)) return bs->be->put(bs->self, key, data, len, durable);
    if (under_reserve(bs, len)) return URSA_ERR_NO_SPACE;
    return bs->be->put(bs->self, key, data, len, durable);
}

ursa_err blob_put(blob_store *bs, const void *data, size_t len, char key[65]) {
    return put(bs, data, len, key, 1);
}

ursa_err blob_put_lazy(blob_store *bs, const void *data, size_t len, char key[65]) {
    return put(bs, data, len, key, 0);
}

ursa_err blob_store_sync(blob_store *bs) { return bs->be->sync(bs->self); }

ursa_err blob_delete(blob_store *bs, const char *key) {
    if (!blob_key_valid(key)) return URSA_ERR_INVALID;
    return bs->be->del(bs->self, key);
}

ursa_err blob_get(blob_store *bs, const char *key, size_t max, char **data,
                  size_t *len) {
    *data = NULL;
    if (!blob_key_valid(key)) return URSA_ERR_INVALID;
    size_t n = 0;
    ursa_err err = bs->be->get(bs->self, key, max, data, &n);
    if (err) return err;
    char got[65];
    sha256_hex(*data, n, got);
    if (strcmp(got, key) != 0) {
        free(*data);
        *data = NULL;
        char where[700];
        bs->be->locate(bs->self, key, where, sizeof where);
        __atomic_fetch_add(&bs->st.corrupt, 1, __ATOMIC_RELAXED);
        blob_note_error(bs, "%s: corrupt: its %zu bytes hash to %.16s..., not to its key", where,
                        n, got);
        ULOG_ERROR("event=blob_corrupt blob=%s bytes=%zu sha256=%s note=\"refused: its bytes "
                   "do not hash to its key\"", where, n, got);
        return URSA_ERR_CORRUPT;
    }
    if (len) *len = n;
    return URSA_OK;
}
