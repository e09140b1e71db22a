/* blob_local.c: the blob store in a local directory; see blob.h. */
#include "blob_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "util.h"

typedef struct {
    char *dir;
} local;

static ursa_err locate(void *self, const char *key, char *out, size_t size) {
    local *l = self;
    if (snprintf(out, size, "%s/%.2s/%s", l->dir, key, key) >= (int)size)
        return URSA_ERR_INVALID;
    return URSA_OK;
}

static uint64_t free_bytes(void *self) {
    local *l = self;
    struct statvfs v;
    if (statvfs(l->dir, &v) != 0) return UINT64_MAX;
    return (uint64_t)v.f_bavail * v.f_frsize;
}

static ursa_err ping(void *self, char *why, size_t n) {
    local *l = self;
    if (free_bytes(self) != UINT64_MAX) return URSA_OK;
    snprintf(why, n, "cannot read %s", l->dir);
    return URSA_ERR_IO;
}

static int exists(void *self, const char *key) {
    char path[4096];
    return locate(self, key, path, sizeof path) == URSA_OK && access(path, F_OK) == 0;
}

static ursa_err put(void *self, const char *key, const void *data, size_t len, int durable) {
    local *l = self;
    char path[4096], dir[4096];
    ursa_err err = locate(self, key, path, sizeof path);
    if (err) return err;
    if (access(path, F_OK) == 0) return URSA_OK; /* immutable: already there */
    err = durable ? util_write_file_atomic(path, data, len)
                  : util_write_file_renamed(path, data, len);
    if (err != URSA_ERR_IO) return err;
    /* most likely its directory does not exist yet: make it, then again */
    snprintf(dir, sizeof dir, "%s/%.2s", l->dir, key);
    if ((err = util_mkdirs(dir))) return err;
    return durable ? util_write_file_atomic(path, data, len)
                   : util_write_file_renamed(path, data, len);
}

static ursa_err sync_all(void *self) {
    local *l = self;
    int fd = open(l->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return URSA_ERR_IO;
    int rc = syncfs(fd);
    close(fd);
    return rc == 0 ? URSA_OK : URSA_ERR_IO;
}

static ursa_err del(void *self, const char *key) {
    char path[4096];
    ursa_err err = locate(self, key, path, sizeof path);
    if (err) return err;
    return unlink(path) == 0 || errno == ENOENT ? URSA_OK : URSA_ERR_IO;
}

static ursa_err get(void *self, const char *key, size_t max, char **data, size_t *len) {
    char path[4096];
    ursa_err err = locate(self, key, path, sizeof path);
    if (err) return err;
    return util_read_file(path, max, data, len);
}

static void destroy(void *self) {
    local *l = self;
    free(l->dir);
    free(l);
}

static const blob_backend local_backend = {put,    get,        exists, sync_all, del,
                                           locate, free_bytes, ping,   destroy};

ursa_err blob_local_open(blob_store *bs, const char *dir, char *errstr, size_t n) {
    if (util_mkdirs_mode(dir, 0700) != URSA_OK) {
        if (errstr) snprintf(errstr, n, "cannot create blob store %s", dir);
        return URSA_ERR_IO;
    }
    local *l = calloc(1, sizeof *l);
    if (!l || !(l->dir = strdup(dir))) {
        free(l);
        if (errstr) snprintf(errstr, n, "out of memory");
        return URSA_ERR_NOMEM;
    }
    bs->be = &local_backend;
    bs->self = l;
    snprintf(bs->where, sizeof bs->where, "dir %s", dir);
    return URSA_OK;
}
