/* idx.h: reading gzipped IDX files (MNIST, Fashion-MNIST), for the ops
 * tools. */
#ifndef URSA_OPS_IDX_H
#define URSA_OPS_IDX_H

#include <stdint.h>
#include <stdlib.h>
#include <zlib.h>

static const char *const idx_fashion_classes[] = {"tshirt", "trouser", "pullover", "dress",
                                                  "coat",   "sandal",  "shirt",    "sneaker",
                                                  "bag",    "boot"};

static inline unsigned char *idx_read_gz(const char *path, size_t *len) {
    gzFile f = gzopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, n = 0;
    unsigned char *b = malloc(cap);
    int r;
    while (b && (r = gzread(f, b + n, (unsigned)(cap - n))) > 0) {
        n += (size_t)r;
        if (n == cap) {
            unsigned char *nb = realloc(b, cap *= 2);
            if (!nb) free(b);
            b = nb;
        }
    }
    gzclose(f);
    *len = n;
    return b;
}

static inline uint32_t idx_be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Loads an image file (magic 0x803) and its label file (0x801); returns 0
 * and sets *n, *rows, *cols, *px (n*rows*cols bytes) and *lab (n bytes),
 * both inside the buffers *img_buf and *lab_buf the caller frees. */
static inline int idx_load(const char *images, const char *labels, long *n, int *rows, int *cols,
                           const unsigned char **px, const unsigned char **lab,
                           unsigned char **img_buf, unsigned char **lab_buf) {
    size_t il = 0, ll = 0;
    *img_buf = idx_read_gz(images, &il);
    *lab_buf = idx_read_gz(labels, &ll);
    if (!*img_buf || !*lab_buf || il < 16 || ll < 8 || idx_be32(*img_buf) != 0x803 ||
        idx_be32(*lab_buf) != 0x801)
        return -1;
    *n = idx_be32(*img_buf + 4);
    *rows = (int)idx_be32(*img_buf + 8);
    *cols = (int)idx_be32(*img_buf + 12);
    if ((long)idx_be32(*lab_buf + 4) != *n || il < 16 + (size_t)*n * *rows * *cols ||
        ll < 8 + (size_t)*n)
        return -1;
    *px = *img_buf + 16;
    *lab = *lab_buf + 8;
    return 0;
}

#endif
