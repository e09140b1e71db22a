/* Unit tests of util.c: backoff bounds, directories, atomic files. */
#include <sys/stat.h>

#include "test.h"
#include "util.h"

static void backoff_doubles_is_capped_and_jittered(void **state) {
    (void)state;
    for (int i = 0; i < 200; i++) {
        int64_t a1 = util_backoff_ms(1, 100, 5000);
        int64_t a3 = util_backoff_ms(3, 100, 5000);
        int64_t a20 = util_backoff_ms(20, 100, 5000);
        assert_true(a1 >= 75 && a1 <= 125);
        assert_true(a3 >= 300 && a3 <= 500);
        assert_true(a20 >= 3750 && a20 <= 6250);
    }
    assert_true(util_backoff_ms(0, 1, 1) >= 1);
}

static void mkdirs_and_atomic_write_and_read(void **state) {
    (void)state;
    char *dir = test_mkdtemp();
    char p[4200];
    snprintf(p, sizeof p, "%s/a/b/c", dir);
    assert_int_equal(util_mkdirs(p), URSA_OK);
    assert_int_equal(util_mkdirs(p), URSA_OK); /* exists: fine */
    snprintf(p, sizeof p, "%s/a/b/c/f.txt", dir);
    assert_int_equal(util_write_file_atomic(p, "one", 3), URSA_OK);
    assert_int_equal(util_write_file_atomic(p, "second", 6), URSA_OK);
    char *data;
    size_t len;
    assert_int_equal(util_read_file(p, 100, &data, &len), URSA_OK);
    assert_int_equal(len, 6);
    assert_string_equal(data, "second");
    free(data);
    assert_int_equal(util_read_file(p, 5, &data, &len), URSA_ERR_TOO_LARGE);
    snprintf(p, sizeof p, "%s/nope", dir);
    assert_int_equal(util_read_file(p, 5, &data, &len), URSA_ERR_NOT_FOUND);
    /* a file where a directory should be */
    snprintf(p, sizeof p, "%s/a/b/c/f.txt/sub", dir);
    assert_int_equal(util_mkdirs(p), URSA_ERR_IO);
    test_rmdir(dir);
}

static void hex_and_free_port(void **state) {
    (void)state;
    const uint8_t b[] = {0x00, 0x0f, 0xa5, 0xff};
    char out[9];
    util_hex(b, 4, out);
    assert_string_equal(out, "000fa5ff");
    int port = util_free_port();
    assert_true(port > 0 && port < 65536);
    assert_true(util_mono_ms() > 0 && util_now_ms() > 1700000000000LL);
}

/* text from outside: UTF-8 checked strictly, shown without a terminal's
 * escapes, cells of CSV and TSV files without spreadsheet formulas */
