/* Unit tests of common/img: sniffing, the JPEG round trip, resizing, EXIF
 * orientation, every rejection reason, and robustness against mangled
 * input (run under ASan in CI). The fault files made by ImageMagick are
 * checked by tests/integration/test_verify_cli.sh. */
#include "test.h"

#include <jpeglib.h>
#include <webp/encode.h>

#include "image.h"

/* decode limits: this many pixels, full size */
static const img_decode_opts *dopts(uint64_t max_pixels) {
    static img_decode_opts o;
    o = img_decode_opts_default();
    o.max_pixels = max_pixels;
    return &o;
}

static img_rgb make(int w, int h, uint8_t (*f)(int x, int y, int c)) {
    img_rgb im = {w, h, malloc((size_t)w * h * 3), w, h, 0};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) im.px[((size_t)y * w + x) * 3 + c] = f(x, y, c);
    return im;
}
static uint8_t gradient(int x, int y, int c) { return (uint8_t)(x + y + c * 40); } /* smooth */
static uint8_t halves(int x, int y, int c) { (void)y, (void)c; return x < 20 ? 0 : 255; }
static uint8_t flat(int x, int y, int c) { (void)x, (void)y; return (uint8_t)(c == 0 ? 200 : 30); }

static void sniffing(void **state) {
    (void)state;
    assert_int_equal(img_sniff((const uint8_t *)"\xff\xd8\xff\xe0", 4), IMG_JPEG);
    assert_int_equal(img_sniff((const uint8_t *)"\x89PNG\r\n\x1a\n", 8), IMG_PNG);
    assert_int_equal(img_sniff((const uint8_t *)"GIF89a", 6), IMG_GIF);
    assert_int_equal(img_sniff((const uint8_t *)"RIFF\0\0\0\0WEBPVP8 ", 16), IMG_WEBP);
    assert_int_equal(img_sniff((const uint8_t *)"<html>", 6), IMG_UNKNOWN);
    assert_string_equal(img_format_name(IMG_WEBP), "webp");
}

static void jpeg_round_trip_is_close(void **state) {
    (void)state;
    img_rgb im = make(64, 48, gradient), back;
    uint8_t *jpeg;
    size_t len;
    img_reject rej;
    assert_int_equal(img_encode_jpeg(&im, 95, &jpeg, &len), URSA_OK);
    assert_int_equal(img_decode(jpeg, len, dopts(1000000), &back, &rej), URSA_OK);
    assert_int_equal(back.w, 64);
    assert_int_equal(back.h, 48);
    double se = 0;
    for (size_t i = 0; i < 64 * 48 * 3; i++) {
        double d = (double)im.px[i] - back.px[i];
        se += d * d;
    }
    double mse = se / (64 * 48 * 3);
    assert_true(mse < 40); /* PSNR above ~32 dB */
    img_free(&back);
    free(jpeg);
    img_free(&im);
}

static void fit_keeps_colour_and_aspect(void **state) {
    (void)state;
    img_rgb im = make(1000, 10, flat), out;
    assert_int_equal(img_fit(&im, 500, &out), URSA_OK);
    assert_int_equal(out.w, 500);
    assert_int_equal(out.h, 5);
    for (size_t i = 0; i < 500 * 5; i++) {
        assert_int_equal(out.px[3 * i], 200);
        assert_int_equal(out.px[3 * i + 1], 30);
    }
    img_free(&out);
    assert_int_equal(img_fit(&im, 2000, &out), URSA_OK); /* already small: a copy */
    assert_int_equal(out.w, 1000);
    assert_memory_equal(out.px, im.px, 1000 * 10 * 3);
    img_free(&out);
    img_free(&im);
    /* a 1-pixel checkerboard halved is mid grey everywhere: area averaging */
    img_rgb cb = {8, 8, malloc(8 * 8 * 3), 8, 8, 0};
    for (int i = 0; i < 64; i++) memset(cb.px + 3 * i, ((i / 8 + i % 8) % 2) ? 255 : 0, 3);
    assert_int_equal(img_fit(&cb, 4, &out), URSA_OK);
    for (int i = 0; i < 16 * 3; i++) assert_true(out.px[i] >= 127 && out.px[i] <= 128);
    img_free(&out);
    img_free(&cb);
}

