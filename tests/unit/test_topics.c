/* Unit tests of topics.c: names are unique; every consuming group has its
 * dead-letter topic in the table, so the broker creates it. */
#include "test.h"
#include "kq.h"
#include "topics.h"

static void table_is_consistent(void **state) {
    (void)state;
    size_t n = topics_count();
    assert_true(n >= 10);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(strncmp(topics_all[i].name, "ursa.", 5), 0);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(topics_all[i].name, topics_all[j].name);
        if (!topics_all[i].group) continue;
        char dlq[128];
        kq_dlq_name(topics_all[i].group, dlq, sizeof dlq);
        int found = 0;
        for (size_t k = 0; k < n; k++) found |= strcmp(topics_all[k].name, dlq) == 0;
        assert_true(found);
    }
    char dlq[64];
    kq_dlq_name("ursa-crawler", dlq, sizeof dlq);
    assert_string_equal(dlq, "ursa.dlq.crawler");
    kq_dlq_name("custom", dlq, sizeof dlq);
    assert_string_equal(dlq, "ursa.dlq.custom");
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(table_is_consistent)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
