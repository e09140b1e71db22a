/* blob_local.c: the blob store in a local directory; see blob.h. A lazy
 * put is written and renamed but not flushed; its key waits in a list, and
 * a sync fsyncs those files and their directories, nothing else (a syncfs
 * would also wait for every other process's dirty data on the disk). */
#include "blob_impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "util.h"

typedef struct {
    char *dir;
    pthread_mutex_t mu; /* guards the pending list: puts and syncs may run on two threads */
    char (*pending)[65]; /* keys written lazily since the last sync */
    size_t npending, cap;
    int root_dirty; /* a shard directory was created: the root needs an fsync */
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

/* fsync of a file or directory; a file gone since (deleted) is no error */
static int fsync_path(const char *path, int is_dir) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | (is_dir ? O_DIRECTORY : 0));
    if (fd < 0) return errno == ENOENT ? 0 : -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Remembers a lazily written key for the next sync. */
static ursa_err pending_add(local *l, const char *key, int made_dir) {
    ursa_err err = URSA_OK;
    pthread_mutex_lock(&l->mu);
    if (l->npending == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        char(*p)[65] = realloc(l->pending, cap * sizeof *p);
        if (p) {
            l->pending = p;
            l->cap = cap;
        }
    }
    if (l->npending < l->cap) memcpy(l->pending[l->npending++], key, 65);
    else err = URSA_ERR_NOMEM;
    l->root_dirty |= made_dir;
    pthread_mutex_unlock(&l->mu);
    return err;
}

static ursa_err put(void *self, const char *key, const void *data, size_t len, int durable) {
    local *l = self;
    char path[4096], dir[4096];
    ursa_err err = locate(self, key, path, sizeof path);
    if (err) return err;
    /* immutable: already there, but written again for its time (ursa gc
     * keeps what was written lately); a lazy put syncs it still, since its
     * writer (a crashed process, say) may not have */
    if (utimensat(AT_FDCWD, path, NULL, 0) == 0) return durable ? URSA_OK : pending_add(l, key, 0);
    int made_dir = 0;
    err = durable ? util_write_file_atomic(path, data, len)
                  : util_write_file_renamed(path, data, len);
    if (err == URSA_ERR_IO) {
        /* most likely its directory does not exist yet: make it, then again */
        snprintf(dir, sizeof dir, "%s/%.2s", l->dir, key);
        if ((err = util_mkdirs(dir))) return err;
        made_dir = 1;
        err = durable ? util_write_file_atomic(path, data, len)
                      : util_write_file_renamed(path, data, len);
        if (!err && durable && fsync_path(l->dir, 1) != 0) err = URSA_ERR_IO;
    }
    if (err || durable) return err;
    return pending_add(l, key, made_dir);
}

/* fsyncs each file written since the last sync, then each shard directory
 * that got one (the rename's entry), then the root if a shard was made. On
 * a failure the keys stay pending for the next sync. */
static ursa_err sync_all(void *self) {
    local *l = self;
    pthread_mutex_lock(&l->mu);
    char(*keys)[65] = l->pending;
    size_t n = l->npending;
    int root = l->root_dirty;
    l->pending = NULL;
    l->npending = l->cap = 0;
    l->root_dirty = 0;
    pthread_mutex_unlock(&l->mu);
    char path[4096];
    uint8_t shard[256] = {0};
    int bad = 0;
    /* by chunks: first every file's writeback is started, so the disk gets
     * them together, then each is fsynced (the first fsync's journal commit
     * covers the others' metadata: about one write per file, not three) */
    enum { CHUNK = 64 };
    int fds[CHUNK];
    for (size_t i = 0; i < n && !bad; i += CHUNK) {
        size_t m = n - i < CHUNK ? n - i : CHUNK;
        for (size_t j = 0; j < m; j++) {
            fds[j] = -1;
            unsigned v;
            if (sscanf(keys[i + j], "%2x", &v) == 1) shard[v & 255] = 1;
            if (locate(l, keys[i + j], path, sizeof path) != URSA_OK) continue;
            fds[j] = open(path, O_RDONLY | O_CLOEXEC);
            if (fds[j] < 0) {
                bad |= errno != ENOENT; /* deleted since: nothing to sync */
                continue;
            }
            sync_file_range(fds[j], 0, 0, SYNC_FILE_RANGE_WRITE);
        }
        for (size_t j = 0; j < m; j++) {
            if (fds[j] < 0) continue;
            bad |= fsync(fds[j]) != 0;
            close(fds[j]);
        }
    }
    for (int s = 0; s < 256 && !bad; s++) {
        if (!shard[s]) continue;
        snprintf(path, sizeof path, "%s/%02x", l->dir, s);
        bad = fsync_path(path, 1) != 0;
    }
    if (!bad && root) bad = fsync_path(l->dir, 1) != 0;
    if (bad) { /* all of them again next time (an fsync twice is harmless) */
        for (size_t i = 0; i < n; i++)
            if (pending_add(l, keys[i], 0)) break;
        pthread_mutex_lock(&l->mu);
        l->root_dirty |= root;
        pthread_mutex_unlock(&l->mu);
    }
    free(keys);
    return bad ? URSA_ERR_IO : URSA_OK;
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
    pthread_mutex_destroy(&l->mu);
    free(l->pending);
    free(l->dir);
    free(l);
}

