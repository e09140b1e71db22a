/* statedir.c: resolving the stack's addresses; see statedir.h. */
#include "statedir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

const cfg_def cfg_defs_blob[] = {
    {"blob.dir", CFG_STR, "", 1, 0,
     "content-addressed blob store directory; empty: <state-dir>/blobs"},
    {"blob.min-free-mb", CFG_INT, "64", 0, 1000000,
     "daemons stop writing blobs (and fetching) while less than this is free on its disk"},
    {NULL, 0, NULL, 0, 0, NULL}};

const char *statedir_root(const cfg *c) {
    const char *d = cfg_str(c, "state-dir");
    return *d ? d : ".ursa";
}

ursa_err statedir_path(const cfg *c, const char *name, char *out, size_t size) {
    if (snprintf(out, size, "%s/%s", statedir_root(c), name) >= (int)size)
        return URSA_ERR_INVALID;
    return URSA_OK;
}

/* Reads the first line of <state-dir>/<name>. */
static ursa_err read_line(const cfg *c, const char *name, char *out,
                          size_t size, char *errstr, size_t n) {
    char path[4096];
    char *data = NULL;
    ursa_err err = statedir_path(c, name, path, sizeof path);
    if (!err) err = util_read_file(path, 4096, &data, NULL);
    if (err) {
        snprintf(errstr, n,
                 "cannot read %s (%s): is the stack up? run `ursa up`, or set "
                 "the address explicitly",
                 path, ursa_err2str(err));
        return err;
    }
    data[strcspn(data, "\r\n")] = '\0';
    if (!*data || snprintf(out, size, "%s", data) >= (int)size) {
        snprintf(errstr, n, "%s is empty or too long", path);
        free(data);
        return URSA_ERR_INVALID;
    }
    free(data);
    return URSA_OK;
}

ursa_err statedir_kafka_bootstrap(const cfg *c, char *out, size_t size,
                                  char *errstr, size_t n) {
    const char *b = cfg_str(c, "kafka.bootstrap");
    if (*b) {
        snprintf(out, size, "%s", b);
        return URSA_OK;
    }
    return read_line(c, "broker.bootstrap", out, size, errstr, n);
}

ursa_err statedir_redis_url(const cfg *c, char *out, size_t size, char *errstr,
                            size_t n) {
    const char *u = cfg_str(c, "redis.url");
    if (*u) {
        snprintf(out, size, "%s", u);
        return URSA_OK;
    }
    char port[32];
    ursa_err err = read_line(c, "redis.port", port, sizeof port, errstr, n);
    if (err) return err;
    snprintf(out, size, "redis://127.0.0.1:%s", port);
    return URSA_OK;
}

ursa_err statedir_blob_dir(const cfg *c, char *out, size_t size) {
    const char *d = cfg_str(c, "blob.dir");
    if (*d) {
        snprintf(out, size, "%s", d);
        return URSA_OK;
    }
    return statedir_path(c, "blobs", out, size);
}
