/* transform.c: resizing, JPEG encoding and the verifier's whole check. */
#include <stdio.h> /* before jpeglib.h, which uses FILE */

#include <jpeglib.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"

img_opts img_opts_default(void) {
    img_opts o = {100000000ULL, 32, 500, 90, 64};
    return o;
}

const cfg_def img_cfg_defs[] = {
    {"img.max-pixels", CFG_INT, "100000000", 1, 4e9,
     "refuse images whose header claims more pixels (decompression bombs)"},
    {"img.min-side", CFG_INT, "32", 1, 100000, "refuse images with a shorter side below this"},
    {"img.max-size", CFG_INT, "500", 0, 100000,
     "shrink so the longest side is at most this (fast.ai's max_size); 0 keeps the size"},
    {"img.jpeg-quality", CFG_INT, "90", 1, 100, "quality of the stored JPEG"},
    {"img.max-scans", CFG_INT, "64", 1, 100000,
     "refuse progressive JPEGs of more scans (each empty one costs a pass over the image)"},
    {NULL, 0, NULL, 0, 0, NULL}};

img_opts img_opts_from_cfg(const cfg *c) {
    img_opts o;
    o.max_pixels = (uint64_t)cfg_int(c, "img.max-pixels");
    o.min_side = (int)cfg_int(c, "img.min-side");
    o.max_size = (int)cfg_int(c, "img.max-size");
    o.jpeg_quality = (int)cfg_int(c, "img.jpeg-quality");
    o.max_scans = (int)cfg_int(c, "img.max-scans");
    return o;
}

/* Weights of a box (area) filter from n source samples to m (m <= n): output
 * i covers source [i*n/m, (i+1)*n/m). Every output gets the same number of
 * taps (`stride`, unused ones weigh 0) starting at first[i], so the inner
 * loops have a fixed trip count: no branch mispredicted per pixel. */
typedef struct {
    int *first;
    float *w; /* stride weights for output i at i*stride */
    int stride;
} box_w;

static int box_make(box_w *b, int n, int m) {
    double scale = (double)n / m;
    b->stride = (int)scale + 2;
    if (b->stride > n) b->stride = n;
    b->first = malloc(sizeof(int) * (size_t)m);
    b->w = calloc((size_t)m * (size_t)b->stride, sizeof(float));
    if (!b->first || !b->w) return -1;
    for (int i = 0; i < m; i++) {
        double a = i * scale, z = (i + 1) * scale;
        int f = (int)a, l = (int)z;
        if (l >= n) l = n - 1;
        int start = f + b->stride > n ? n - b->stride : f; /* keep taps inside */
        b->first[i] = start;
        double sum = 0;
        for (int k = f; k <= l && k - start < b->stride; k++) {
            double lo = k > a ? k : a, hi = k + 1 < z ? k + 1 : z;
            sum += hi > lo ? hi - lo : 0;
        }
        for (int k = f; k <= l && k - start < b->stride; k++) {
            double lo = k > a ? k : a, hi = k + 1 < z ? k + 1 : z;
            double wt = hi > lo ? hi - lo : 0;
            b->w[(size_t)i * b->stride + (k - start)] = sum > 0 ? (float)(wt / sum) : 0;
        }
    }
    return 0;
}

static void box_free(box_w *b) {
    free(b->first);
    free(b->w);
}

