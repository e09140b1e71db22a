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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(backoff_doubles_is_capped_and_jittered),
        cmocka_unit_test(mkdirs_and_atomic_write_and_read),
        cmocka_unit_test(hex_and_free_port),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
