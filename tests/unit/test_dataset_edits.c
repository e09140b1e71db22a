/* Unit tests of dataset_edits.c's pure parts: the rule that calls an
 * audit's suggestions unreliable. */
#include <math.h>

#include "test.h"
#include "dataset_edits.h"

static void unreliable_above_a_quarter(void **state) {
    (void)state;
    for (int c = 2; c <= 100; c++) {
        assert_false(ds_audit_unreliable(0.0, c));
        assert_false(ds_audit_unreliable(0.18, c)); /* the demo's 2-fold models */
        assert_false(ds_audit_unreliable(0.25, c));
        assert_true(ds_audit_unreliable(0.2501, c));
        assert_true(ds_audit_unreliable(1 - 1.0 / c, c)); /* chance */
    }
    assert_true(ds_audit_unreliable(0.0, 1)); /* nothing to judge */
    assert_true(ds_audit_unreliable(NAN, 10));
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(unreliable_above_a_quarter)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