/* Inserts an APP1 Exif segment with the given orientation after SOI. */
static uint8_t *with_orientation(const uint8_t *jpeg, size_t len, int o, size_t *outlen) {
    const uint8_t app1[] = {0xFF, 0xE1, 0x00, 0x22, 'E', 'x', 'i', 'f', 0, 0,
                            'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1,
                            0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, (uint8_t)o, 0, 0,
                            0, 0, 0, 0};
    *outlen = len + sizeof app1;
    uint8_t *b = malloc(*outlen);
    memcpy(b, jpeg, 2);
    memcpy(b + 2, app1, sizeof app1);
    memcpy(b + 2 + sizeof app1, jpeg + 2, len - 2);
    return b;
}

static void exif_orientation_is_applied(void **state) {
    (void)state;
    img_rgb im = make(40, 20, halves); /* left half black, right half white */
    uint8_t *jpeg, *rot;
    size_t len, rlen;
    img_reject rej;
    img_rgb out;
    assert_int_equal(img_encode_jpeg(&im, 95, &jpeg, &len), URSA_OK);
    rot = with_orientation(jpeg, len, 6, &rlen); /* shown turned 90 degrees clockwise */
    assert_int_equal(img_decode(rot, rlen, dopts(1000000), &out, &rej), URSA_OK);
    assert_int_equal(out.w, 20);
    assert_int_equal(out.h, 40);
    assert_true(out.px[(5 * 20 + 10) * 3] < 40);  /* top: the black half */
    assert_true(out.px[(35 * 20 + 10) * 3] > 215); /* bottom: the white half */
    img_free(&out);
    free(rot);
    rot = with_orientation(jpeg, len, 3, &rlen); /* upside down */
    assert_int_equal(img_decode(rot, rlen, dopts(1000000), &out, &rej), URSA_OK);
    assert_int_equal(out.w, 40);
    assert_true(out.px[(10 * 40 + 5) * 3] > 215); /* left is now white */
    img_free(&out);
    /* an IFD offset of 0xFFFFFFFF (found by the fuzzer: it wrapped the
     * bounds check) is ignored: the image decodes as stored */
    memset(rot + 2 + 14, 0xFF, 4);
    assert_int_equal(img_decode(rot, rlen, dopts(1000000), &out, &rej), URSA_OK);
    assert_int_equal(out.w, 40);
    assert_true(out.px[(10 * 40 + 5) * 3] < 40);
    img_free(&out);
    free(rot);
    free(jpeg);
    img_free(&im);
}

