/* Unit tests of rstore.c that need no server: URL parsing, a clear
 * UNAVAILABLE within the retry window when nothing listens, and batches.
 * Behaviour against a real, restarting redis-server is in
 * tests/integration/test_redis_restart.sh. */
#include "test.h"
#include "rstore.h"
#include "util.h"

static void urls(void **state) {
    (void)state;
    char err[256];
    const char *good[] = {"redis://127.0.0.1:6379", "redis://localhost",
                          "redis://h:1/3", "redis://:secret@h:7000/0",
                          "redis://user:pw@h:7000", "redis://h:6379/"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        rstore *r = rstore_new(good[i], 100, err, sizeof err);
        assert_non_null(r);
        rstore_destroy(r);
    }
    const char *bad[] = {"http://h:1", "redis://", "redis://h:0", "redis://h:70000",
                         "redis://h:12x", "redis://h:1/db", "redis://h:1/-1", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_null(rstore_new(bad[i], 100, err, sizeof err));
        assert_non_null(strstr(err, "bad Redis URL"));
    }
}

static void unavailable_after_retry_window(void **state) {
    (void)state;
    char url[64], err[256];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", util_free_port());
    rstore *r = rstore_new(url, 200, err, sizeof err);
    rstore_set_retry_ms(r, 400);
    int64_t t0 = util_mono_ms();
    redisReply *rep = (redisReply *)1;
    assert_int_equal(rstore_cmd(r, &rep, "PING"), URSA_ERR_UNAVAILABLE);
    int64_t took = util_mono_ms() - t0;
    assert_null(rep);
    assert_true(took >= 300 && took < 3000);
    assert_true(strlen(rstore_last_error(r)) > 0);
    rstore_batch *b = rstore_batch_new();
    assert_int_equal(rstore_batch_add(b, "SET %s %s", "k", "v"), URSA_OK);
    assert_int_equal(rstore_batch_add(b, "INCR %s", "n"), URSA_OK);
    assert_int_equal(rstore_batch_len(b), 2);
    assert_int_equal(rstore_batch_exec(r, b, NULL), URSA_ERR_UNAVAILABLE);
    assert_int_equal(rstore_batch_len(b), 2); /* intact, can be sent again */
    rstore_batch_destroy(b);
    rstore_destroy(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(urls),
        cmocka_unit_test(unavailable_after_retry_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
