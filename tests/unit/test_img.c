/* Unit tests of common/img: sniffing, the JPEG round trip, resizing, EXIF
 * orientation, every rejection reason, and robustness against mangled
 * input (run under ASan in CI). The fault files made by ImageMagick are
 * checked by tests/integration/test_verify_cli.sh. */
#include "test.h"
#include "image.h"

static img_rgb make(int w, int h, uint8_t (*f)(int x, int y, int c)) {
    img_rgb im = {w, h, malloc((size_t)w * h * 3)};
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
    assert_int_equal(img_decode(jpeg, len, 1000000, 0, &back, &rej), URSA_OK);
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
    img_rgb cb = {8, 8, malloc(8 * 8 * 3)};
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
    assert_int_equal(img_decode(rot, rlen, 1000000, 0, &out, &rej), URSA_OK);
    assert_int_equal(out.w, 20);
    assert_int_equal(out.h, 40);
    assert_true(out.px[(5 * 20 + 10) * 3] < 40);  /* top: the black half */
    assert_true(out.px[(35 * 20 + 10) * 3] > 215); /* bottom: the white half */
    img_free(&out);
    free(rot);
    rot = with_orientation(jpeg, len, 3, &rlen); /* upside down */
    assert_int_equal(img_decode(rot, rlen, 1000000, 0, &out, &rej), URSA_OK);
    assert_int_equal(out.w, 40);
    assert_true(out.px[(10 * 40 + 5) * 3] > 215); /* left is now white */
    img_free(&out);
    /* an IFD offset of 0xFFFFFFFF (found by the fuzzer: it wrapped the
     * bounds check) is ignored: the image decodes as stored */
    memset(rot + 2 + 14, 0xFF, 4);
    assert_int_equal(img_decode(rot, rlen, 1000000, 0, &out, &rej), URSA_OK);
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
        assert_int_equal(img_decode(bj, bl * 3 / 4, 1000000, 0, &out, &rej), URSA_ERR_INVALID);
        assert_string_equal(rej.reason, "truncated");
        free(bj);
        img_free(&big);
    }
    assert_int_equal(img_decode(jpeg, len, 64 * 48 - 1, 0, &out, &rej), URSA_ERR_INVALID);
    assert_string_equal(rej.reason, "too_many_pixels");
    assert_null(out.px);
    const char *html = "  <!doctype html><p>hi";
    assert_int_equal(img_decode((const uint8_t *)html, strlen(html), 1000, 0, &out, &rej),
                     URSA_ERR_INVALID);
    assert_string_equal(rej.reason, "not_an_image");
    assert_int_equal(img_decode((const uint8_t *)"", 0, 1000, 0, &out, &rej), URSA_ERR_INVALID);
    assert_string_equal(rej.reason, "empty");
    const uint8_t bin[] = {0x00, 0x01, 0x02, 0xfe, 0x80};
    assert_int_equal(img_decode(bin, sizeof bin, 1000, 0, &out, &rej), URSA_ERR_INVALID);
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
        ursa_err err = img_decode(buf, n, 1 << 20, 0, &out, &rej);
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sniffing),
        cmocka_unit_test(jpeg_round_trip_is_close),
        cmocka_unit_test(fit_keeps_colour_and_aspect),
        cmocka_unit_test(exif_orientation_is_applied),
        cmocka_unit_test(rejections),
        cmocka_unit_test(mangled_input_never_crashes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
