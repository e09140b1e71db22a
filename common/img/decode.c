/* decode.c: JPEG (libjpeg-turbo), PNG (libpng), GIF (giflib, first frame)
 * and WebP (libwebp) into upright RGB8, refusing bombs, truncation and
 * corruption; see image.h. */
#include <stdio.h> /* before jpeglib.h, which uses FILE */

#include <gif_lib.h>
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <webp/decode.h>

#include "image.h"

static void reject(img_reject *rej, const char *reason, const char *fmt,
                   const char *arg) {
    snprintf(rej->reason, sizeof rej->reason, "%s", reason);
    snprintf(rej->detail, sizeof rej->detail, fmt, arg);
}

void img_free(img_rgb *im) {
    if (!im) return;
    free(im->px);
    im->px = NULL;
    im->w = im->h = 0;
}

const char *img_format_name(img_format f) {
    switch (f) {
    case IMG_JPEG: return "jpeg";
    case IMG_PNG: return "png";
    case IMG_GIF: return "gif";
    case IMG_WEBP: return "webp";
    default: return "unknown";
    }
}

img_format img_sniff(const uint8_t *d, size_t n) {
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return IMG_JPEG;
    if (n >= 8 && !memcmp(d, "\x89PNG\r\n\x1a\n", 8)) return IMG_PNG;
    if (n >= 6 && (!memcmp(d, "GIF87a", 6) || !memcmp(d, "GIF89a", 6))) return IMG_GIF;
    if (n >= 12 && !memcmp(d, "RIFF", 4) && !memcmp(d + 8, "WEBP", 4)) return IMG_WEBP;
    return IMG_UNKNOWN;
}

/* Text that is not an image: markup (HTML, SVG, XML) or printable bytes. */
static int looks_like_text(const uint8_t *d, size_t n) {
    size_t i = 0;
    if (n >= 3 && d[0] == 0xEF && d[1] == 0xBB && d[2] == 0xBF) i = 3; /* BOM */
    while (i < n && (d[i] == ' ' || d[i] == '\t' || d[i] == '\r' || d[i] == '\n')) i++;
    if (i < n && d[i] == '<') return 1;
    size_t lim = n < 512 ? n : 512, printable = 0;
    for (size_t k = 0; k < lim; k++)
        printable += (d[k] >= 0x20 && d[k] < 0x7f) || d[k] == '\n' || d[k] == '\r' || d[k] == '\t';
    return lim > 0 && printable == lim;
}

static int too_many(uint64_t w, uint64_t h, uint64_t max_pixels, img_reject *rej) {
    if (w == 0 || h == 0) {
        reject(rej, "corrupt", "image has a zero dimension%s", "");
        return 1;
    }
    if (w * h > max_pixels) {
        char b[96];
        snprintf(b, sizeof b, "%llux%llu exceeds %llu pixels", (unsigned long long)w,
                 (unsigned long long)h, (unsigned long long)max_pixels);
        reject(rej, "too_many_pixels", "%s", b);
        return 1;
    }
    return 0;
}

static ursa_err alloc_rgb(img_rgb *out, int w, int h) {
    out->w = w;
    out->h = h;
    out->px = malloc((size_t)w * (size_t)h * 3);
    return out->px ? URSA_OK : URSA_ERR_NOMEM;
}

/* ---- EXIF orientation --------------------------------------------------- */

