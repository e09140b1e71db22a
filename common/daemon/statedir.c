/* statedir.c: resolving the stack's addresses; see statedir.h. */
#include "statedir.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "util.h"

const cfg_def cfg_defs_blob[] = {
    {"blob.url", CFG_STR, "", 1, 0,
     "where blobs live: s3://BUCKET[/PREFIX] for an S3-compatible object store (hosts that "
     "share no disk), or a directory; empty: blob.dir"},
    {"blob.dir", CFG_STR, "", 1, 0,
     "content-addressed blob store directory; empty: <state-dir>/blobs"},
    {"blob.s3-endpoint", CFG_STR, "", 1, 0,
     "the object store's http(s)://HOST[:PORT] (Ceph RGW, MinIO); empty: AWS's of the region"},
    {"blob.s3-region", CFG_STR, "us-east-1", 1, 0, "the region signed into S3 requests"},
    {"blob.s3-credentials-file", CFG_STR, "", 1, 0,
     "a 0600 file with aws_access_key_id and aws_secret_access_key; empty: the environment's "
     "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"},
    {"blob.s3-timeout-ms", CFG_INT, "30000", 100, 3600000, "one S3 request, whole"},
    {"blob.s3-retries", CFG_INT, "4", 0, 100,
     "tries after the first for S3 requests that fail with 5xx, 429 or a network error"},
    {"blob.s3-max-inflight", CFG_INT, "16", 1, 1024, "concurrent S3 uploads per process"},
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

/* A password for a URL (percent-encoded: the URL's user info). */
static void url_encode(const char *s, char *out, size_t n) {
    size_t o = 0;
    for (; *s && o + 4 < n; s++) {
        unsigned char ch = (unsigned char)*s;
        if (isalnum(ch) || strchr("-._~", ch)) out[o++] = (char)ch;
        else o += (size_t)snprintf(out + o, n - o, "%%%02X", ch);
    }
    out[o] = '\0';
}

ursa_err statedir_redis_url(const cfg *c, char *out, size_t size, char *errstr,
                            size_t n) {
    const char *u = cfg_str(c, "redis.url"), *pwf = cfg_str(c, "redis.password-file");
    char pw[256] = "", enc[800];
    if (*u && *pwf) { /* the password from a file, into a URL that has none */
        char *data = NULL;
        ursa_err err = util_read_file(pwf, 1024, &data, NULL);
        if (err) {
            snprintf(errstr, n, "cannot read redis.password-file %s (%s)", pwf,
                     ursa_err2str(err));
            return err;
        }
        data[strcspn(data, "\r\n")] = '\0';
        snprintf(pw, sizeof pw, "%s", data);
        explicit_bzero(data, strlen(data));
        free(data);
        const char *rest = strstr(u, "://");
        if (strncmp(u, "redis://", 8) || strchr(rest + 3, '@')) {
            snprintf(errstr, n, "redis.password-file needs a redis:// URL without a password");
            return URSA_ERR_INVALID;
        }
        url_encode(pw, enc, sizeof enc);
        explicit_bzero(pw, sizeof pw);
        int w = snprintf(out, size, "redis://:%s@%s", enc, u + 8);
        explicit_bzero(enc, sizeof enc);
        return w < (int)size ? URSA_OK : URSA_ERR_INVALID;
    }
    if (*u) {
        snprintf(out, size, "%s", u);
        return URSA_OK;
    }
    char port[32];
    ursa_err err = read_line(c, "redis.port", port, sizeof port, errstr, n);
    if (err) return err;
    /* the stack's own Redis wants the password `ursa up` made (a stack
     * from before there was one has none) */
    char path[4096], *data = NULL;
    if (statedir_path(c, "redis.password", path, sizeof path) == URSA_OK &&
        util_read_file(path, 1024, &data, NULL) == URSA_OK) {
        data[strcspn(data, "\r\n")] = '\0';
        url_encode(data, enc, sizeof enc);
        free(data);
    } else {
        enc[0] = '\0';
    }
    if (enc[0]) snprintf(out, size, "redis://:%s@127.0.0.1:%s", enc, port);
    else snprintf(out, size, "redis://127.0.0.1:%s", port);
    return URSA_OK;
}

ursa_err statedir_blob_dir(const cfg *c, char *out, size_t size) {
    const char *u = cfg_str(c, "blob.url");
    if (*u) {
        snprintf(out, size, "%s", u);
        return URSA_OK;
    }
    const char *d = cfg_str(c, "blob.dir");
    if (*d) {
        snprintf(out, size, "%s", d);
        return URSA_OK;
    }
    return statedir_path(c, "blobs", out, size);
}

blob_store *statedir_blob_store(const cfg *c, char *errstr, size_t n) {
    char where[4096];
    if (statedir_blob_dir(c, where, sizeof where)) {
        snprintf(errstr, n, "blob.dir is too long");
        return NULL;
    }
    blob_store *bs;
    if (strncmp(where, "s3://", 5) == 0) {
        blob_s3_opts o = {.url = where,
                          .endpoint = cfg_str(c, "blob.s3-endpoint"),
                          .region = cfg_str(c, "blob.s3-region"),
                          .timeout_ms = (int)cfg_int(c, "blob.s3-timeout-ms"),
                          .retries = (int)cfg_int(c, "blob.s3-retries"),
                          .max_inflight = (int)cfg_int(c, "blob.s3-max-inflight")};
        char secrets[8192];
        if (blob_s3_credentials(&o, cfg_str(c, "blob.s3-credentials-file"), secrets,
                                sizeof secrets, errstr, n))
            return NULL;
        bs = blob_store_new_s3(&o, errstr, n);
        explicit_bzero(secrets, sizeof secrets);
    } else {
        if (strstr(where, "://") && strncmp(where, "file://", 7) != 0) {
            snprintf(errstr, n, "blob.url %s: expected s3://BUCKET[/PREFIX] or a directory",
                     where);
            return NULL;
        }
        bs = blob_store_new(strncmp(where, "file://", 7) ? where : where + 7, errstr, n);
    }
    if (bs) blob_store_set_reserve(bs, (uint64_t)cfg_int(c, "blob.min-free-mb") << 20);
    return bs;
}
