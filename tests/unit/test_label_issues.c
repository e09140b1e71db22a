/* Confident learning on small cases with a known answer: planted label
 * errors are found with the right suggestion, per-class thresholds keep a
 * hard class's correct images and catch what argmax alone would miss, an
 * image confident in no class is an outlier, and the ranking puts the
 * worst first. */
#include "test.h"
#include "label_issues.h"

#include <stdlib.h>

/* 10 images per class of 3, 0.8 on the true class, then flips and one
 * uniform image. */
static void planted_flips(void **state) {
    (void)state;
    enum { N = 31, K = 3 };
    float p[N * K];
    int label[N];
    for (int i = 0; i < 30; i++) {
        int t = i / 10;
        for (int j = 0; j < K; j++) p[i * K + j] = j == t ? 0.8f : 0.1f;
        label[i] = t;
    }
    label[2] = 1;  /* a class-0 image labelled 1 */
    label[15] = 2; /* a class-1 image labelled 2 */
    label[25] = 0; /* a class-2 image labelled 0 */
    for (int j = 0; j < K; j++) p[30 * K + j] = 1.0f / 3; /* confident in nothing */
    label[30] = 0;
    li_result r[N];
    long *joint = NULL;
    assert_int_equal(li_find(p, label, N, K, r, &joint), 3);
    for (int i = 0; i < N; i++) {
        li_kind want = i == 2 || i == 15 || i == 25 ? LI_LABEL : i == 30 ? LI_OUTLIER : LI_NONE;
        assert_int_equal(r[i].kind, want);
        assert_int_equal(r[i].given, label[i]);
    }
    assert_int_equal(r[2].suggested, 0);
    assert_int_equal(r[15].suggested, 1);
    assert_int_equal(r[25].suggested, 2);
    assert_int_equal(r[0].suggested, 0);
    /* the confident joint: 9 on each diagonal cell, the flips off it, the
     * outlier nowhere */
    long want[K][K] = {{9, 0, 1}, {1, 9, 0}, {0, 1, 9}};
    for (int i = 0; i < K; i++)
        for (int j = 0; j < K; j++) assert_int_equal(joint[i * K + j], want[i][j]);
    free(joint);
    /* quality: the normalised margin, (0.1 - 0.8 + 1) / 2 for a flip */
    assert_true(r[2].quality > 0.149 && r[2].quality < 0.151);
    assert_true(r[0].quality > 0.849 && r[0].quality < 0.851);
    size_t idx[N];
    for (size_t i = 0; i < N; i++) idx[i] = i;
    li_rank(r, idx, N);
    for (int i = 0; i < 3; i++) assert_int_equal(r[idx[i]].kind, LI_LABEL);
    assert_int_equal(idx[3], 30);
    assert_int_equal(r[idx[4]].kind, LI_NONE);
}

/* Per-class thresholds, not argmax: a hard class (its right images at
 * 0.55) keeps them; an image labelled with the easy class but leaning to
 * the hard one past its threshold is flagged; an image labelled with the
 * hard class that argmax would call easy (0.52) is not, since 0.52 is far
 * below what the easy class's own images get. */
static void per_class_thresholds(void **state) {
    (void)state;
    enum { K = 2, N = 22 };
    float p[N * K];
    int label[N];
    for (int i = 0; i < 10; i++) { /* easy class 0 */
        p[i * K] = 0.9f;
        p[i * K + 1] = 0.1f;
        label[i] = 0;
    }
    for (int i = 10; i < 20; i++) { /* hard class 1: right, but unsure */
        p[i * K] = 0.45f;
        p[i * K + 1] = 0.55f;
        label[i] = 1;
    }
    p[20 * K] = 0.4f; /* labelled 0, as sure of 1 as class 1's own images */
    p[20 * K + 1] = 0.6f;
    label[20] = 0;
    p[21 * K] = 0.52f; /* labelled 1; argmax says 0, weakly */
    p[21 * K + 1] = 0.48f;
    label[21] = 1;
    li_result r[N];
    assert_int_equal(li_find(p, label, N, K, r, NULL), 1);
    assert_int_equal(r[20].kind, LI_LABEL);
    assert_int_equal(r[20].suggested, 1);
    assert_int_equal(r[21].kind, LI_OUTLIER);
    assert_int_equal(r[21].suggested, 1);
    for (int i = 10; i < 20; i++) assert_int_equal(r[i].kind, LI_NONE);
}

static void bad_arguments(void **state) {
    (void)state;
    float p[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    int label[2] = {0, 7}; /* 7: out of range, left alone */
    li_result r[2];
    assert_int_equal(li_find(p, label, 2, 1, r, NULL), -1);
    assert_int_equal(li_find(NULL, label, 2, 2, r, NULL), -1);
    assert_int_equal(li_find(p, label, 2, 2, r, NULL), 0);
    assert_int_equal(r[1].kind, LI_NONE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(planted_flips),
        cmocka_unit_test(per_class_thresholds),
        cmocka_unit_test(bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