static unsigned rd16(const uint8_t *p, int le) { return le ? p[0] | p[1] << 8 : p[0] << 8 | p[1]; }
static uint32_t rd32(const uint8_t *p, int le) {
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The orientation tag (1..8) of an APP1 Exif payload, or 1. */
static int exif_orientation(const uint8_t *p, size_t n) {
    if (n < 14 || memcmp(p, "Exif\0\0", 6) != 0) return 1;
    const uint8_t *t = p + 6;
    size_t tn = n - 6;
    int le;
    if (!memcmp(t, "II*\0", 4)) le = 1;
    else if (!memcmp(t, "MM\0*", 4)) le = 0;
    else return 1;
    size_t ifd = rd32(t + 4, le); /* size_t: an offset near 2^32 must not wrap */
    if (ifd + 2 > tn) return 1;
    unsigned cnt = rd16(t + ifd, le);
    for (unsigned i = 0; i < cnt; i++) {
        size_t e = ifd + 2 + (size_t)i * 12;
        if (e + 12 > tn) break;
        if (rd16(t + e, le) == 0x0112) {
            unsigned v = rd16(t + e + 8, le);
            return v >= 1 && v <= 8 ? (int)v : 1;
        }
    }
    return 1;
}

/* Applies EXIF orientation o in place (replacing the pixel buffer). */
static ursa_err orient(img_rgb *im, int o) {
    if (o <= 1) return URSA_OK;
    int w = im->w, h = im->h, swap = o >= 5;
    int nw = swap ? h : w, nh = swap ? w : h;
    uint8_t *dst = malloc((size_t)nw * nh * 3);
    if (!dst) return URSA_ERR_NOMEM;
    for (int y = 0; y < nh; y++)
        for (int x = 0; x < nw; x++) {
            int sx, sy; /* the source pixel shown at (x, y) */
            switch (o) {
            case 2: sx = w - 1 - x; sy = y; break;
            case 3: sx = w - 1 - x; sy = h - 1 - y; break;
            case 4: sx = x; sy = h - 1 - y; break;
            case 5: sx = y; sy = x; break;
            case 6: sx = y; sy = h - 1 - x; break;
            case 7: sx = w - 1 - y; sy = h - 1 - x; break;
            default: sx = w - 1 - y; sy = x; break; /* 8 */
            }
            memcpy(dst + ((size_t)y * nw + x) * 3, im->px + ((size_t)sy * w + sx) * 3, 3);
        }
    free(im->px);
    im->px = dst;
    im->w = nw;
    im->h = nh;
    if (swap) {
        int t = im->src_w;
        im->src_w = im->src_h;
        im->src_h = t;
    }
    return URSA_OK;
}

/* ---- JPEG ---------------------------------------------------------------- */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    int truncated;
    int header_read; /* an error before this is garbage, not a cut file */
    int stopped;     /* cancelled, not bad data */
    char msg[JMSG_LENGTH_MAX];
} jerr_mgr;

/* libjpeg's progress monitor: called for every row group and scan; it
 * refuses a file of too many scans and stops when the caller cancels */
typedef struct {
    struct jpeg_progress_mgr pub;
    const img_decode_opts *o;
    jerr_mgr *je;
    unsigned calls;
} jprog;

static void jprogress(j_common_ptr c) {
    jprog *p = (jprog *)c->progress;
    j_decompress_ptr d = (j_decompress_ptr)c;
    if (p->o->max_scans > 0 && d->input_scan_number > p->o->max_scans) {
        snprintf(p->je->msg, sizeof p->je->msg, "more than %d scans", p->o->max_scans);
        longjmp(p->je->jb, 1);
    }
    if (p->o->cancel && ++p->calls % 64 == 0 && p->o->cancel(p->o->cancel_arg)) {
        p->je->stopped = 1;
        snprintf(p->je->msg, sizeof p->je->msg, "cancelled");
        longjmp(p->je->jb, 1);
    }
}

/* The power-of-two fraction JPEG and WebP decode at: halved while the
 * longest side stays at least shrink_to. */
static unsigned shrink_denom(unsigned w, unsigned h, int shrink_to) {
    unsigned longest = w > h ? w : h, denom = 1;
    while (shrink_to > 0 && denom < 8 && longest / (denom * 2) >= (unsigned)shrink_to) denom *= 2;
    return denom;
}

static void jerr_exit(j_common_ptr c) {
    jerr_mgr *e = (jerr_mgr *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
}

static void jerr_emit(j_common_ptr c, int level) {
    jerr_mgr *e = (jerr_mgr *)c->err;
    /* libjpeg pads a cut-off file with an EOI and goes on: we do not. */
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) e->truncated = 1;
}

