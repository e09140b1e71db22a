/* Unit tests of common/nn/blas.c: the kernel OpenBLAS runs (chosen by
 * nn_blas_init, re-executing this test if needed) multiplies like the naive
 * reference on awkward shapes, and the naive one is right on a known case. */
#include "test.h"
#include "blas.h"

static void naive_known_product(void **state) {
    (void)state;
    const float a[] = {1, 2, 3, 4, 5, 6};       /* 2 x 3 */
    const float b[] = {7, 8, 9, 10, 11, 12};    /* 3 x 2 */
    float c[4];
    nn_gemm_naive(2, 2, 3, a, b, c);
    assert_true(c[0] == 58 && c[1] == 64 && c[2] == 139 && c[3] == 154);
}

static void sgemm_matches_naive(void **state) {
    (void)state;
    const int shapes[][3] = {{1, 1, 1}, {7, 13, 5}, {64, 64, 64}, {97, 61, 129}, {256, 48, 300}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        double e = nn_blas_check(shapes[i][0], shapes[i][1], shapes[i][2]);
        if (!(e < 1e-4)) fail_msg("sgemm %dx%dx%d differs from naive by %g on core %s",
                                  shapes[i][0], shapes[i][1], shapes[i][2], e, nn_blas_core());
    }
    assert_non_null(nn_blas_core());
}

/* With URSA_BLAS_TEST_GENERIC the kernel counts as misdetected: the test
 * must be running again, re-executed with the fast kernel. */
static void reexec_picks_fast_kernel(void **state) {
    (void)state;
    assert_non_null(getenv("URSA_BLAS_REEXEC"));
    const char *want = getenv("OPENBLAS_CORETYPE");
    assert_non_null(want);
    assert_true(!strcmp(want, "SkylakeX") || !strcmp(want, "Haswell"));
    assert_string_equal(nn_blas_core(), want);
}

int main(int argc, char **argv) {
    (void)argc;
    nn_blas_init(argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(naive_known_product),
        cmocka_unit_test(sgemm_matches_naive),
    };
    const struct CMUnitTest reexec[] = {
        cmocka_unit_test(reexec_picks_fast_kernel),
        cmocka_unit_test(sgemm_matches_naive),
    };
    /* ctest runs this twice: as is, and as unit.blas_reexec */
    if (getenv("URSA_BLAS_TEST_GENERIC")) return cmocka_run_group_tests(reexec, NULL, NULL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
