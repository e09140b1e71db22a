/* Unit tests of heartbeats.c that need no server: which instance ids are
 * taken, and Redis being down is an error the caller sees (a beat is best
 * effort, a listing must not pass for "no instances"). Beats, listings,
 * expiry into "stale" and removal against a real redis-server are in
 * tests/integration/test_instances.sh. */
#include "test.h"
#include "heartbeats.h"
#include "util.h"

static void instance_ids(void **state) {
    (void)state;
    const char *good[] = {"myhost:1234", "crawler-a", "a", "web_01.example.com:1", "x@y", NULL};
    for (int i = 0; good[i]; i++) assert_true(hb_instance_valid(good[i]));
    char longest[HB_INSTANCE_MAX + 2];
    memset(longest, 'a', HB_INSTANCE_MAX);
    longest[HB_INSTANCE_MAX] = '\0';
    assert_true(hb_instance_valid(longest));
    longest[HB_INSTANCE_MAX] = 'a';
    longest[HB_INSTANCE_MAX + 1] = '\0';
    assert_false(hb_instance_valid(longest));
    const char *bad[] = {"", "two words", "a/b", "tab\there", "brace{", "é", NULL};
    for (int i = 0; bad[i]; i++) assert_false(hb_instance_valid(bad[i]));
}

static void redis_down_is_an_error(void **state) {
    (void)state;
    char url[64], err[256];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", util_free_port());
    rstore *r = rstore_new(url, 100, err, sizeof err);
    rstore_set_retry_ms(r, 200);
    hb_identity id = {"crawler", "h:1", "h", 1, 0, "test", 0};
    const char *kv[] = {"downloaded", "3", NULL};
    assert_int_equal(hb_beat(r, &id, NULL, kv), URSA_ERR_UNAVAILABLE);
    hb_instance *in = (hb_instance *)1;
    size_t n = 7;
    assert_int_equal(hb_list(r, util_now_ms(), &in, &n), URSA_ERR_UNAVAILABLE);
    assert_null(in);
    assert_int_equal(n, 0);
    rstore_destroy(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(instance_ids),
                                       cmocka_unit_test(redis_down_is_an_error)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