#define COST_FLOOR 65536 /* a decoder's own state */

/* What a JPEG's decode holds at most, from its header: the pixels at the
 * scaled size and a turned copy (EXIF orientation); progressive: every
 * block's coefficients, 2 bytes each, held until the last scan; baseline:
 * a row of blocks. img_decode_cost and decode_jpeg (which checks it against
 * what libjpeg itself read) both use it. */
static uint64_t jpeg_cost(unsigned w, unsigned h, unsigned comps, int prog, int shrink_to) {
    unsigned dn = shrink_denom(w, h, shrink_to);
    uint64_t out = (uint64_t)(w / dn + 1) * (h / dn + 1) * 3;
    return COST_FLOOR + 2 * out +
           (prog ? (uint64_t)w * h * comps * 2 : (uint64_t)w * comps * 16 * 2);
}

static ursa_err decode_jpeg(const uint8_t *d, size_t n, const img_decode_opts *o, img_rgb *out,
                            img_reject *rej) {
    uint64_t maxpx = o->max_pixels;
    int shrink_to = o->shrink_to;
    struct jpeg_decompress_struct ci;
    jerr_mgr je;
    memset(&je, 0, sizeof je);
    ci.err = jpeg_std_error(&je.pub);
    je.pub.error_exit = jerr_exit;
    je.pub.emit_message = jerr_emit;
    jprog prog;
    memset(&prog, 0, sizeof prog);
    prog.pub.progress_monitor = jprogress;
    prog.o = o;
    prog.je = &je;
    /* volatile: they change between setjmp and a possible longjmp */
    uint8_t *volatile px = NULL, *volatile tmp = NULL;
    JSAMPARRAY volatile row = NULL;
    if (setjmp(je.jb)) {
        jpeg_destroy_decompress(&ci);
        free(px);
        free(tmp);
        free(row);
        reject(rej, je.truncated && je.header_read ? "truncated" : "corrupt", "jpeg: %s",
               je.msg);
        return je.stopped ? URSA_ERR_SHUTDOWN : URSA_ERR_INVALID;
    }
    jpeg_create_decompress(&ci);
    ci.progress = &prog.pub;
    jpeg_mem_src(&ci, d, (unsigned long)n);
    jpeg_save_markers(&ci, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&ci, TRUE);
    je.header_read = 1;
    if (too_many(ci.image_width, ci.image_height, maxpx, rej)) {
        jpeg_destroy_decompress(&ci);
        return URSA_ERR_INVALID;
    }
    /* libjpeg reads past junk that img_decode_cost's walk of the markers
     * stops at: what it read must not cost more than was reserved */
    uint64_t cost = jpeg_cost(ci.image_width, ci.image_height, (unsigned)ci.num_components,
                              ci.progressive_mode, shrink_to);
    if (o->max_cost && cost > o->max_cost) {
        jpeg_destroy_decompress(&ci);
        char b[96];
        snprintf(b, sizeof b, "%llu bytes, over the %zu allowed", (unsigned long long)cost,
                 o->max_cost);
        reject(rej, "too_many_pixels", "jpeg: its decode would hold %s", b);
        return URSA_ERR_INVALID;
    }
    int orientation = 1;
    for (jpeg_saved_marker_ptr m = ci.marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1) orientation = exif_orientation(m->data, m->data_length);
    int cmyk = ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK;
    ci.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    if (shrink_to > 0) { /* DCT scaling: decode at 1/2, 1/4 or 1/8 size */
        ci.scale_num = 1;
        ci.scale_denom = shrink_denom(ci.image_width, ci.image_height, shrink_to);
    }
    jpeg_start_decompress(&ci);
    int w = (int)ci.output_width, h = (int)ci.output_height, nc = ci.output_components;
    px = malloc((size_t)w * h * 3);
    row = malloc(sizeof(JSAMPROW));
    tmp = cmyk ? malloc((size_t)w * 4) : NULL;
    if (!px || !row || (cmyk && !tmp)) {
        free(tmp);
        jpeg_destroy_decompress(&ci);
        free(px);
        free(row);
        return URSA_ERR_NOMEM;
    }
    while (ci.output_scanline < ci.output_height && !je.truncated) {
        uint8_t *dst = px + (size_t)ci.output_scanline * w * 3;
        row[0] = cmyk ? tmp : dst;
        jpeg_read_scanlines(&ci, row, 1);
        if (cmyk) {
            /* Adobe writes CMYK inverted, which is what nearly every CMYK
             * JPEG on the web is; convert with K as a multiplier. */
            for (int x = 0; x < w; x++) {
                const uint8_t *s = tmp + 4 * x;
                unsigned k = s[3];
                if (!ci.saw_Adobe_marker) {
                    dst[3 * x] = (uint8_t)((255 - s[0]) * (255 - k) / 255);
                    dst[3 * x + 1] = (uint8_t)((255 - s[1]) * (255 - k) / 255);
                    dst[3 * x + 2] = (uint8_t)((255 - s[2]) * (255 - k) / 255);
                } else {
                    dst[3 * x] = (uint8_t)(s[0] * k / 255);
                    dst[3 * x + 1] = (uint8_t)(s[1] * k / 255);
                    dst[3 * x + 2] = (uint8_t)(s[2] * k / 255);
                }
            }
        }
    }
    (void)nc;
    free(tmp);
    tmp = NULL;
    free(row);
    row = NULL;
    if (!je.truncated) jpeg_finish_decompress(&ci);
    jpeg_destroy_decompress(&ci);
    if (je.truncated) {
        free(px);
        reject(rej, "truncated", "jpeg: %s", "premature end of data");
        return URSA_ERR_INVALID;
    }
    out->w = w;
    out->h = h;
    out->px = px;
    out->src_w = (int)ci.image_width;
    out->src_h = (int)ci.image_height;
    out->jpeg_as_is = !cmyk && orientation == 1 &&
                      (ci.jpeg_color_space == JCS_YCbCr || ci.jpeg_color_space == JCS_GRAYSCALE) &&
                      out->w == out->src_w && out->h == out->src_h;
    ursa_err err = orient(out, orientation);
    if (err) img_free(out);
    return err;
}

