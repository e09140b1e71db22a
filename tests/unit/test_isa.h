/* test_isa.h: the engine's tests run once for each instruction-set level
 * the CPU has (kern.h: avx512, avx2, generic), the level in the group's
 * name, so each table is held to the same expectations. */
#ifndef URSA_TEST_ISA_H
#define URSA_TEST_ISA_H

#include "kern.h"
#include "test.h"

/* URSA_TEST_SKIP=a,b,c: leave out the cases of those names (an emulated
 * arm64 run: qemu-user cannot start threads here, and the loader needs one) */
static inline int test_skipped(const char *name) {
    const char *skip = getenv("URSA_TEST_SKIP");
    size_t l = strlen(name);
    for (const char *p = skip; p && *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == l && !strncmp(p, name, n)) return 1;
        p = e ? e + 1 : p + n;
    }
    return 0;
}

static inline int test_each_isa(const char *what, const struct CMUnitTest *all, size_t nall) {
    int failed = 0;
    struct CMUnitTest tests[64];
    size_t n = 0;
    for (size_t i = 0; i < nall && n < 64; i++)
        if (!test_skipped(all[i].name)) tests[n++] = all[i];
    /* URSA_TEST_ISA=generic (say): that level only (an emulated arm64 run) */
    const char *only = getenv("URSA_TEST_ISA");
    for (int lv = nn_isa_best(); lv >= 0; lv--) {
        if (!nn_kern_of((nn_isa)lv) || (only && strcmp(only, nn_isa_name((nn_isa)lv)))) continue;
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
