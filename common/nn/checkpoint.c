/* checkpoint.c: a model's weights and optimiser state in one file, so a
 * killed training job resumes where its last checkpoint left it; see nn.h.
 *
 * Format (little-endian): "URSACKP1", u32 user bytes, the user bytes (the
 * caller's position: epoch, step, RNG), u32 parameter count, then per
 * parameter: u16 name length, the name, u64 n, i64 steps taken, u8 flags
 * (1: has moments), n floats of values, and with flag 1 n floats of each
 * moment; then u32 FNV-1a of everything before it. Written to a temporary
 * file, synced and renamed. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn.h"

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
} wbuf;

static void put(wbuf *b, const void *d, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap : 1 << 16;
        while (c < b->n + n) c *= 2;
        uint8_t *q = realloc(b->p, c);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = c;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}

static uint32_t fnv(const uint8_t *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

ursa_err nn_checkpoint_encode(const nn_model *m, const void *user, uint32_t ulen, uint8_t **out,
                              size_t *outlen) {
    wbuf b = {0};
    put(&b, "URSACKP1", 8);
    put(&b, &ulen, 4);
    put(&b, user, ulen);
    uint32_t np = (uint32_t)m->nparam;
    put(&b, &np, 4);
    for (int i = 0; i < m->nparam; i++) {
        const nn_param *p = &m->param[i];
        uint16_t nl = (uint16_t)strlen(p->name);
        uint64_t n = p->n;
        int64_t t = p->t;
        uint8_t fl = p->m && p->v;
        put(&b, &nl, 2);
        put(&b, p->name, nl);
        put(&b, &n, 8);
        put(&b, &t, 8);
        put(&b, &fl, 1);
        put(&b, p->w, n * sizeof(float));
        if (fl) {
            put(&b, p->m, n * sizeof(float));
            put(&b, p->v, n * sizeof(float));
        }
    }
    uint32_t h = b.oom ? 0 : fnv(b.p, b.n);
    put(&b, &h, 4);
    if (b.oom) {
        free(b.p);
        return URSA_ERR_NOMEM;
    }
    *out = b.p;
    *outlen = b.n;
    return URSA_OK;
}

ursa_err nn_checkpoint_save(const nn_model *m, const void *user, uint32_t ulen, const char *path,
                            char *err, size_t errlen) {
    wbuf b = {0};
    if (nn_checkpoint_encode(m, user, ulen, &b.p, &b.n) != URSA_OK) {
        snprintf(err, errlen, "%s: out of memory", path);
        return URSA_ERR_NOMEM;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int e = fd < 0 ? errno : 0; /* the first failure's, kept past close and unlink */
    size_t off = 0;
    while (fd >= 0 && off < b.n) {
        ssize_t w = write(fd, b.p + off, b.n - off);
        if (w <= 0) {
            e = w < 0 ? errno : ENOSPC; /* a short write: the disk is full */
            break;
        }
        off += (size_t)w;
    }
    int ok = fd >= 0 && off == b.n;
    if (ok && fsync(fd) != 0) {
        ok = 0;
        e = errno;
    }
    if (fd >= 0 && close(fd) && ok) { /* tmpfs and NFS may say ENOSPC here */
        ok = 0;
        e = errno;
    }
    free(b.p);
    if (ok && rename(tmp, path)) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        unlink(tmp);
        /* a full disk is named as such: the trainer waits for space */
        return e == ENOSPC || e == EDQUOT ? URSA_ERR_NO_SPACE : URSA_ERR_IO;
    }
    return URSA_OK;
}

#define NEED(k)                                                                                \
    do {                                                                                       \
        if (len - off < (size_t)(k)) goto bad;                                                 \
    } while (0)

ursa_err nn_checkpoint_load(nn_model *m, void *user, uint32_t ulen, const char *path, char *err,
                            size_t errlen) {
    FILE *f = fopen(path, "rb");
    uint8_t *p = NULL;
    size_t len = 0;
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return errno == ENOENT ? URSA_ERR_NOT_FOUND : URSA_ERR_IO;
    }
    fseek(f, 0, SEEK_END);
    long fl = ftell(f);
    fseek(f, 0, SEEK_SET);
    p = fl > 0 ? malloc((size_t)fl) : NULL;
    len = fl > 0 ? (size_t)fl : 0;
    if (!p || fread(p, 1, len, f) != len) {
        fclose(f);
        free(p);
        snprintf(err, errlen, "%s: cannot read", path);
        return URSA_ERR_IO;
    }
    fclose(f);
    ursa_err e = nn_checkpoint_decode(m, user, ulen, p, len);
    free(p);
    if (e == URSA_ERR_CORRUPT)
        snprintf(err, errlen, "%s: not a checkpoint of this model (or damaged)", path);
    else if (e)
        snprintf(err, errlen, "%s: %s", path, ursa_err2str(e));
    return e;
}

ursa_err nn_checkpoint_decode(nn_model *m, void *user, uint32_t ulen, const uint8_t *p,
                              size_t len) {
    size_t off = 0;
    uint32_t h, u, np;
    if (len < 20 || memcmp(p, "URSACKP1", 8)) goto bad;
    memcpy(&h, p + len - 4, 4);
    if (fnv(p, len - 4) != h) goto bad;
    len -= 4;
    off = 8;
    NEED(4);
    memcpy(&u, p + off, 4);
    off += 4;
    if (u != ulen) goto bad;
    NEED(u);
    if (u) memcpy(user, p + off, u);
    off += u;
    NEED(4);
    memcpy(&np, p + off, 4);
    off += 4;
    if (np != (uint32_t)m->nparam) goto bad;
    /* pass 0 checks every name and size, pass 1 copies: a mismatch leaves
     * the model as it was */
    size_t start = off;
    for (int pass = 0; pass < 2; pass++) {
        off = start;
        for (int i = 0; i < m->nparam; i++) {
            nn_param *q = &m->param[i];
            uint16_t nl;
            uint64_t n;
            int64_t t;
            uint8_t fl1;
            NEED(2);
            memcpy(&nl, p + off, 2);
            off += 2;
            NEED(nl);
            if (nl != strlen(q->name) || memcmp(p + off, q->name, nl)) goto bad;
            off += nl;
            NEED(17);
            memcpy(&n, p + off, 8);
            memcpy(&t, p + off + 8, 8);
            fl1 = p[off + 16];
            off += 17;
            if (n != q->n) goto bad;
            NEED(n * sizeof(float) * (fl1 ? 3 : 1));
            if (!pass) {
                off += n * sizeof(float) * (fl1 ? 3 : 1);
                continue;
            }
            memcpy(q->w, p + off, n * sizeof(float));
            off += n * sizeof(float);
            q->t = t;
            if (fl1) {
                if (!q->m) q->m = malloc(n * sizeof(float));
                if (!q->v) q->v = malloc(n * sizeof(float));
                if (!q->m || !q->v) return URSA_ERR_NOMEM;
                memcpy(q->m, p + off, n * sizeof(float));
                memcpy(q->v, p + off + n * sizeof(float), n * sizeof(float));
                off += 2 * n * sizeof(float);
            }
        }
    }
    /* trained weights are past nn_unfold_bn's calibration: it must not
     * reset them on the next batch */
    int trained = 0;
    for (int i = 0; i < m->nparam; i++) trained |= m->param[i].t > 0;
    if (trained)
        for (int i = 0; i < m->nnode; i++) m->node[i].calib = 0;
    m->wver++;
    return URSA_OK;
bad:
    return URSA_ERR_CORRUPT;
}