/* ---- PNG ----------------------------------------------------------------- */

static ursa_err decode_png(const uint8_t *d, size_t n, uint64_t maxpx, img_rgb *out,
                           img_reject *rej) {
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&pi, d, n)) {
        reject(rej, "corrupt", "png: %s", pi.message);
        png_image_free(&pi);
        return URSA_ERR_INVALID;
    }
    if (too_many(pi.width, pi.height, maxpx, rej)) {
        png_image_free(&pi);
        return URSA_ERR_INVALID;
    }
    pi.format = PNG_FORMAT_RGB; /* palette, gray, 16-bit all land here */
    png_color white = {255, 255, 255};
    ursa_err err = alloc_rgb(out, (int)pi.width, (int)pi.height);
    if (err) {
        png_image_free(&pi);
        return err;
    }
    if (!png_image_finish_read(&pi, &white, out->px, 0, NULL)) {
        /* libpng says "Read Error" or "Not enough image data" for a cut file */
        int cut = strstr(pi.message, "Read Error") || strstr(pi.message, "Not enough") ||
                  strstr(pi.message, "EOF") || strstr(pi.message, "end of");
        reject(rej, cut ? "truncated" : "corrupt", "png: %s", pi.message);
        png_image_free(&pi);
        img_free(out);
        return URSA_ERR_INVALID;
    }
    png_image_free(&pi);
    out->src_w = out->w;
    out->src_h = out->h;
    return URSA_OK;
}

/* ---- GIF (first frame) ---------------------------------------------------- */

typedef struct {
    const uint8_t *d;
    size_t n, off;
} memsrc;

static int gif_read(GifFileType *g, GifByteType *buf, int len) {
    memsrc *m = g->UserData;
    size_t left = m->n - m->off, take = (size_t)len < left ? (size_t)len : left;
    memcpy(buf, m->d + m->off, take);
    m->off += take;
    return (int)take;
}