static void rejections(void **state) {
    (void)state;
    img_rgb im = make(64, 48, gradient), out;
    uint8_t *jpeg;
    size_t len;
    img_reject rej;
    assert_int_equal(img_encode_jpeg(&im, 90, &jpeg, &len), URSA_OK);
    {   /* cut inside the image data of a larger picture: truncated */
        img_rgb big = make(300, 200, gradient);
        uint8_t *bj;
        size_t bl;
        assert_int_equal(img_encode_jpeg(&big, 90, &bj, &bl), URSA_OK);
        assert_int_equal(img_decode(bj, bl * 3 / 4, dopts(1000000), &out, &rej), URSA_ERR_INVALID);
        assert_string_equal(rej.reason, "truncated");
        free(bj);
        img_free(&big);
    }
    assert_int_equal(img_decode(jpeg, len, dopts(64 * 48 - 1), &out, &rej), URSA_ERR_INVALID);
    assert_string_equal(rej.reason, "too_many_pixels");
    assert_null(out.px);
    const char *html = "  <!doctype html><p>hi";
    assert_int_equal(img_decode((const uint8_t *)html, strlen(html), dopts(1000), &out, &rej),
                     URSA_ERR_INVALID);
    assert_string_equal(rej.reason, "not_an_image");
    assert_int_equal(img_decode((const uint8_t *)"", 0, dopts(1000), &out, &rej), URSA_ERR_INVALID);
    assert_string_equal(rej.reason, "empty");
    const uint8_t bin[] = {0x00, 0x01, 0x02, 0xfe, 0x80};
    assert_int_equal(img_decode(bin, sizeof bin, dopts(1000), &out, &rej), URSA_ERR_INVALID);
    assert_string_equal(rej.reason, "unsupported_format");
    img_opts o = img_opts_default();
    o.min_side = 50;
    uint8_t *nj;
    size_t nl;
    int w, h;
    assert_int_equal(img_verify(jpeg, len, &o, &nj, &nl, &w, &h, &rej), URSA_ERR_INVALID);
    assert_string_equal(rej.reason, "too_small");
    o.min_side = 8;
    o.max_size = 32;
    assert_int_equal(img_verify(jpeg, len, &o, &nj, &nl, &w, &h, &rej), URSA_OK);
    assert_int_equal(w, 32);
    assert_int_equal(h, 24);
    assert_int_equal(img_sniff(nj, nl), IMG_JPEG);
    free(nj);
    /* a JPEG that needs nothing (RGB, upright, within max_size) is kept as
     * it is: no new JPEG */
    o.max_size = 500;
    nj = (uint8_t *)1;
    assert_int_equal(img_verify(jpeg, len, &o, &nj, &nl, &w, &h, &rej), URSA_OK);
    assert_null(nj);
    assert_int_equal(w, im.w);
    assert_int_equal(h, im.h);
    /* one over max_size is not */
    o.max_size = im.w - 1;
    assert_int_equal(img_verify(jpeg, len, &o, &nj, &nl, &w, &h, &rej), URSA_OK);
    assert_non_null(nj);
    assert_true(w <= im.w - 1);
    free(nj);
    free(jpeg);
    img_free(&im);
}

static void mangled_input_never_crashes(void **state) {
    (void)state;
    img_rgb im = make(48, 40, gradient), out;
    uint8_t *jpeg;
    size_t len;
    img_reject rej;
    assert_int_equal(img_encode_jpeg(&im, 80, &jpeg, &len), URSA_OK);
    uint8_t *buf = malloc(len);
    srand(7);
    int ok = 0, bad = 0;
    for (int i = 0; i < 1500; i++) {
        memcpy(buf, jpeg, len);
        int flips = 1 + rand() % 8;
        for (int f = 0; f < flips; f++) buf[rand() % len] = (uint8_t)rand();
        size_t n = rand() % 4 ? len : (size_t)rand() % len;
        ursa_err err = img_decode(buf, n, dopts(1 << 20), &out, &rej);
        assert_true(err == URSA_OK || err == URSA_ERR_INVALID);
        if (err == URSA_OK) {
            assert_non_null(out.px);
            ok++;
            img_free(&out);
        } else {
            assert_true(strlen(rej.reason) > 0);
            bad++;
        }
    }
    assert_true(ok > 0 && bad > 0); /* both paths were exercised */
    free(buf);
    free(jpeg);
    img_free(&im);
}

/* 35 bytes: a 10000x10000 logical screen around a 1x1 frame. The decode
 * gives the frame, and the cost (what a server reserves) is small. */
static void gif_bomb_decodes_the_frame(void **state) {
    (void)state;
    static const uint8_t gif[] = {'G', 'I', 'F', '8', '9', 'a', 0x10, 0x27, 0x10, 0x27, 0x80,
                                  0, 0, 0, 0, 0, 255, 255, 255, 0x2C, 0, 0, 0, 0, 1, 0, 1, 0,
                                  0, 2, 2, 0x44, 0x01, 0, 0x3B};
    assert_int_equal(sizeof gif, 35);
    img_rgb out;
    img_reject rej;
    assert_true(img_decode_cost(gif, sizeof gif, NULL) < 1 << 20);
    assert_int_equal(img_decode(gif, sizeof gif, NULL, &out, &rej), URSA_OK);
    assert_int_equal(out.w, 1);
    assert_int_equal(out.h, 1);
    img_free(&out);
    /* a screen only a little larger than its frame is still the canvas */
    uint8_t small[sizeof gif];
    memcpy(small, gif, sizeof gif);
    small[6] = 3, small[7] = 0, small[8] = 2, small[9] = 0; /* 3x2 */
    assert_int_equal(img_decode(small, sizeof small, NULL, &out, &rej), URSA_OK);
    assert_int_equal(out.w, 3);
    assert_int_equal(out.h, 2);
    img_free(&out);
}

