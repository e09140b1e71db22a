/* test_isa.h: the engine's tests run once for each instruction-set level
 * the CPU has (kern.h: avx512, avx2, generic), the level in the group's
 * name, so each table is held to the same expectations. */
#ifndef URSA_TEST_ISA_H
#define URSA_TEST_ISA_H

#include "kern.h"
#include "test.h"

static inline int test_each_isa(const char *what, const struct CMUnitTest *tests, size_t n) {
    int failed = 0;
    for (int lv = nn_isa_best(); lv >= 0; lv--) {
        if (!nn_kern_of((nn_isa)lv)) continue;
        if (nn_isa_set((nn_isa)lv) != URSA_OK) return 1;
        char name[96];
        snprintf(name, sizeof name, "%s isa=%s", what, nn_isa_name((nn_isa)lv));
        printf("== %s\n", name);
        fflush(stdout);
        failed += _cmocka_run_group_tests(name, tests, n, NULL, NULL);
    }
    return failed;
}

#endif