static ursa_err decode_gif(const uint8_t *d, size_t n, uint64_t maxpx, img_rgb *out,
                           img_reject *rej) {
    memsrc m = {d, n, 0};
    int gerr = 0;
    GifFileType *g = DGifOpen(&m, gif_read, &gerr);
    if (!g) {
        reject(rej, "corrupt", "gif: %s", GifErrorString(gerr));
        return URSA_ERR_INVALID;
    }
    ursa_err ret = URSA_ERR_INVALID;
    uint8_t *idx = NULL;
    int transparent = -1;
    if (too_many((uint64_t)g->SWidth, (uint64_t)g->SHeight, maxpx, rej)) goto done;
    for (;;) {
        GifRecordType rt;
        if (DGifGetRecordType(g, &rt) == GIF_ERROR) goto gif_fail;
        if (rt == TERMINATE_RECORD_TYPE) {
            reject(rej, "corrupt", "gif: %s", "no image in file");
            goto done;
        }
        if (rt == EXTENSION_RECORD_TYPE) {
            int code;
            GifByteType *ext;
            if (DGifGetExtension(g, &code, &ext) == GIF_ERROR) goto gif_fail;
            if (code == GRAPHICS_EXT_FUNC_CODE && ext && ext[0] >= 4 && (ext[1] & 1))
                transparent = ext[4];
            while (ext)
                if (DGifGetExtensionNext(g, &ext) == GIF_ERROR) goto gif_fail;
            continue;
        }
        if (rt != IMAGE_DESC_RECORD_TYPE) continue;
        if (DGifGetImageDesc(g) == GIF_ERROR) goto gif_fail;
        GifImageDesc *id = &g->Image;
        int fw = id->Width, fh = id->Height;
        if (too_many((uint64_t)fw, (uint64_t)fh, maxpx, rej)) goto done;
        ColorMapObject *cm = id->ColorMap ? id->ColorMap : g->SColorMap;
        if (!cm) {
            reject(rej, "corrupt", "gif: %s", "no color map");
            goto done;
        }
        /* the canvas is the logical screen, unless that is far larger than
         * the frame: a 35-byte file can claim a 10000x10000 screen around a
         * 1x1 frame. Then the frame alone (clipped to the screen). */
        uint64_t sa = (uint64_t)g->SWidth * g->SHeight, fa = (uint64_t)fw * fh;
        int frame_only = sa > 4 * fa && sa > ((uint64_t)1 << 20);
        int ox = frame_only ? id->Left : 0, oy = frame_only ? id->Top : 0;
        int cw = g->SWidth, chh = g->SHeight;
        if (frame_only) {
            cw = id->Left + fw > g->SWidth ? g->SWidth - id->Left : fw;
            chh = id->Top + fh > g->SHeight ? g->SHeight - id->Top : fh;
            if (id->Left < 0 || id->Top < 0 || cw < 1 || chh < 1) {
                reject(rej, "corrupt", "gif: %s", "the first frame lies outside the screen");
                goto done;
            }
        }
        idx = malloc((size_t)fw * fh);
        if (!idx || alloc_rgb(out, cw, chh)) {
            ret = URSA_ERR_NOMEM;
            goto done;
        }
        out->src_w = cw;
        out->src_h = chh;
        if (id->Interlace) {
            static const int start[] = {0, 4, 2, 1}, step[] = {8, 8, 4, 2};
            for (int p = 0; p < 4; p++)
                for (int y = start[p]; y < fh; y += step[p])
                    if (DGifGetLine(g, idx + (size_t)y * fw, fw) == GIF_ERROR) goto gif_fail;
        } else {
            for (int y = 0; y < fh; y++)
                if (DGifGetLine(g, idx + (size_t)y * fw, fw) == GIF_ERROR) goto gif_fail;
        }
        memset(out->px, 255, (size_t)out->w * out->h * 3); /* white canvas */
        for (int y = 0; y < fh; y++) {
            int cy = id->Top + y - oy;
            if (cy < 0 || cy >= out->h) continue;
            for (int x = 0; x < fw; x++) {
                int cx = id->Left + x - ox, c = idx[(size_t)y * fw + x];
                if (cx < 0 || cx >= out->w || c == transparent || c >= cm->ColorCount) continue;
                uint8_t *p = out->px + ((size_t)cy * out->w + cx) * 3;
                p[0] = cm->Colors[c].Red;
                p[1] = cm->Colors[c].Green;
                p[2] = cm->Colors[c].Blue;
            }
        }
        /* The first frame is all we keep, but a file cut before its
         * trailer is truncated: walk the remaining records without
         * decoding them. */
        for (;;) {
            if (DGifGetRecordType(g, &rt) == GIF_ERROR) goto gif_fail;
            if (rt == TERMINATE_RECORD_TYPE) break;
            GifByteType *blk;
            if (rt == IMAGE_DESC_RECORD_TYPE) {
                int code;
                if (DGifGetImageDesc(g) == GIF_ERROR || DGifGetCode(g, &code, &blk) == GIF_ERROR)
                    goto gif_fail;
                while (blk)
                    if (DGifGetCodeNext(g, &blk) == GIF_ERROR) goto gif_fail;
            } else if (rt == EXTENSION_RECORD_TYPE) {
                int code;
                if (DGifGetExtension(g, &code, &blk) == GIF_ERROR) goto gif_fail;
                while (blk)
                    if (DGifGetExtensionNext(g, &blk) == GIF_ERROR) goto gif_fail;
            }
        }
        ret = URSA_OK;
        goto done;
    }
gif_fail:
    reject(rej, g->Error == D_GIF_ERR_READ_FAILED || g->Error == D_GIF_ERR_EOF_TOO_SOON
                    ? "truncated" : "corrupt",
           "gif: %s", GifErrorString(g->Error));
    img_free(out);
done:
    free(idx);
    DGifCloseFile(g, &gerr);
    if (ret != URSA_OK) img_free(out);
    return ret;
}

