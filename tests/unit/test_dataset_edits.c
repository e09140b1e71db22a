/* Unit tests of dataset_edits.c's pure parts: the rule that calls an
 * audit's suggestions unreliable, an edit's base (the decision it was made
 * on) and the records of refused edits. */
#include <math.h>
#include <string.h>

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

static void base_names_round_trip(void **state) {
    (void)state;
    ed_op op = ED_RESTORE;
    for (ed_op b = ED_NONE; b <= ED_RELABEL; b++) {
        assert_int_equal(ed_base_parse(ed_base_name(b), &op), 0);
        assert_int_equal(op, b);
    }
    assert_string_equal(ed_base_name(ED_NONE), "none");
    assert_int_equal(ed_base_parse("", &op), -1); /* a sender that did not say */
    assert_int_equal(ed_base_parse("restore", &op), -1);
    assert_int_equal(ed_base_parse(NULL, &op), -1);
}

static ds_edit an_edit(ed_op op, ed_op base) {
    ds_edit e;
    memset(&e, 0, sizeof e);
    strcpy(e.image, "0123456789abcdef0123456789abcdef");
    strcpy(e.msg_id, "fedcba9876543210fedcba9876543210");
    strcpy(e.from, "cat");
    e.op = op;
    if (op == ED_RELABEL) strcpy(e.to, "dog");
    e.base_op = base;
    if (base == ED_RELABEL) strcpy(e.base_to, "bird");
    return e;
}

static void problems_of_the_base(void **state) {
    (void)state;
    ds_edit e = an_edit(ED_RELABEL, ED_NONE);
    assert_null(ds_edit_problem("fm", &e));
    e = an_edit(ED_RELABEL, ED_RELABEL);
    assert_null(ds_edit_problem("fm", &e));
    e.base_to[0] = '\0'; /* relabelled to what? */
    assert_non_null(ds_edit_problem("fm", &e));
    e = an_edit(ED_RESTORE, ED_NONE); /* nothing to undo */
    assert_non_null(ds_edit_problem("fm", &e));
    e = an_edit(ED_RESTORE, ED_DELETE);
    assert_null(ds_edit_problem("fm", &e));
    e = an_edit(ED_DELETE, ED_DELETE); /* deleted already */
    assert_non_null(ds_edit_problem("fm", &e));
    e = an_edit(ED_DELETE, ED_RESTORE); /* not a decision that stays in force */
    assert_non_null(ds_edit_problem("fm", &e));
}

static void refusal_records(void **state) {
    (void)state;
    ds_edit_refusal f;
    char buf[400];
    assert_int_equal(ds_edit_refusal_parse("conflict\tdelete\t\t12", &f), 0);
    assert_true(f.conflict);
    assert_int_equal(f.now_op, ED_DELETE);
    assert_int_equal(f.now_seq, 12);
    ds_edit e = an_edit(ED_RELABEL, ED_NONE);
    assert_string_equal(ds_edit_refusal_text(&e, &f, buf, sizeof buf),
                        "conflict: decided on the image as given (\"cat\"), now it is deleted "
                        "(edit #12)");
    assert_int_equal(ds_edit_refusal_parse("conflict\trelabel\tfish\t3", &f), 0);
    e = an_edit(ED_DELETE, ED_RELABEL);
    assert_string_equal(ds_edit_refusal_text(&e, &f, buf, sizeof buf),
                        "conflict: decided on the image relabelled to \"bird\", now it is "
                        "relabelled to \"fish\" (edit #3)");
    /* a restore since: no decision in force, no edit to name */
    assert_int_equal(ds_edit_refusal_parse("conflict\tnone\t\t0", &f), 0);
    assert_string_equal(ds_edit_refusal_text(&e, &f, buf, sizeof buf),
                        "conflict: decided on the image relabelled to \"bird\", now it is as "
                        "given (\"cat\")");
    assert_int_equal(ds_edit_refusal_parse("refused\tno such image", &f), 0);
    assert_false(f.conflict);
    assert_string_equal(ds_edit_refusal_text(&e, &f, buf, sizeof buf), "refused: no such image");
    assert_int_equal(ds_edit_refusal_parse("", &f), -1);
    assert_int_equal(ds_edit_refusal_parse("conflict\tdelete", &f), -1);
    assert_int_equal(ds_edit_refusal_parse(NULL, &f), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(unreliable_above_a_quarter),
                                       cmocka_unit_test(base_names_round_trip),
                                       cmocka_unit_test(problems_of_the_base),
                                       cmocka_unit_test(refusal_records)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
