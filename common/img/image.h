/* image.h: decoding, checking and normalising the images ursa downloads.
 *
 * Every decoder ends in the same place: an 8-bit RGB image, upright (EXIF
 * orientation applied), with alpha composited onto white. Decoders read the
 * size from the header and refuse a decompression bomb before allocating
 * pixels. A rejection carries a short machine-readable reason, one of:
 *   empty, not_an_image, unsupported_format, truncated, corrupt,
 *   too_many_pixels, too_small
 * and a human-readable detail. */
#ifndef URSA_IMG_IMAGE_H
#define URSA_IMG_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"

typedef enum { IMG_UNKNOWN = 0, IMG_JPEG, IMG_PNG, IMG_GIF, IMG_WEBP } img_format;

/* An RGB8 image, rows top to bottom, 3 bytes a pixel, no padding. */
typedef struct {
    int w, h;
    uint8_t *px;      /* owned; free with img_free() */
    int src_w, src_h; /* the header's size, before any shrinking while decoding */
    int jpeg_as_is;   /* a JPEG decoded whole with nothing to change: YCbCr or gray,
                         upright (no EXIF turn), at full size */
} img_rgb;

typedef struct {
    uint64_t max_pixels; /* refuse larger headers (default 100 Mpx) */
    int min_side;        /* refuse images whose shorter side is below this */
    int max_size;        /* longest side after normalisation; 0 keeps the size */
    int jpeg_quality;    /* of the stored JPEG */
    int max_scans;       /* refuse progressive JPEGs of more scans (default 64) */
} img_opts;

/* Defaults: 100 Mpx, min side 32, max size 500 (the lesson's), quality 90,
 * 64 scans. */
img_opts img_opts_default(void);

/* img.max-pixels, img.min-side, img.max-size, img.jpeg-quality,
 * img.max-scans: every daemon that decodes takes them. */
extern const cfg_def img_cfg_defs[];
img_opts img_opts_from_cfg(const cfg *c);

/* A rejection: reason is one of the words above. */
typedef struct {
    char reason[32];
    char detail[200];
} img_reject;

void img_free(img_rgb *im);
const char *img_format_name(img_format f);
/* Guesses the format from the first bytes. */
img_format img_sniff(const uint8_t *data, size_t len);

/* What one decode may take, and when it stops. */
typedef struct {
    uint64_t max_pixels; /* refuse larger headers (too_many_pixels) */
    int shrink_to;       /* JPEG and WebP decode at 1/2, 1/4 or 1/8 size while the
                            longest side stays at least this (0: full size) */
    int max_scans;       /* a progressive JPEG of more scans is refused (corrupt):
                            each empty scan costs a pass over every block */
    /* polled during a long decode; nonzero stops it (URSA_ERR_SHUTDOWN):
     * the client that wanted it has gone */
    int (*cancel)(void *arg);
    void *cancel_arg;
    /* nonzero: a JPEG whose header, as libjpeg reads it, costs more than
     * this (img_decode_cost's measure) is refused (too_many_pixels): the
     * budget reserved from img_decode_cost holds even when the file fools
     * its cheaper walk of the markers */
    size_t max_cost;
} img_decode_opts;

/* 100 Mpx, full size, 64 scans, no cancel. */
img_decode_opts img_decode_opts_default(void);

/* Decodes data into out (RGB8, upright). A GIF whose logical screen is far
 * larger than its first frame (more than four times, and over a megapixel)
 * gives the frame alone, so a few bytes cannot ask for a 100 Mpx canvas.
 * On failure fills rej and returns URSA_ERR_INVALID (bad input),
 * URSA_ERR_NOMEM or URSA_ERR_SHUTDOWN (cancelled). */
ursa_err img_decode(const uint8_t *data, size_t len, const img_decode_opts *o, img_rgb *out,
                    img_reject *rej);

/* The format and size its header gives, decoding nothing: 0, or -1 when
 * there is no header to read. */
int img_probe(const uint8_t *data, size_t len, img_format *fmt, int *w, int *h);

/* The most bytes img_decode(data, len, o) holds at once, from the header
 * alone (the shrinking, a progressive JPEG's coefficients, a turned copy),
 * before a pixel is decoded: what a server reserves from its decode budget.
 * A small floor when the header is unreadable or over max_pixels (the
 * decode then fails at once). */
size_t img_decode_cost(const uint8_t *data, size_t len, const img_decode_opts *o);

/* Area-averaging downscale so the longest side is at most max_side; a
 * smaller image is copied unchanged. */
ursa_err img_fit(const img_rgb *in, int max_side, img_rgb *out);

/* Encodes as a baseline JPEG into a new buffer the caller frees. */
ursa_err img_encode_jpeg(const img_rgb *im, int quality, uint8_t **out,
                         size_t *len);

/* The verifier's whole check: decode, refuse too-small, fit to max_size,
 * encode as JPEG. On OK *jpeg (caller frees) holds the normalised image of
 * size *w x *h, or is NULL when the file itself is one: a JPEG in YCbCr or
 * gray, upright, within max_size and without bulky extras (as fast.ai's
 * resize_images copies a file that needs no resizing); store data then.
 * On rejection returns URSA_ERR_INVALID and fills rej. */
ursa_err img_verify(const uint8_t *data, size_t len, const img_opts *o,
                    uint8_t **jpeg, size_t *jpeg_len, int *w, int *h,
                    img_reject *rej);

#endif