/* ---- WebP ------------------------------------------------------------------ */

static ursa_err decode_webp(const uint8_t *d, size_t n, const img_decode_opts *o, img_rgb *out,
                            img_reject *rej) {
    WebPDecoderConfig wc;
    if (!WebPInitDecoderConfig(&wc)) return URSA_ERR_NOMEM;
    VP8StatusCode st = WebPGetFeatures(d, n, &wc.input);
    if (st != VP8_STATUS_OK) {
        reject(rej, st == VP8_STATUS_NOT_ENOUGH_DATA ? "truncated" : "corrupt",
               "webp: header status %s", st == VP8_STATUS_NOT_ENOUGH_DATA ? "not enough data" : "invalid");
        return URSA_ERR_INVALID;
    }
    int sw = wc.input.width, sh = wc.input.height, alpha = wc.input.has_alpha;
    if (too_many((uint64_t)sw, (uint64_t)sh, o->max_pixels, rej)) return URSA_ERR_INVALID;
    if (wc.input.has_animation) {
        reject(rej, "unsupported_format", "webp: %s", "animated WebP");
        return URSA_ERR_INVALID;
    }
    /* decoded at a power-of-two fraction, as JPEG's DCT scaling, by
     * libwebp's own scaler */
    int denom = (int)shrink_denom((unsigned)sw, (unsigned)sh, o->shrink_to);
    int w = (sw + denom - 1) / denom, h = (sh + denom - 1) / denom;
    if (denom > 1) {
        wc.options.use_scaling = 1;
        wc.options.scaled_width = w;
        wc.options.scaled_height = h;
    }
    /* straight into our buffer: RGB, or RGBA (4 bytes a pixel, then
     * composited onto white in place) where there is alpha */
    int bpp = alpha ? 4 : 3;
    uint8_t *px = malloc((size_t)w * h * bpp);
    if (!px) return URSA_ERR_NOMEM;
    wc.output.colorspace = alpha ? MODE_RGBA : MODE_RGB;
    wc.output.is_external_memory = 1;
    wc.output.u.RGBA.rgba = px;
    wc.output.u.RGBA.stride = w * bpp;
    wc.output.u.RGBA.size = (size_t)w * h * bpp;
    st = WebPDecode(d, n, &wc);
    WebPFreeDecBuffer(&wc.output);
    if (st != VP8_STATUS_OK) {
        free(px);
        /* the header parsed, so a failing body is most often a cut file */
        reject(rej, st == VP8_STATUS_OUT_OF_MEMORY ? "corrupt" : "truncated", "webp: %s",
               "cannot decode the image data");
        return st == VP8_STATUS_OUT_OF_MEMORY ? URSA_ERR_NOMEM : URSA_ERR_INVALID;
    }
    if (alpha) {
        for (size_t i = 0; i < (size_t)w * h; i++) { /* alpha onto white, 4 bytes to 3 */
            unsigned a = px[4 * i + 3];
            for (int c = 0; c < 3; c++)
                px[3 * i + c] = (uint8_t)((px[4 * i + c] * a + 255 * (255 - a) + 127) / 255);
        }
        uint8_t *shrunk = realloc(px, (size_t)w * h * 3);
        if (shrunk) px = shrunk;
    }
    out->w = w;
    out->h = h;
    out->px = px;
    out->src_w = sw;
    out->src_h = sh;
    return URSA_OK;
}