/* A progressive JPEG of w x h from libjpeg (nscans: its own scans, then the
 * last one repeated until there are this many; 0: as encoded). */
static uint8_t *progressive_jpeg(int w, int h, int nscans, size_t *len) {
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr je;
    ci.err = jpeg_std_error(&je);
    jpeg_create_compress(&ci);
    unsigned char *buf = NULL;
    unsigned long blen = 0;
    jpeg_mem_dest(&ci, &buf, &blen);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = 3;
    ci.in_color_space = JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_simple_progression(&ci);
    jpeg_start_compress(&ci, TRUE);
    uint8_t *row = malloc((size_t)w * 3);
    while (ci.next_scanline < ci.image_height) {
        for (int x = 0; x < w * 3; x++) row[x] = (uint8_t)(x + ci.next_scanline);
        JSAMPROW r = row;
        jpeg_write_scanlines(&ci, &r, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    free(row);
    *len = blen;
    if (!nscans) return buf;
    /* the last scan: from the last SOS marker to the EOI */
    size_t last = 0;
    for (size_t i = 2; i + 1 < blen; i++)
        if (buf[i] == 0xFF && buf[i + 1] == 0xDA) last = i;
    size_t scan = blen - 2 - last;
    uint8_t *out = malloc(last + scan * (size_t)nscans + 2);
    memcpy(out, buf, last);
    size_t n = last;
    int have = 0;
    for (size_t i = 2; i + 1 < last; i++) have += buf[i] == 0xFF && buf[i + 1] == 0xDA;
    for (int k = have; k < nscans; k++, n += scan) memcpy(out + n, buf + last, scan);
    out[n++] = 0xFF, out[n++] = 0xD9;
    free(buf);
    *len = n;
    return out;
}

static int always(void *arg) {
    (*(int *)arg)++;
    return 1;
}

/* Too many scans is refused, whatever the scans hold; a cancel stops the
 * decode; a progressive file costs its coefficients. */
static void jpeg_scans_and_cancel(void **state) {
    (void)state;
    size_t len;
    img_rgb out;
    img_reject rej;
    uint8_t *ok = progressive_jpeg(96, 64, 0, &len);
    assert_int_equal(img_decode(ok, len, NULL, &out, &rej), URSA_OK);
    assert_int_equal(out.w, 96);
    img_free(&out);
    img_decode_opts o = img_decode_opts_default();
    int asked = 0;
    o.cancel = always;
    o.cancel_arg = &asked;
    assert_int_equal(img_decode(ok, len, &o, &out, &rej), URSA_ERR_SHUTDOWN);
    assert_true(asked > 0);
    assert_null(out.px);
    free(ok);
    uint8_t *many = progressive_jpeg(96, 64, 1000, &len);
    assert_int_equal(img_decode(many, len, NULL, &out, &rej), URSA_ERR_INVALID);
    assert_string_equal(rej.reason, "corrupt");
    assert_non_null(strstr(rej.detail, "more than 64 scans"));
    o = img_decode_opts_default();
    o.max_scans = 2000; /* allowed: decoded (libjpeg only warns of the bogus progression) */
    ursa_err e = img_decode(many, len, &o, &out, &rej);
    assert_true(e == URSA_OK || (e == URSA_ERR_INVALID && !strstr(rej.detail, "scans")));
    img_free(&out);
    free(many);
    /* the cost: a progressive file holds its coefficients, a baseline one
     * a row of blocks; shrinking cuts the pixels */
    uint8_t *prog = progressive_jpeg(2000, 1500, 0, &len);
    img_rgb big = make(2000, 1500, gradient);
    uint8_t *base;
    size_t blen;
    assert_int_equal(img_encode_jpeg(&big, 80, &base, &blen), URSA_OK);
    img_decode_opts full = img_decode_opts_default(), shrunk = full;
    shrunk.shrink_to = 224;
    size_t cb = img_decode_cost(base, blen, &full), cs = img_decode_cost(base, blen, &shrunk),
           cp = img_decode_cost(prog, len, &shrunk);
    assert_true(cb >= (size_t)2000 * 1500 * 3);
    assert_true(cs < cb / 16);
    assert_true(cp > (size_t)2000 * 1500 * 3); /* 3 components, 2 bytes a coefficient */
    assert_int_equal(img_decode(base, blen, &shrunk, &out, &rej), URSA_OK);
    assert_int_equal(out.w, 250); /* 1/8: 250 >= 224 */
    assert_int_equal(out.src_w, 2000);
    img_free(&out);
    /* a stray byte after the first segment (JFIF's APP0): the cost's walk
     * of the markers gives up (the floor), libjpeg skips it and reads the
     * 2000x1500 progressive header; max_cost refuses what it reads */
    assert_true(prog[2] == 0xFF && prog[3] == 0xE0);
    size_t at = 4 + ((size_t)prog[4] << 8 | prog[5]);
    uint8_t *junk = malloc(len + 1);
    memcpy(junk, prog, at);
    junk[at] = 0x00;
    memcpy(junk + at + 1, prog + at, len - at);
    size_t cj = img_decode_cost(junk, len + 1, &shrunk);
    assert_true(cj < (size_t)1 << 20);
    o = shrunk;
    o.max_cost = cj;
    assert_int_equal(img_decode(junk, len + 1, &o, &out, &rej), URSA_ERR_INVALID);
    assert_string_equal(rej.reason, "too_many_pixels");
    o.max_cost = cp; /* what the file really costs: decoded */
    assert_int_equal(img_decode(junk, len + 1, &o, &out, &rej), URSA_OK);
    assert_int_equal(out.src_w, 2000);
    img_free(&out);
    free(junk);
    free(base);
    free(prog);
    img_free(&big);
}

/* WebP decodes straight to RGB, at a power-of-two fraction when asked */
static void webp_scaled(void **state) {
    (void)state;
    img_rgb im = make(1000, 600, gradient), out;
    img_reject rej;
    uint8_t *webp = NULL;
    size_t len = WebPEncodeRGB(im.px, 1000, 600, 3000, 80, &webp);
    assert_true(len > 0);
    img_decode_opts o = img_decode_opts_default();
    assert_int_equal(img_decode(webp, len, &o, &out, &rej), URSA_OK);
    assert_int_equal(out.w, 1000);
    assert_int_equal(out.h, 600);
    assert_true(abs((int)out.px[(300 * 1000 + 500) * 3] - (int)im.px[(300 * 1000 + 500) * 3]) < 12);
    img_free(&out);
    o.shrink_to = 224;
    assert_int_equal(img_decode(webp, len, &o, &out, &rej), URSA_OK);
    assert_int_equal(out.w, 250);
    assert_int_equal(out.h, 150);
    assert_int_equal(out.src_w, 1000);
    img_free(&out);
    assert_true(img_decode_cost(webp, len, &o) < img_decode_cost(webp, len, NULL) / 8);
    WebPFree(webp);
    img_free(&im);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sniffing),
        cmocka_unit_test(jpeg_round_trip_is_close),
        cmocka_unit_test(fit_keeps_colour_and_aspect),
        cmocka_unit_test(exif_orientation_is_applied),
        cmocka_unit_test(rejections),
        cmocka_unit_test(mangled_input_never_crashes),
        cmocka_unit_test(gif_bomb_decodes_the_frame),
        cmocka_unit_test(jpeg_scans_and_cancel),
        cmocka_unit_test(webp_scaled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
