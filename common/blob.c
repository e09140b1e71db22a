/* blob.c: content-addressed files; see blob.h. */
#include "blob.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/statvfs.h>

#include "sha256.h"
#include "util.h"

struct blob_store {
    char *dir;
    uint64_t reserve;
    uint64_t free_seen;   /* free bytes at the last look */
    int64_t free_seen_ms; /* when: looked at most every 200 ms */
};

void blob_store_set_reserve(blob_store *bs, uint64_t reserve) { bs->reserve = reserve; }

uint64_t blob_store_free_bytes(blob_store *bs) {
    struct statvfs v;
    if (statvfs(bs->dir, &v) != 0) return UINT64_MAX;
    bs->free_seen = (uint64_t)v.f_bavail * v.f_frsize;
    bs->free_seen_ms = util_mono_ms();
    return bs->free_seen;
}

/* 1 when writing len more bytes would eat into the reserve. */
static int under_reserve(blob_store *bs, size_t len) {
    if (!bs->reserve) return 0;
    if (!bs->free_seen_ms || util_mono_ms() - bs->free_seen_ms >= 200 ||
        bs->free_seen < bs->reserve + len)
        blob_store_free_bytes(bs);
    if (bs->free_seen < bs->reserve + len) return 1;
    bs->free_seen -= len; /* until the next look */
    return 0;
}

blob_store *blob_store_new(const char *dir, char *errstr, size_t n) {
    if (util_mkdirs(dir) != URSA_OK) {
        if (errstr) snprintf(errstr, n, "cannot create blob store %s", dir);
        return NULL;
    }
    blob_store *bs = calloc(1, sizeof *bs);
    if (!bs || !(bs->dir = strdup(dir))) {
        free(bs);
        if (errstr) snprintf(errstr, n, "out of memory");
        return NULL;
    }
    return bs;
}

void blob_store_destroy(blob_store *bs) {
    if (!bs) return;
    free(bs->dir);
    free(bs);
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
    if (snprintf(out, size, "%s/%.2s/%s", bs->dir, key, key) >=
        (int)size)
        return URSA_ERR_INVALID;
    return URSA_OK;
}

int blob_exists(blob_store *bs, const char *key) {
    char path[4096];
    return blob_path(bs, key, path, sizeof path) == URSA_OK &&
           access(path, F_OK) == 0;
}

static ursa_err put(blob_store *bs, const void *data, size_t len, char key[65], int durable) {
    char path[4096], dir[4096];
    sha256_hex(data, len, key);
    ursa_err err = blob_path(bs, key, path, sizeof path);
    if (err) return err;
    if (access(path, F_OK) == 0) return URSA_OK; /* immutable: already there */
    if (under_reserve(bs, len)) return URSA_ERR_NO_SPACE;
    err = durable ? util_write_file_atomic(path, data, len)
                  : util_write_file_renamed(path, data, len);
    if (err != URSA_ERR_IO) return err;
    /* most likely its directory does not exist yet: make it, then again */
    snprintf(dir, sizeof dir, "%s/%.2s", bs->dir, key);
    if ((err = util_mkdirs(dir))) return err;
    return durable ? util_write_file_atomic(path, data, len)
                   : util_write_file_renamed(path, data, len);
}

ursa_err blob_put(blob_store *bs, const void *data, size_t len, char key[65]) {
    return put(bs, data, len, key, 1);
}

ursa_err blob_put_lazy(blob_store *bs, const void *data, size_t len, char key[65]) {
    return put(bs, data, len, key, 0);
}

ursa_err blob_store_sync(blob_store *bs) {
    int fd = open(bs->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return URSA_ERR_IO;
    int rc = syncfs(fd);
    close(fd);
    return rc == 0 ? URSA_OK : URSA_ERR_IO;
}

ursa_err blob_get(blob_store *bs, const char *key, size_t max, char **data,
                  size_t *len) {
    char path[4096], got[65];
    *data = NULL;
    ursa_err err = blob_path(bs, key, path, sizeof path);
    if (err) return err;
    size_t n;
    if ((err = util_read_file(path, max, data, &n))) return err;
    sha256_hex(*data, n, got);
    if (strcmp(got, key) != 0) {
        free(*data);
        *data = NULL;
        return URSA_ERR_CORRUPT;
    }
    if (len) *len = n;
    return URSA_OK;
}