img_decode_opts img_decode_opts_default(void) {
    img_decode_opts o = {100000000ULL, 0, 64, NULL, NULL, 0};
    return o;
}

/* ---- headers alone ----------------------------------------------------------- */

/* img_probe's work, and for a JPEG whether it is progressive and its
 * components */
static int probe(const uint8_t *d, size_t n, img_format *fmt, int *w, int *h, int *progressive,
                 int *comps) {
    *fmt = img_sniff(d, n);
    *w = *h = 0;
    *progressive = 0;
    *comps = 3;
    switch (*fmt) {
    case IMG_PNG: /* IHDR first: width and height at 16 and 20 */
        if (n < 24) return -1;
        *w = (int)(rd32(d + 16, 0) & 0x7fffffff);
        *h = (int)(rd32(d + 20, 0) & 0x7fffffff);
        return 0;
    case IMG_GIF:
        if (n < 10) return -1;
        *w = (int)rd16(d + 6, 1);
        *h = (int)rd16(d + 8, 1);
        return 0;
    case IMG_WEBP:
        return WebPGetInfo(d, n, w, h) ? 0 : -1;
    case IMG_JPEG: /* the markers up to the first start of frame */
        for (size_t i = 2; i + 9 < n;) {
            if (d[i] != 0xFF) return -1;
            unsigned m = d[i + 1];
            if (m == 0xFF) { /* fill byte */
                i++;
                continue;
            }
            size_t len = rd16(d + i + 2, 0);
            if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
                *h = (int)rd16(d + i + 5, 0);
                *w = (int)rd16(d + i + 7, 0);
                *comps = d[i + 9] ? d[i + 9] : 1;
                *progressive = m == 0xC2 || m == 0xC6 || m == 0xCA || m == 0xCE;
                return 0;
            }
            if (m == 0xD9 || m == 0xDA || len < 2) return -1;
            i += 2 + len;
        }
        return -1;
    default:
        return -1;
    }
}

int img_probe(const uint8_t *d, size_t n, img_format *fmt, int *w, int *h) {
    int prog, comps;
    return probe(d, n, fmt, w, h, &prog, &comps);
}

/* The first frame's size, from its image descriptor: 0, or -1 when the
 * bytes end before it. */
