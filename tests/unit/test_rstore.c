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
                          "redis://user:pw@h:7000", "redis://h:6379/",
                          "redis://a:7001,b:7002,c", "redis://:pw@a:1,b:2/0",
                          "redis://:p%40ss%3Aw@h:1", "redis://ml%20user:pw@h:1"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        rstore *r = rstore_new(good[i], 100, err, sizeof err);
        assert_non_null(r);
        rstore_destroy(r);
    }
    const char *bad[] = {"http://h:1", "redis://", "redis://h:0", "redis://h:70000",
                         "redis://h:12x", "redis://h:1/db", "redis://h:1/-1", "",
                         "redis://a:1,", "redis://a:1,,b:2", "redis://a:1,b:0",
                         "redis://:s3cret%@h:1", "redis://:s3cret%4@h:1", "redis://:s3cret%zz@h:1",
                         "redis://:s3cret%00@h:1", "redis://:s3cret@h:1/x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_null(rstore_new(bad[i], 100, err, sizeof err));
        assert_non_null(strstr(err, "bad Redis URL"));
        assert_null(strstr(err, "s3cret")); /* a password is never in an error */
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

/* Slots as Redis Cluster computes them (CLUSTER KEYSLOT on redis 7.0). */
static void key_slots(void **state) {
    (void)state;
    assert_int_equal(rstore_key_slot("foo", 3), 12182);
    assert_int_equal(rstore_key_slot("123456789", 9), 0x31C3); /* the spec's CRC16 check */
    /* a {tag} hashes alone, so a dataset tag's keys share a slot */
    assert_int_equal(rstore_key_slot("ursa:ds:{bench:ab}:u:ab12", 25), 2716);
    assert_int_equal(rstore_key_slot("{bench:ab}", 10), 2716);
    assert_int_equal(rstore_key_slot("ursa:ds:{bench:ab}:c", 20), 2716);
    /* an empty {} is no tag: the whole key hashes */
    assert_int_equal(rstore_key_slot("a{}b", 4), 13694);
    /* only the first {tag} counts */
    assert_int_equal(rstore_key_slot("{x}{y}", 6), 16287);
    assert_int_equal(rstore_key_slot("x", 1), 16287);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(urls),
        cmocka_unit_test(unavailable_after_retry_window),
        cmocka_unit_test(key_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