ursa_err img_fit(const img_rgb *in, int max_side, img_rgb *out) {
    memset(out, 0, sizeof *out);
    int w = in->w, h = in->h, nw = w, nh = h;
    if (max_side > 0 && (w > max_side || h > max_side)) {
        if (w >= h) {
            nw = max_side;
            nh = (int)((double)h * max_side / w + 0.5);
        } else {
            nh = max_side;
            nw = (int)((double)w * max_side / h + 0.5);
        }
        if (nw < 1) nw = 1;
        if (nh < 1) nh = 1;
    }
    out->px = malloc((size_t)nw * nh * 3);
    if (!out->px) return URSA_ERR_NOMEM;
    out->w = nw;
    out->h = nh;
    if (nw == w && nh == h) {
        memcpy(out->px, in->px, (size_t)w * h * 3);
        return URSA_OK;
    }
    /* two passes: columns (w -> nw) into a float buffer, then rows (h -> nh) */
    box_w bx = {0}, by = {0};
    float *mid = malloc(sizeof(float) * (size_t)nw * h * 3);
    if (!mid || box_make(&bx, w, nw) || box_make(&by, h, nh)) {
        free(mid);
        box_free(&bx);
        box_free(&by);
        img_free(out);
        return URSA_ERR_NOMEM;
    }
    for (int y = 0; y < h; y++) {
        const uint8_t *src = in->px + (size_t)y * w * 3;
        float *dst = mid + (size_t)y * nw * 3;
        for (int x = 0; x < nw; x++) {
            float r = 0, g = 0, b = 0;
            const float *wt = bx.w + (size_t)x * bx.stride;
            const uint8_t *s = src + (size_t)bx.first[x] * 3;
            for (int k = 0; k < bx.stride; k++, s += 3) {
                r += wt[k] * s[0];
                g += wt[k] * s[1];
                b += wt[k] * s[2];
            }
            dst[3 * x] = r;
            dst[3 * x + 1] = g;
            dst[3 * x + 2] = b;
        }
    }
    /* rows: a weighted sum of whole source rows, an axpy the compiler
     * vectorises */
    size_t rw = (size_t)nw * 3;
    float *acc = malloc(sizeof(float) * rw);
    if (!acc) {
        free(mid);
        box_free(&bx);
        box_free(&by);
        img_free(out);
        return URSA_ERR_NOMEM;
    }
    for (int y = 0; y < nh; y++) {
        const float *wt = by.w + (size_t)y * by.stride;
        memset(acc, 0, sizeof(float) * rw);
        for (int k = 0; k < by.stride; k++) {
            const float *restrict row = mid + (size_t)(by.first[y] + k) * rw;
            float *restrict a = acc;
            float wk = wt[k];
            for (size_t x = 0; x < rw; x++) a[x] += wk * row[x];
        }
        uint8_t *dst = out->px + (size_t)y * rw;
        for (size_t x = 0; x < rw; x++) {
            float v = acc[x] + 0.5f;
            dst[x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
    free(acc);
    free(mid);
    box_free(&bx);
    box_free(&by);
    return URSA_OK;
}

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
} enc_err;

static void enc_exit(j_common_ptr c) { longjmp(((enc_err *)c->err)->jb, 1); }

ursa_err img_encode_jpeg(const img_rgb *im, int quality, uint8_t **out, size_t *len) {
    struct jpeg_compress_struct ci;
    enc_err e;
    unsigned char *volatile buf = NULL;
    unsigned long size = 0;
    ci.err = jpeg_std_error(&e.pub);
    e.pub.error_exit = enc_exit;
    if (setjmp(e.jb)) {
        jpeg_destroy_compress(&ci);
        free(buf);
        return URSA_ERR_NOMEM;
    }
    jpeg_create_compress(&ci);
    unsigned char *b = NULL;
    jpeg_mem_dest(&ci, &b, &size);
    ci.image_width = (JDIMENSION)im->w;
    ci.image_height = (JDIMENSION)im->h;
    ci.input_components = 3;
    ci.in_color_space = JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, quality, TRUE);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)(im->px + (size_t)ci.next_scanline * im->w * 3);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    buf = b;
    jpeg_destroy_compress(&ci);
    *out = buf;
    *len = size;
    return URSA_OK;
}

ursa_err img_verify(const uint8_t *data, size_t len, const img_opts *o, uint8_t **jpeg,
                    size_t *jpeg_len, int *w, int *h, img_reject *rej) {
    img_rgb im, fit;
    *jpeg = NULL;
    img_decode_opts dop = img_decode_opts_default();
    dop.max_pixels = o->max_pixels;
    dop.shrink_to = o->max_size;
    dop.max_scans = o->max_scans;
    ursa_err err = img_decode(data, len, &dop, &im, rej);
    if (err) return err;
    /* the size the file has, not the one it was decoded at */
    if (im.src_w < o->min_side || im.src_h < o->min_side) {
        char b[96];
        snprintf(b, sizeof b, "%dx%d is under the minimum side of %d", im.src_w, im.src_h,
                 o->min_side);
        snprintf(rej->reason, sizeof rej->reason, "too_small");
        snprintf(rej->detail, sizeof rej->detail, "%s", b);
        img_free(&im);
        return URSA_ERR_INVALID;
    }
    int fits = o->max_size <= 0 || (im.w <= o->max_size && im.h <= o->max_size);
    if (im.jpeg_as_is && fits && len <= (size_t)im.w * im.h * 2 + 65536) {
        /* already what normalising would make: keep the file (one blob, not
         * two, and no encode) */
        *w = im.w;
        *h = im.h;
        *jpeg_len = 0;
        img_free(&im);
        return URSA_OK;
    }
    err = img_fit(&im, o->max_size, &fit);
    img_free(&im);
    if (err) return err;
    err = img_encode_jpeg(&fit, o->jpeg_quality, jpeg, jpeg_len);
    *w = fit.w;
    *h = fit.h;
    img_free(&fit);
    return err;
}