static int gif_first_frame(const uint8_t *d, size_t n, uint64_t *fw, uint64_t *fh) {
    size_t i = 13;
    if (n < 13) return -1;
    if (d[10] & 0x80) i += (size_t)3 << ((d[10] & 7) + 1); /* the global color table */
    while (i < n) {
        if (d[i] == 0x2C) { /* image descriptor: left, top, width, height */
            if (i + 9 > n) return -1;
            *fw = rd16(d + i + 5, 1);
            *fh = rd16(d + i + 7, 1);
            return 0;
        }
        if (d[i] != 0x21 || i + 2 >= n) return -1; /* an extension, or the end */
        i += 2; /* introducer and label, then sub-blocks to a zero length */
        while (i < n && d[i]) i += (size_t)d[i] + 1;
        i++;
    }
    return -1;
}

size_t img_decode_cost(const uint8_t *d, size_t n, const img_decode_opts *o) {
    img_decode_opts def = img_decode_opts_default();
    if (!o) o = &def;
    img_format f;
    int w, h, prog, comps;
    if (probe(d, n, &f, &w, &h, &prog, &comps) || w <= 0 || h <= 0 ||
        (uint64_t)w * (uint64_t)h > o->max_pixels)
        return COST_FLOOR; /* refused from the header, before any pixel (a JPEG's
                              decode checks what libjpeg reads against max_cost) */
    uint64_t px = (uint64_t)w * (uint64_t)h;
    uint64_t cost = COST_FLOOR;
    if (f == IMG_JPEG) {
        cost = jpeg_cost((unsigned)w, (unsigned)h, (unsigned)comps, prog, o->shrink_to);
    } else if (f == IMG_WEBP) {
        unsigned dn = shrink_denom((unsigned)w, (unsigned)h, o->shrink_to);
        uint64_t out = (uint64_t)(w / dn + 1) * (h / dn + 1) * 3;
        cost += 2 * out; /* the pixels, and a turned copy (EXIF orientation) */
        /* lossless (VP8L) holds the whole image as ARGB whatever the
         * scaling (backward references reach anywhere); lossy holds a
         * full-size alpha plane; then RGBA rows and the scaler's */
        WebPBitstreamFeatures ft;
        int lossy = WebPGetFeatures(d, n, &ft) == VP8_STATUS_OK && ft.format == 1;
        cost += lossy ? (ft.has_alpha ? px : 0) : px * 4;
        cost += out / 3 + (uint64_t)w * 4 * 8;
    } else if (f == IMG_PNG) {
        cost += px * 3 + (uint64_t)w * 8 * 2; /* RGB, and libpng's 16-bit rows */
    } else { /* GIF: the canvas's RGB and the frame's indices */
        uint64_t fw, fh, canvas = px;
        if (!gif_first_frame(d, n, &fw, &fh)) {
            if (px > 4 * fw * fh && px > ((uint64_t)1 << 20)) canvas = fw * fh; /* frame only */
            cost += fw * fh;
        } else {
            cost += px;
        }
        cost += canvas * 3;
    }
    return cost > SIZE_MAX ? SIZE_MAX : (size_t)cost;
}

ursa_err img_decode(const uint8_t *d, size_t n, const img_decode_opts *o, img_rgb *out,
                    img_reject *rej) {
    img_decode_opts def = img_decode_opts_default();
    if (!o) o = &def;
    memset(out, 0, sizeof *out);
    memset(rej, 0, sizeof *rej);
    if (n == 0) {
        reject(rej, "empty", "%s", "no bytes");
        return URSA_ERR_INVALID;
    }
    switch (img_sniff(d, n)) {
    case IMG_JPEG: return decode_jpeg(d, n, o, out, rej);
    case IMG_PNG: return decode_png(d, n, o->max_pixels, out, rej);
    case IMG_GIF: return decode_gif(d, n, o->max_pixels, out, rej);
    case IMG_WEBP: return decode_webp(d, n, o, out, rej);
    default: break;
    }
    if (looks_like_text(d, n))
        reject(rej, "not_an_image", "%s", "text or markup (HTML, SVG, XML)");
    else
        reject(rej, "unsupported_format", "%s", "not JPEG, PNG, GIF or WebP");
    return URSA_ERR_INVALID;
}