static void hostile_text(void **state) {
    (void)state;
    assert_int_equal(util_utf8_len("a"), 1);
    assert_int_equal(util_utf8_len("\xc3\xa9"), 2);            /* é */
    assert_int_equal(util_utf8_len("\xe2\x82\xac"), 3);        /* € */
    assert_int_equal(util_utf8_len("\xf0\x9f\x90\xbb"), 4);    /* the bear */
    assert_int_equal(util_utf8_len("\xc0\xaf"), 0);            /* overlong '/' */
    assert_int_equal(util_utf8_len("\xe0\x80\xaf"), 0);        /* overlong, 3 bytes */
    assert_int_equal(util_utf8_len("\xed\xa0\x80"), 0);        /* a surrogate */
    assert_int_equal(util_utf8_len("\xf4\x90\x80\x80"), 0);    /* past U+10FFFF */
    assert_int_equal(util_utf8_len("\xe2\x82"), 0);            /* cut short */
    assert_int_equal(util_utf8_len("\xff"), 0);
    assert_true(util_text_clean("grizzly b\xc3\xa4r \xf0\x9f\x90\xbb"));
    assert_false(util_text_clean("a\x1b[2Jb"));               /* ESC */
    assert_false(util_text_clean("a\xc2\x9b" "2Jb"));          /* C1 CSI */
    assert_false(util_text_clean("a\x7f"));
    assert_false(util_text_clean("caf\xe9"));                 /* Latin-1 */
    char b[64];
    assert_string_equal(util_shown("ok \x1b[31mred\xff", b, sizeof b), "ok \\x1b[31mred\\xff");
    assert_string_equal(util_shown("\xc2\x9b" "x", b, sizeof b), "\\xc2\\x9bx");
    assert_string_equal(util_shown("abcdef", b, 4), "abc");  /* cut at the buffer */
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    util_cell(f, "=HYPERLINK(\"x\")", ',');
    fputc('|', f);
    util_cell(f, "-", ',');
    fputc('|', f);
    util_cell(f, "@SUM(1)", '\t');
    fputc('|', f);
    util_cell(f, "a\tb\x1b", '\t');
    fputc('|', f);
    util_cell(f, "plain, \"quoted\"", ',');
    fputc('|', f);
    util_json_str(f, "bad \xff\xc0 \xc3\xa9");
    fclose(f);
    assert_string_equal(out, "\"'=HYPERLINK(\"\"x\"\")\"|-|'@SUM(1)|a\\x09b\\x1b|"
                             "\"plain, \"\"quoted\"\"\"|\"bad \\ufffd\\ufffd \xc3\xa9\"");
    free(out);
    char u[] = "'=cmd", v[] = "'-", w[] = "'plain";
    util_cell_unescape(u), util_cell_unescape(v), util_cell_unescape(w);
    assert_string_equal(u, "=cmd");
    assert_string_equal(v, "'-");
    assert_string_equal(w, "'plain");
}

static void url_redact(void **state) {
    (void)state;
    char out[256];
    static const char *const cases[][2] = {
        {"redis://127.0.0.1:6379", "redis://127.0.0.1:6379"},
        {"redis://:s3cret@h:1/0", "redis://:***@h:1/0"},
        {"redis://alice:s3cret@h:1,b:2", "redis://alice:***@h:1,b:2"},
        {"redis://s3cret@h:1", "redis://:***@h:1"},
        {"http://h/a@b", "http://h/a@b"}, /* an @ in the path is no user info */
        {"no scheme:s3cret@h", "no scheme:s3cret@h"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(util_url_redact(cases[i][0], out, sizeof out), cases[i][1]);
}

/* RFC 4180 fields: quoted commas and quotes, and what the RFC refuses */
static void csv_fields(void **state) {
    (void)state;
    const char *p = "\"http://example.invalid/2.jpg\",teddy,\"a,b\",\"say \"\"hi\"\"\",\r\n";
    char f[64];
    assert_int_equal(util_csv_field(&p, f, sizeof f), 0);
    assert_string_equal(f, "http://example.invalid/2.jpg");
    assert_int_equal(util_csv_field(&p, f, sizeof f), 0);
    assert_string_equal(f, "teddy");
    assert_int_equal(util_csv_field(&p, f, sizeof f), 0);
    assert_string_equal(f, "a,b");
    assert_int_equal(util_csv_field(&p, f, sizeof f), 0);
    assert_string_equal(f, "say \"hi\"");
    assert_int_equal(util_csv_field(&p, f, sizeof f), 1); /* the empty last field */
    assert_string_equal(f, "");
    const char *open = "\"never closed,x";
    assert_int_equal(util_csv_field(&open, f, sizeof f), -1);
    const char *after = "\"a\"b,c";
    assert_int_equal(util_csv_field(&after, f, sizeof f), -1);
    const char *inner = "a\"b,c";
    assert_int_equal(util_csv_field(&inner, f, sizeof f), -1);
    /* what util_cell writes, util_csv_field reads back */
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    util_cell(m, "w_200,h_100 \"x\"", ',');
    fclose(m);
    const char *q = buf;
    assert_int_equal(util_csv_field(&q, f, sizeof f), 1);
    assert_string_equal(f, "w_200,h_100 \"x\"");
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(backoff_doubles_is_capped_and_jittered),
        cmocka_unit_test(mkdirs_and_atomic_write_and_read),
        cmocka_unit_test(hex_and_free_port),
        cmocka_unit_test(hostile_text),
        cmocka_unit_test(url_redact),
        cmocka_unit_test(csv_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
