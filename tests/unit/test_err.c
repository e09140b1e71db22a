/* Unit tests of err.c: every error has its own name; retriable classes. */
#include "test.h"
#include "err.h"

static void every_error_has_a_distinct_name(void **state) {
    (void)state;
    for (int i = 0; i < URSA_ERR__COUNT; i++) {
        const char *a = ursa_err2str((ursa_err)i);
        assert_non_null(a);
        assert_string_not_equal(a, "unknown error");
        for (int j = 0; j < i; j++) assert_string_not_equal(a, ursa_err2str((ursa_err)j));
    }
    assert_string_equal(ursa_err2str(URSA_ERR__COUNT), "unknown error");
    assert_string_equal(ursa_err2str((ursa_err)-1), "unknown error");
}

static void only_transient_classes_are_retriable(void **state) {
    (void)state;
    assert_true(ursa_err_retriable(URSA_ERR_UNAVAILABLE));
    assert_true(ursa_err_retriable(URSA_ERR_TRANSIENT));
    assert_true(ursa_err_retriable(URSA_ERR_TIMEOUT));
    assert_false(ursa_err_retriable(URSA_OK));
    assert_false(ursa_err_retriable(URSA_ERR_INVALID));
    assert_false(ursa_err_retriable(URSA_ERR_PERMANENT));
    assert_false(ursa_err_retriable(URSA_ERR_CORRUPT));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_error_has_a_distinct_name),
        cmocka_unit_test(only_transient_classes_are_retriable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