/* Walks the 256 shard directories; names that are not keys are left out. */
static ursa_err list(void *self, blob_list_fn *fn, void *ctx) {
    local *l = self;
    char sub[4096], path[4200];
    for (int sh = 0; sh < 256; sh++) {
        snprintf(sub, sizeof sub, "%s/%02x", l->dir, sh);
        DIR *d = opendir(sub);
        if (!d) {
            if (errno == ENOENT) continue;
            return URSA_ERR_IO;
        }
        struct dirent *e;
        int stop = 0;
        while (!stop && (e = readdir(d))) {
            struct stat st;
            char key[65];
            if (strlen(e->d_name) == 67 && !strcmp(e->d_name + 64, ".gc")) {
                /* set aside by a gc that was cut short: put back, and listed */
                memcpy(key, e->d_name, 64);
                key[64] = '\0';
                char from[4300];
                snprintf(from, sizeof from, "%s/%s", sub, e->d_name);
                snprintf(path, sizeof path, "%s/%s", sub, key);
                if (!blob_key_valid(key) || rename(from, path) != 0) continue;
            } else {
                snprintf(key, sizeof key, "%.64s", e->d_name);
                if (strlen(e->d_name) != 64) continue;
            }
            if (!blob_key_valid(key) || strncmp(key, sub + strlen(sub) - 2, 2)) continue;
            snprintf(path, sizeof path, "%s/%s", sub, key);
            if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue; /* deleted since */
            stop = fn(ctx, key, (uint64_t)st.st_size,
                      (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000);
        }
        closedir(d);
        if (stop) break;
    }
    return URSA_OK;
}

static ursa_err mtime(void *self, const char *key, int64_t *ms) {
    char path[4096];
    struct stat st;
    ursa_err err = locate(self, key, path, sizeof path);
    if (err) return err;
    if (stat(path, &st) != 0) return errno == ENOENT ? URSA_ERR_NOT_FOUND : URSA_ERR_IO;
    *ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
    return URSA_OK;
}

/* Renamed aside first (a put then finds no file and writes a new one), its
 * time read there, then removed, or put back when it was written lately. */
static ursa_err del_if_old(void *self, const char *key, int64_t cutoff_ms, int *kept) {
    char path[4096], aside[4200];
    struct stat st;
    ursa_err err = locate(self, key, path, sizeof path);
    if (err) return err;
    snprintf(aside, sizeof aside, "%s.gc", path);
    if (rename(path, aside) != 0) return errno == ENOENT ? URSA_OK : URSA_ERR_IO;
    if (stat(aside, &st) != 0) return URSA_ERR_IO;
    if ((int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000 > cutoff_ms) {
        *kept = 1;
        /* a put meanwhile wrote the same bytes at path: either copy will do */
        return rename(aside, path) == 0 ? URSA_OK : URSA_ERR_IO;
    }
    return unlink(aside) == 0 || errno == ENOENT ? URSA_OK : URSA_ERR_IO;
}

static const blob_backend local_backend = {put,    get,  exists,  sync_all, del,   locate,
                                           free_bytes, ping, destroy, list, mtime, del_if_old};

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
    pthread_mutex_init(&l->mu, NULL);
    bs->be = &local_backend;
    bs->self = l;
    snprintf(bs->where, sizeof bs->where, "dir %s", dir);
    return URSA_OK;
}
